// Benchmark section `live`: what the live-only views cost the guest and how fast they answer.
//
//   agent     qemu-guest-agent round trips (`ps` through guest-exec, /proc/modules and /proc/net/tcp through
//             guest-file-read) and one run of the lie-detector-guest policy that uses them;
//   snapshot  the device-state snapshot behind the syscall-entry-MSR check: stream size, how long the guest
//             is stopped (QEMU's own STOP→RESUME timestamps) and the whole snapshot;
//   watch     a rootkit writing sys_call_table in place (rootkit-wp) → the GDB-stub watchpoint alert of a
//             running `vigil watch` whose sweeps are a minute apart (so only the watchpoint can be this fast).
//
// Guest: the 256 MiB bench guest with the attack image, rebooted first (rootkit-wp loads once per boot).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attackImage, runAttack } from '../src/lab/attacks.js';
import { ensureGuest, stopGuest, type GuestState } from '../src/lab/index.js';
import { Kernel } from '../src/os/linux/kernel.js';
import { MemoryBaselineStore } from '../src/policy/baseline.js';
import { Engine } from '../src/policy/engine.js';
import { lieDetectorGuestPolicy } from '../src/policy/policies/lie-detector-guest.js';
import { snapshotDeviceState } from '../src/vmm/qemu/cpu-state.js';
import { connectQemu } from '../src/vmm/qemu/machine.js';
import type { BenchContext } from './run.js';

const GUEST = 'vigil-bench-256m';
const RUNS = 7;
const SNAPSHOTS = 5;

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const range = (xs: readonly number[]) =>
  xs.length ? `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}` : 'none';
