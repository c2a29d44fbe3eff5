// `vigil check`: one sweep of every applicable policy against a live VM, a RAM file or a dump.
// Exit status: 0 clean, 1 alerts, 2 error (Livewire's policy engine, run once).
import type { Command } from 'commander';
import { Engine } from '../../policy/engine.js';
import { FileBaselineStore, MemoryBaselineStore } from '../../policy/baseline.js';
import { ALL_POLICIES, policyById, type LinuxPolicy } from '../../policy/policies/index.js';
import type { Alert } from '../../policy/types.js';
import type { Kernel } from '../../os/linux/kernel.js';
import { kernelIdentity } from '../../os/linux/live-kernel.js';
import { VigilError, isVigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import { print, toJson } from '../output.js';
import { ProgressBar } from '../progress.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';

interface CheckOptions extends TargetOptions {
  policy?: string[];
  json?: boolean;
  baseline?: boolean;
  list?: boolean;
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('check')
      .description('run every applicable policy once; exit 0 clean, 1 alerts, 2 error')
      .option('--policy <id...>', 'run only these policies')
      .option('--no-baseline', 'do not read or write the per-VM baseline file (learn in memory only)')
      .option('--list', 'list the policies and whether they apply to this target')
      .option('--json', 'print alerts as one JSON array'),
  ).action(async (opts: CheckOptions) => {
    const policies = selectPolicies(opts.policy);
    const code = await withTarget(
      opts,
      async (t) => {
        let kernel: Kernel | undefined;
        let kernelUnavailable: string | undefined;
        try {
          kernel = await t.kernel();
        } catch (e) {
          if (!isVigilError(e)) throw e;
          kernelUnavailable = e.toLine();
        }
        const bar = new ProgressBar();
        const engine = new Engine<Kernel>({
          vm: t.machine.name,
          machine: t.machine,
          policies,
          ...(kernel
            ? {
                kernel,
                kernelIdentity: kernelIdentity(kernel),
              }
            : { kernelUnavailable: kernelUnavailable ?? 'no kernel' }),
          baselines: opts.baseline === false ? new MemoryBaselineStore() : new FileBaselineStore(),
          // A sweep budget guards a monitor's polling rhythm; one-shot checks (first sweeps learn
          // baselines and hash kernel text) only need a bound against a pathological guest.
          config: { sweepBudgetMs: 60_000 },
          onPolicyStart: (id, i, total) => bar.update(i / total, `policy ${id} (${i + 1}/${total})`),
        });
        const status = engine.status();
        if (opts.list) {
          for (const s of status) print(`${s.id.padEnd(22)} ${s.state}${s.reason ? ` (${s.reason})` : ''}\n`);
          return 0;
        }
        if (!kernel && status.every((s) => s.state !== 'active')) {
          throw new VigilError('os', 'not-found', `no policy can run: ${kernelUnavailable}`);
        }
        let report;
        try {
          report = await engine.sweep({ force: true });
        } finally {
          bar.done();
        }
        const alerts = report.alerts;
        if (opts.json) print(toJson(alerts));
        else {
          for (const s of status.filter((x) => x.state === 'skipped'))
            process.stderr.write(`vigil: skipped ${s.id}: ${s.reason}\n`);
          for (const r of report.runs)
            for (const c of r.skipped ?? [])
              process.stderr.write(`vigil: skipped ${r.policy}/${c.check}: ${c.reason}\n`);
          print(alerts.length === 0 ? 'no alerts\n' : alerts.map(line).join(''));
        }
        return alerts.some((a) => a.policy !== 'vigil-health' || a.severity !== 'info') ? 1 : 0;
      },
      // Look for the guest agent only when a chosen policy asks it.
      { agent: policies.some((p) => p.requires?.includes('guest-agent')) },
    );
    process.exitCode = code;
  });
}

function selectPolicies(ids: string[] | undefined): LinuxPolicy[] {
  if (!ids || ids.length === 0) return [...ALL_POLICIES];
  return ids.map((id) => {
    const p = policyById(id);
    if (!p) {
      throw new VigilError(
        'cli',
        'usage',
        `no policy "${id}" (have: ${ALL_POLICIES.map((x) => x.id).join(', ') || 'none'})`,
      );
    }
    return p;
  });
}

export function line(a: Alert): string {
  const technique = a.technique ? ` ${a.technique}` : '';
  return `${a.time} ${a.severity.toUpperCase().padEnd(8)} ${a.policy}${technique}: ${sanitize(a.summary)}\n`;
}
