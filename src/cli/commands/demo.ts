// `vigil demo`: the whole idea in one command. Build and boot the reference guest (with the attack
// suite), attach from outside, prove the clean guest raises nothing, then run real attacks inside it one
// by one; for each, say what happened in the guest, show the alert vigil raised and how long detection
// took. Ends with a summary table and shuts the guest down (unless --keep).
import type { Command } from 'commander';
import pc from 'picocolors';
import { attackImage, runAttack } from '../../lab/attacks.js';
import { ensureGuest, stopGuest } from '../../lab/index.js';
import { Kernel } from '../../os/linux/kernel.js';
import { kernelIdentity } from '../../os/linux/live-kernel.js';
import { MemoryBaselineStore } from '../../policy/baseline.js';
import { Engine } from '../../policy/engine.js';
import { ALL_POLICIES } from '../../policy/policies/index.js';
import type { Alert } from '../../policy/types.js';
import { connectQemu, type QemuMachine } from '../../vmm/qemu/machine.js';
import { sanitize } from '../../util/sanitize.js';
import { renderTable } from '../output.js';

interface DemoStep {
  attack: string;
  /** What happens in the guest, for a person. */
  story: string;
  /** Policies any of which should catch it. */
  expect: string[];
}

export const DEMO_STEPS: readonly DemoStep[] = [
  { attack: 'sniffer', story: 'a packet sniffer opens a raw AF_PACKET socket', expect: ['raw-socket'] },
  { attack: 'promisc', story: 'the NIC is put into promiscuous mode', expect: ['nic-access'] },
  {
    attack: 'bindshell',
    story: 'a bind shell listens on TCP 4444 and a client connects',
    expect: ['reverse-shell'],
  },
  { attack: 'fileless', story: 'a program runs from a memfd, never touching disk', expect: ['fileless'] },
  { attack: 'yara-string', story: 'a process holds known-bad strings in memory', expect: ['signature'] },
  {
    attack: 'patch-text',
    story: 'a running program patches its own code in memory',
    expect: ['program-integrity'],
  },
  {
    attack: 'rootkit-dkom',
    story: 'a rootkit unlinks a process from the task list',
    expect: ['lie-detector'],
  },
  {
    attack: 'rootkit-hide',
    story: "a rootkit hooks getdents64 to hide a process from the guest's own ps",
    expect: ['lie-detector-guest'],
  },
  {
    attack: 'rootkit-hidemod',
    story: 'a rootkit module hides itself from the module list',
    expect: ['hidden-module'],
  },
  {
    attack: 'rootkit-syscall',
    story: 'a rootkit rewrites a syscall table entry and an IDT gate',
    expect: ['kernel-hooks', 'memory-access'],
  },
  {
    attack: 'rootkit-inline',
    story: 'a rootkit patches a jump into a kernel function',
    expect: ['kernel-hooks', 'memory-access'],
  },
  {
    attack: 'rootkit-lstar',
    story: 'a rootkit points the system call entry MSR (LSTAR) at its own code',
    expect: ['memory-access'],
  },
  {
    attack: 'rootkit-root',
    story: 'a rootkit gives root to a uid-1000 process',
    expect: ['privilege-escalation'],
  },
];

interface DemoOptions {
  name: string;
  keep?: boolean;
  timeout: string;
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('boot the reference guest, run the attack suite inside it and show what vigil detects')
    .option('--name <guest>', 'lab guest name', 'vigil-demo')
    .option('--keep', 'leave the guest running afterwards')
    .option('--timeout <seconds>', 'give up on a detection after this long', '30')
    .action(async (opts: DemoOptions) => {
      process.exitCode = await demo(opts);
    });
}

const say = (s: string) => process.stdout.write(s + '\n');
const step = (s: string) => say(pc.bold(pc.cyan(`\n▶ ${s}`)));