const log = (s: string) => process.stderr.write(`  … ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function freshAttackGuest(ctx: BenchContext): Promise<GuestState> {
  await ctx.guest(GUEST);
  const image = await attackImage({ progress: log });
  // A fresh boot: the watchpoint run loads rootkit-wp, which loads once per boot.
  await stopGuest(GUEST).catch(() => undefined);
  const { state } = await ensureGuest({ name: GUEST, memory: '256M', ...image, progress: log });
  return state;
}

async function agentAndSnapshot(ctx: BenchContext, g: GuestState): Promise<void> {
  const machine = await connectQemu(g.qmp, { name: g.name });
  try {
    const agent = machine.agent;
    if (!agent) {
      ctx.record('live', 'guest agent', NaN, 'ms', `no agent: ${machine.agentProblem ?? 'none found'}`);
    } else {
      const ps: number[] = [];
      const modules: number[] = [];
      const tcp: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        ps.push(await timed(() => agent.exec('/bin/busybox', ['ps'])));
        modules.push(await timed(() => agent.readFile('/proc/modules')));
        tcp.push(await timed(() => agent.readFile('/proc/net/tcp')));
      }
      ctx.record('live', 'guest agent: ps through guest-exec', median(ps), 'ms', `median of ${RUNS}`);
      ctx.record('live', 'guest agent: read /proc/modules', median(modules), 'ms', `median of ${RUNS}`);
      ctx.record('live', 'guest agent: read /proc/net/tcp', median(tcp), 'ms', `median of ${RUNS}`);

      const kernel = Kernel.bootstrap(machine.memory, { live: true });
      const engine = new Engine<Kernel>({
        vm: machine.name,
        machine,
        policies: [lieDetectorGuestPolicy],
        kernel,
        baselines: new MemoryBaselineStore(),
        config: { sweepBudgetMs: 60_000 },
        beforeSweep: () => kernel.refresh(),
      });
      const runs: number[] = [];
      let alerts = 0;
      for (let i = 0; i < 5; i++) {
        const r = await engine.sweep({ force: true });
        runs.push(r.durationMs);
        alerts += r.alerts.length;
      }
      ctx.record(
        'live',
        'lie-detector-guest run (guest ps, modules, 4 socket tables vs memory)',
        median(runs),
        'ms',
        `median of 5, range ${range(runs)} ms; ${alerts} alerts on the clean guest`,
      );
    }

    const snaps: { bytes: number; pausedMs?: number; totalMs: number }[] = [];
    for (let i = 0; i < SNAPSHOTS; i++) {
      const s = await snapshotDeviceState(machine.qmp);
      snaps.push({
        bytes: s.bytes,
        totalMs: s.totalMs,
        ...(s.pausedMs !== undefined ? { pausedMs: s.pausedMs } : {}),
      });
      await sleep(200);
    }
    const paused = snaps.flatMap((s) => (s.pausedMs !== undefined ? [s.pausedMs] : []));
    ctx.record(
      'live',
      'device-state snapshot: stream size',
      median(snaps.map((s) => s.bytes)),
      'bytes',
      'guest RAM left out (x-ignore-shared)',
    );
    ctx.record(
      'live',
      'device-state snapshot: guest stopped',
      median(paused),
      'ms',
      `median of ${paused.length}, range ${range(paused)} ms (QEMU STOP→RESUME)`,
    );
    ctx.record(
      'live',
      'device-state snapshot: whole',
      median(snaps.map((s) => s.totalMs)),
      'ms',
      `median of ${SNAPSHOTS}, MSRs parsed from the stream`,
    );
    const status = await machine.qmp.execute<{ status: string }>('query-status');
    if (status.status !== 'running')
      ctx.record('live', 'guest running after snapshots', 0, '', `status ${status.status}`);
  } finally {
    await machine.close();
  }
}

interface JsonlAlert {
  '@timestamp'?: string;
  vigil: { policy: string; key: string; time: string };
}

function readAlerts(path: string): JsonlAlert[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as JsonlAlert];
      } catch {
        return [];
      }
    });
}

async function watchpointLatency(ctx: BenchContext, g: GuestState): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-bench-watch-'));
  const config = join(dir, 'watch.yaml');
  const jsonl = join(dir, 'alerts.jsonl');
  // memory-access alone, sweeping once a minute: only the watchpoint can raise within seconds.
  writeFileSync(
    config,
    `policies:\n  '*': { enabled: false }\n  memory-access: { enabled: true, intervalMs: 60000 }\n` +
      `sinks:\n  - { type: jsonl, path: ${jsonl} }\nbaselineDir: ${join(dir, 'baselines')}\n`,
  );
  const bin = join(ctx.repoRoot, 'bin', 'vigil.js');
  const child = spawn(process.execPath, [bin, 'watch', '--qmp', g.qmp, '--config', config], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
  try {
    const deadline = Date.now() + 120_000;
    // Armed, and the first sweep's baseline learned (the sweep runs right after bootstrap).
    while (!/write watchpoints on/.test(log) || !/watching/.test(log)) {
      if (Date.now() > deadline || child.exitCode !== null) {
        ctx.record(
          'live',
          'watchpoint → alert',
          NaN,
          'ms',
          `watch did not arm: ${log.trim().split('\n').at(-1) ?? ''}`,
        );
        return;
      }
      await sleep(100);
    }
    await sleep(3_000);
    const t0 = Date.now();
    await runAttack(g, 'rootkit-wp');
    let hit: JsonlAlert | undefined;
    while (!hit && Date.now() - t0 < 30_000) {
      hit = readAlerts(jsonl).find(
        (a) => a.vigil.policy === 'memory-access' && a.vigil.key.startsWith('watch:'),
      );
      if (!hit) await sleep(20);
    }
    if (!hit) {
      ctx.record('live', 'rootkit-wp → watchpoint alert', NaN, 'ms', 'no alert within 30 s');
      return;
    }
    ctx.record(
      'live',
      'rootkit-wp → watchpoint alert (sweeps a minute apart)',
      Date.parse(hit.vigil.time) - t0,
      'ms',
      'from starting the attack (console round trip and insmod included) to the alert being raised',
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function liveSection(ctx: BenchContext): Promise<void> {
  const g = await freshAttackGuest(ctx);
  await agentAndSnapshot(ctx, g);
  await watchpointLatency(ctx, g);
}