async function demo(opts: DemoOptions): Promise<number> {
  const timeoutMs = Math.max(1, Number(opts.timeout) || 30) * 1000;
  const t0 = performance.now();
  step('Building and booting the reference guest');
  const progress = (line: string) => say(pc.dim(`  ${line}`));
  const image = await attackImage({ progress });
  const { state: guest } = await ensureGuest({
    name: opts.name,
    ...image,
    progress,
    onDifferent: 'reboot',
  });
  say(
    `  guest ${guest.name}: kernel ${guest.kernelRelease}, ${guest.memory} RAM, ${guest.paging}-level paging`,
  );

  let machine: QemuMachine | undefined;
  const rows: { attack: string; policy: string; detected: boolean; ms?: number; summary: string }[] = [];
  try {
    step("Attaching from outside the guest: nothing of vigil's inside it, no profile, no configuration");
    machine = await connectQemu(guest.qmp, { name: guest.name });
    const kernel = Kernel.bootstrap(machine.memory, { live: true });
    say(`  ${kernel.banner.text}`);
    say(
      `  kallsyms: ${kernel.symbols.size} symbols · BTF: ${kernel.types.count} types · KASLR slide 0x${kernel.kaslr.virtualOffset.toString(16)} · ` +
        `bootstrap ${kernel.timings.totalMs.toFixed(0)} ms`,
    );
    const engine = new Engine<Kernel>({
      vm: guest.name,
      machine,
      policies: [...ALL_POLICIES],
      kernel,
      kernelIdentity: kernelIdentity(kernel),
      baselines: new MemoryBaselineStore(),
      // TCG guests on small machines sweep slower than KVM ones; the demo is not the place to tune budgets.
      // The LSTAR check snapshots device state at most once a minute by default; the demo looks every sweep.
      config: {
        sweepBudgetMs: 15_000,
        policies: { 'memory-access': { options: { syscallMsrIntervalMs: 0 } } },
      },
      beforeSweep: () => kernel.refresh(),
    });
    // Event-driven policies hear QMP events as they happen.
    const eventAlerts: Alert[] = [];
    const unsubscribe = machine.qmp.onEvent((e) => {
      void engine
        .handleEvent({ source: 'qmp', name: e.event, time: e.time, data: e.data })
        .then((a) => eventAlerts.push(...a));
    });

    step('A clean guest: one sweep of every policy');
    const first = await engine.sweep({ force: true });
    const active = engine.status().filter((s) => s.state === 'active').length;
    say(
      `  ${active} policies active, sweep took ${first.durationMs.toFixed(0)} ms, ${first.alerts.length} alerts`,
    );
    for (const a of first.alerts) say(pc.yellow(`  unexpected: ${formatAlert(a)}`));

    for (const s of DEMO_STEPS) {
      step(`Attack: ${s.attack} — ${s.story}`);
      let result;
      try {
        result = await runAttack(guest, s.attack);
      } catch (e) {
        say(pc.red(`  the attack did not run: ${e instanceof Error ? e.message : String(e)}`));
        rows.push({
          attack: s.attack,
          policy: s.expect.join('|'),
          detected: false,
          summary: 'attack failed',
        });
        continue;
      }
      say(pc.dim(`  in the guest: ${sanitize(result.output.trim().split('\n').at(-1) ?? '')}`));
      const started = performance.now();
      let hit: Alert | undefined;
      while (!hit && performance.now() - started < timeoutMs) {
        hit = eventAlerts.find((a) => s.expect.includes(a.policy));
        if (hit) break;
        const sweep = await engine.sweep({ force: true });
        hit =
          sweep.alerts.find((a) => s.expect.includes(a.policy)) ??
          eventAlerts.find((a) => s.expect.includes(a.policy));
      }
      eventAlerts.length = 0;
      const ms = performance.now() - started;
      if (hit) {
        say(pc.green(`  ALERT ${formatAlert(hit)}`));
        say(pc.dim(`  detected in ${ms.toFixed(0)} ms`));
      } else say(pc.red(`  not detected within ${timeoutMs / 1000} s`));
      rows.push({
        attack: s.attack,
        policy: hit?.policy ?? s.expect.join('|'),
        detected: !!hit,
        ...(hit ? { ms } : {}),
        summary: hit ? sanitize(hit.summary, 70) : '-',
      });
    }
    unsubscribe();

    step('Summary');
    process.stdout.write(
      renderTable(rows, [
        { header: 'ATTACK', get: (r) => r.attack },
        { header: 'POLICY', get: (r) => r.policy },
        { header: 'DETECTED', get: (r) => (r.detected ? 'yes' : 'NO') },
        {
          header: 'LATENCY',
          get: (r) => (r.ms !== undefined ? `${r.ms.toFixed(0)} ms` : '-'),
          align: 'right',
        },
        { header: 'ALERT', get: (r) => r.summary, max: 70 },
      ]),
    );
    const caught = rows.filter((r) => r.detected).length;
    say(
      `\n${caught} of ${rows.length} attacks detected from outside the guest, in ${((performance.now() - t0) / 1000).toFixed(0)} s.`,
    );
    return caught === rows.length ? 0 : 1;
  } finally {
    await machine?.close();
    if (!opts.keep) {
      await stopGuest(guest.name);
      say(pc.dim(`guest ${guest.name} stopped`));
    } else say(pc.dim(`guest ${guest.name} left running (vigil lab down --name ${guest.name})`));
  }
}

function formatAlert(a: Alert): string {
  return `[${a.severity}] ${a.policy}${a.technique ? ` ${a.technique}` : ''}: ${sanitize(a.summary)}`;
}
