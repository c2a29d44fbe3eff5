// Benchmark sections beyond the VMM layer (processes, sweeps), kept apart so each layer's owner can add
// one without touching the harness.
//
//   ps     process walks (task list, PID table, with exe + command line) on an idle guest, with 1,000 and
//          with 5,000 extra processes: ms and µs per task, to show the growth is linear; and the whole
//          `vigil ps --dump FILE --json` process on a 256 MiB ELF core, cold (a fresh node process).
//   sweep  one sweep of every registered policy (ALL_POLICIES, whatever it holds today) on a quiet guest
//          and with 1,000 processes; how long the NIC event takes to become an alert; how long a polled
//          policy at a 1 s interval takes to see an attack; how much a sweep a second slows the guest.
//   live   guest agent round trips, the device-state snapshot, GDB watchpoint → alert (bench/live.ts).
//
// Guests: the 256 MiB bench guest runs the attack image (the demo's guest: the polled-latency test needs
// its sniffer), the 3 GiB one the plain lab image (5,000 processes do not fit in 256 MiB).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEMO_STEPS } from '../src/cli/commands/demo.js';
import { attackImage, runAttack } from '../src/lab/attacks.js';
import { ensureGuest, execInGuest, type GuestState } from '../src/lab/index.js';
import { Kernel } from '../src/os/linux/kernel.js';
import { kernelIdentity } from '../src/os/linux/live-kernel.js';
import { listPidTasks, listProcesses, listTasks } from '../src/os/linux/tasks/index.js';
import { MemoryBaselineStore } from '../src/policy/baseline.js';
import { Engine, type PolicyConfig, type SweepReport } from '../src/policy/engine.js';
import { ALL_POLICIES } from '../src/policy/policies/index.js';
import type { Alert } from '../src/policy/types.js';
import { connectQemu, type QemuMachine } from '../src/vmm/qemu/machine.js';
import { liveSection } from './live.js';
import type { BenchContext } from './run.js';

const SMALL = 'vigil-bench-256m';
const BIG = 'vigil-bench-3g';
/** Walk timings: the median of this many runs, each after an epoch bump (per-sweep caches cold). */
const WALK_RUNS = 5;
const SWEEP_RUNS = 5;
/** The slowdown loop should take about this long on an unmonitored guest. */
const LOOP_TARGET_MS = 3_000;
/** Alternating unmonitored/monitored runs: the machine's own noise is of the order of the effect measured. */
const LOOP_PAIRS = 5;
const DETECT_TIMEOUT_MS = 15_000;
const VOLATILITY_NOTE = 'issue: Volatility 3 takes ~7 s per plugin after preparing a symbol file';

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0
    ? NaN
    : s.length % 2
      ? s[(s.length - 1) / 2]!
      : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
/** "0.97–1.12×": the spread of monitored/unmonitored over the pairs, to tell an effect from noise. */
const pairRatios = (bare: readonly number[], watched: readonly number[]): string => {
  const r = bare.map((b, i) => watched[i]! / b).sort((a, b) => a - b);
  return r.length ? `${r[0]!.toFixed(2)}–${r.at(-1)!.toFixed(2)}×` : 'none';
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (s: string) => process.stderr.write(`  … ${s}\n`);

/** Run a console command that must succeed. */
async function guestRun(g: GuestState, cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await execInGuest(g, cmd, { timeoutMs });
  if (r.exitCode !== 0) throw new Error(`bench: guest command "${cmd}" exited ${r.exitCode}: ${r.output}`);
  return r.output.trim();
}

/**
 * `vigil-spawn N` (killing earlier ones first), in calls of at most 1,000: busybox ash keeps every
 * background job in its job table, so one shell starting thousands gets slower with each. Returns ms.
 */
async function spawnSleeps(g: GuestState, n: number): Promise<number> {
  await guestRun(g, 'vigil-spawn kill', 600_000);
  const t = performance.now();
  for (let left = n; left > 0; left -= 1000) {
    const k = Math.min(1000, left);
    const out = await guestRun(g, `vigil-spawn ${k}`, 600_000);
    if (out !== `started ${k}`) throw new Error(`bench: vigil-spawn ${k} said "${out}"`);
  }
  return performance.now() - t;
}

/** The 256 MiB bench guest (tracked by the harness, so it stops it), rebooted once with the attack image. */
async function attackGuest(ctx: BenchContext): Promise<GuestState> {
  await ctx.guest(SMALL);
  const image = await attackImage({ progress: log });
  const { state, reused } = await ensureGuest({
    name: SMALL,
    memory: '256M',
    ...image,
    onDifferent: 'reboot',
    progress: log,
  });
  if (!reused) log(`${SMALL} rebooted with the attack image`);
  return state;
}

async function withKernel<T>(
  g: GuestState,
  fn: (machine: QemuMachine, kernel: Kernel) => Promise<T>,
): Promise<T> {
  const machine = await connectQemu(g.qmp, { name: g.name });
  try {
    return await fn(machine, Kernel.bootstrap(machine.memory, { live: true }));
  } finally {
    await machine.close();
  }
}

// ---- ps ----------------------------------------------------------------------------------------------

interface WalkTimes {
  tasks: number;
  taskListMs: number;
  pidTableMs: number;
  detailsMs: number;
}

/** Median times of the three walks `vigil ps` can do, each run on fresh per-sweep caches. */
function timeWalks(kernel: Kernel): WalkTimes {
  const take = (fn: () => unknown): number[] => {
    const ms: number[] = [];
    for (let i = 0; i < WALK_RUNS; i++) {
      kernel.refresh();
      const t = performance.now();
      fn();
      ms.push(performance.now() - t);
    }
    return ms;
  };
  kernel.refresh();
  const tasks = listTasks(kernel).length;
  return {
    tasks,
    taskListMs: median(take(() => listTasks(kernel))),
    pidTableMs: median(take(() => listPidTasks(kernel))),
    detailsMs: median(take(() => listProcesses(kernel, { details: true }))),
  };
}

function recordWalks(ctx: BenchContext, label: string, w: WalkTimes): void {
  const per = (ms: number) => `${((1000 * ms) / w.tasks).toFixed(1)} µs/task`;
  ctx.record('ps', `task list walk, ${label} (${w.tasks} tasks)`, w.taskListMs, 'ms', per(w.taskListMs));
  ctx.record('ps', `PID table walk, ${label} (${w.tasks} tasks)`, w.pidTableMs, 'ms', per(w.pidTableMs));
  ctx.record(
    'ps',
    `processes with exe + cmdline, ${label} (${w.tasks} tasks)`,
    w.detailsMs,
    'ms',
    per(w.detailsMs),
  );
}

/** `node bin/vigil.js ps --dump FILE --json` as a user runs it: a fresh process each time. */
function psOnDump(ctx: BenchContext, dump: string): { firstMs: number; bestMs: number; processes: number } {
  const bin = process.env.VIGIL_BIN ?? join(ctx.repoRoot, 'bin', 'vigil.js');
  const times: number[] = [];
  let processes = 0;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    const r = spawnSync(process.execPath, [bin, 'ps', '--dump', dump, '--json'], {
      cwd: ctx.repoRoot,
      encoding: 'utf8',
      maxBuffer: 256 << 20,
    });
    times.push(performance.now() - t);
    if (r.status !== 0) throw new Error(`bench: vigil ps --dump exited ${r.status}: ${r.stderr}`);
    processes = (JSON.parse(r.stdout) as unknown[]).length;
  }
  return { firstMs: times[0]!, bestMs: Math.min(...times), processes };
}

async function psSection(ctx: BenchContext): Promise<void> {
  const small = await attackGuest(ctx);
  const dir = mkdtempSync(join(tmpdir(), 'vigil-bench-'));
  try {
    await withKernel(small, async (machine, kernel) => {
      await guestRun(small, 'vigil-spawn kill', 600_000);
      recordWalks(ctx, 'idle 256 MiB guest', timeWalks(kernel));

      const dump = join(dir, 'guest.elf');
      await machine.control.dump(dump);
      const bytes = statSync(dump).size;
      const r = psOnDump(ctx, dump);
      ctx.record(
        'ps',
        `vigil ps --dump --json, whole process, ${(bytes / 2 ** 20).toFixed(0)} MiB ELF core`,
        r.bestMs,
        'ms',
        `first run ${r.firstMs.toFixed(0)} ms, ${r.processes} processes; ${VOLATILITY_NOTE}`,
      );
      rmSync(dump, { force: true });

      const spawnMs = await spawnSleeps(small, 1000);
      log(`1,000 sleeps started in ${(spawnMs / 1000).toFixed(1)} s`);
      recordWalks(ctx, '+1,000 processes, 256 MiB guest', timeWalks(kernel));
      await guestRun(small, 'vigil-spawn kill', 600_000);
    });

    // 5,000 sleeping processes need more kernel memory (stacks, page tables) than 256 MiB leaves.
    const big = await ctx.guest(BIG);
    await withKernel(big, async (_machine, kernel) => {
      await guestRun(big, 'vigil-spawn kill', 600_000);
      recordWalks(ctx, 'idle 3 GiB guest', timeWalks(kernel));
      try {
        const spawnMs = await spawnSleeps(big, 5000);
        log(`5,000 sleeps started in ${(spawnMs / 1000).toFixed(1)} s`);
        recordWalks(ctx, '+5,000 processes, 3 GiB guest', timeWalks(kernel));
      } catch (e) {
        ctx.record('ps', '5,000 processes', NaN, '', `could not start them: ${(e as Error).message}`);
      } finally {
        await guestRun(big, 'vigil-spawn kill', 600_000);
      }
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- sweep -------------------------------------------------------------------------------------------

/** Alerts as the engine delivered them (from sweeps and events alike), with when they arrived. */
interface Seen {
  alert: Alert;
  at: number;
}

function makeEngine(
  machine: QemuMachine,
  kernel: Kernel,
  seen: Seen[],
  counter: { sweeps: number },
): Engine<Kernel> {
  // Every policy polls once a second: the schedule the slowdown and polled-latency figures are about.
  const policies: Record<string, PolicyConfig> = {};
  for (const p of ALL_POLICIES) policies[p.id] = { intervalMs: 1_000 };
  return new Engine<Kernel>({
    vm: machine.name,
    machine,
    policies: [...ALL_POLICIES],
    kernel,
    kernelIdentity: kernelIdentity(kernel),
    baselines: new MemoryBaselineStore(),
    config: { policies, defaultIntervalMs: 1_000, eventDedupeMs: 1, sweepBudgetMs: 60_000 },
    beforeSweep: () => {
      counter.sweeps++;
      kernel.refresh();
    },
    onAlert: (alert) => {
      seen.push({ alert, at: performance.now() });
    },
  });
}

/** The slowest policies of a sweep, for a note. */
function slowest(r: SweepReport, n = 3): string {
  return [...r.runs]
    .sort((a, b) => b.durationMs - a.durationMs)
    .slice(0, n)
    .map((x) => `${x.policy} ${x.durationMs.toFixed(0)} ms`)
    .join(', ');
}

async function timeSweeps(engine: Engine<Kernel>): Promise<{ ms: number; report: SweepReport }> {
  const reports: SweepReport[] = [];
  for (let i = 0; i < SWEEP_RUNS; i++) reports.push(await engine.sweep({ force: true }));
  const ms = median(reports.map((r) => r.durationMs));
  const report = reports.reduce((a, b) =>
    Math.abs(b.durationMs - ms) < Math.abs(a.durationMs - ms) ? b : a,
  );
  return { ms, report };
}

/** Wait for an alert matching `match` among those seen from index `from` on. */
async function waitAlert(
  seen: Seen[],
  from: number,
  match: (a: Alert) => boolean,
): Promise<Seen | undefined> {
  const deadline = performance.now() + DETECT_TIMEOUT_MS;
  while (performance.now() < deadline) {
    const hit = seen.slice(from).find((s) => match(s.alert));
    if (hit) return hit;
    await sleep(5);
  }
  return undefined;
}

async function cpuLoop(g: GuestState, n: number): Promise<number> {
  const out = await guestRun(g, `vigil-cpuloop ${n}`, 300_000);
  const m = /^elapsed_ms (-?\d+) /m.exec(out);
  if (!m) throw new Error(`bench: vigil-cpuloop said "${out}"`);
  return Number(m[1]);
}

async function sweepSection(ctx: BenchContext): Promise<void> {
  const g = await attackGuest(ctx);
  if (ALL_POLICIES.length === 0) {
    ctx.record('sweep', 'policies registered', 0, '', 'ALL_POLICIES is empty: nothing to sweep');
    return;
  }
  await guestRun(g, 'vigil-spawn kill', 600_000);
  await withKernel(g, async (machine, kernel) => {
    const seen: Seen[] = [];
    const counter = { sweeps: 0 };
    const engine = makeEngine(machine, kernel, seen, counter);
    const active = engine.status().filter((s) => s.state === 'active');
    const skipped = engine.status().filter((s) => s.state !== 'active');

    // Quiet guest. The first sweep learns baselines: reported on its own.
    const first = await engine.sweep({ force: true });
    ctx.record(
      'sweep',
      `first sweep (learns baselines), quiet guest`,
      first.durationMs,
      'ms',
      `${active.length} active policies${skipped.length ? `, skipped: ${skipped.map((s) => s.id).join(' ')}` : ''}`,
    );
    const quiet = await timeSweeps(engine);
    ctx.record(
      'sweep',
      `sweep of all policies, quiet guest`,
      quiet.ms,
      'ms',
      `slowest: ${slowest(quiet.report)}`,
    );
    if (seen.length > 0) log(`the quiet guest raised alerts: ${seen.map((s) => s.alert.policy).join(' ')}`);

    await spawnSleeps(g, 1000);
    kernel.refresh();
    const tasks = listTasks(kernel).length;
    const loaded = await timeSweeps(engine);
    ctx.record(
      'sweep',
      `sweep of all policies, +1,000 processes (${tasks} tasks)`,
      loaded.ms,
      'ms',
      `slowest: ${slowest(loaded.report)}`,
    );
    await guestRun(g, 'vigil-spawn kill', 600_000);

    // Guest slowdown: the same CPU-bound loop with and without a sweep of everything every second.
    const probeN = 20_000;
    const probeMs = Math.max(10, await cpuLoop(g, probeN));
    const n = Math.max(probeN, Math.round((probeN * LOOP_TARGET_MS) / probeMs));
    const bare: number[] = [];
    const watched: number[] = [];
    // The engine runs whichever policies are due, so one "sweep of everything" is as many policy runs as
    // there are polling policies; its passes are counted apart.
    const pollers = Math.max(1, active.filter((s) => s.modes.includes('poll')).length);
    const policyRuns = () => Object.values(engine.stats()).reduce((a, s) => a + s.runs, 0);
    let runsDuring = 0;
    let passesDuring = 0;
    for (let i = 0; i < LOOP_PAIRS; i++) {
      bare.push(await cpuLoop(g, n));
      const passes = counter.sweeps;
      const runs = policyRuns();
      engine.start();
      try {
        watched.push(await cpuLoop(g, n));
      } finally {
        await engine.stop();
      }
      passesDuring += counter.sweeps - passes;
      runsDuring += policyRuns() - runs;
    }
    const bareMs = median(bare);
    const watchedMs = median(watched);
    ctx.record(
      'sweep',
      'guest CPU loop, unmonitored',
      bareMs,
      'ms',
      `vigil-cpuloop ${n}, median of ${LOOP_PAIRS}`,
    );
    ctx.record(
      'sweep',
      'guest CPU loop, all policies swept every second',
      watchedMs,
      'ms',
      `~${(runsDuring / pollers / LOOP_PAIRS).toFixed(1)} full sweeps (${(passesDuring / LOOP_PAIRS).toFixed(0)} engine passes) per loop`,
    );
    ctx.record(
      'sweep',
      'guest slowdown under monitoring',
      watchedMs / bareMs,
      '×',
      `monitored / unmonitored medians; per-pair ratios ${pairRatios(bare, watched)}; host load average ` +
        `${loadavg()[0]!.toFixed(1)} (other guests and tests skew it)`,
    );

    await nicLatency(ctx, g, machine, engine, seen);
    await polledLatency(ctx, g, engine, seen);
  });
}

/** `ip link set eth0 promisc on` on the console → NIC_RX_FILTER_CHANGED → an alert of an event policy. */
async function nicLatency(
  ctx: BenchContext,
  g: GuestState,
  machine: QemuMachine,
  engine: Engine<Kernel>,
  seen: Seen[],
): Promise<void> {
  const eventPolicies = ALL_POLICIES.filter(
    (p) => p.onEvent && (!p.eventNames || p.eventNames.includes('NIC_RX_FILTER_CHANGED')),
  );
  if (eventPolicies.length === 0) {
    ctx.record('sweep', 'NIC event → alert', NaN, 'ms', 'no registered policy handles NIC_RX_FILTER_CHANGED');
    return;
  }
  const ids = new Set(eventPolicies.map((p) => p.id));
  let eventAt = 0;
  const unsubscribe = machine.qmp.onEvent((e) => {
    if (e.event === 'NIC_RX_FILTER_CHANGED' && eventAt === 0) eventAt = performance.now();
    void engine.handleEvent({ source: 'qmp', name: e.event, time: e.time, data: e.data });
  });
  const fromReturn: number[] = [];
  const fromStart: number[] = [];
  const fromEvent: number[] = [];
  let missed = 0;
  try {
    for (let i = 0; i < 3; i++) {
      // QEMU raises the event once until someone queries the filter: re-arm it.
      await machine.qmp.queryRxFilter();
      const from = seen.length;
      eventAt = 0;
      const t0 = performance.now();
      await guestRun(g, 'ip link set eth0 promisc on');
      const t1 = performance.now();
      const hit = await waitAlert(seen, from, (a) => ids.has(a.policy));
      if (hit) {
        fromReturn.push(hit.at - t1);
        fromStart.push(hit.at - t0);
        if (eventAt) fromEvent.push(hit.at - eventAt);
      } else missed++;
      await guestRun(g, 'ip link set eth0 promisc off');
      await machine.qmp.queryRxFilter();
      await sleep(500);
    }
  } finally {
    unsubscribe();
    await guestRun(g, 'ip link set eth0 promisc off').catch(() => undefined);
  }
  // The serial console answers slower than QEMU reports the event: the alert usually comes before the
  // command returns, so the time from sending it (console round trip included) is the honest figure.
  const r = median(fromReturn);
  ctx.record(
    'sweep',
    `NIC promiscuous → ${[...ids].join('|')} alert, from sending the console command`,
    median(fromStart),
    'ms',
    `median of ${fromStart.length}${missed ? `, ${missed} missed` : ''}; the alert came ` +
      `${Math.abs(r).toFixed(0)} ms ${r < 0 ? 'before' : 'after'} the console returned; QMP event → alert ` +
      `${median(fromEvent).toFixed(1)} ms`,
  );
}

/** A polled policy at a 1 s interval: from the sniffer attack being in place to its alert. */
async function polledLatency(
  ctx: BenchContext,
  g: GuestState,
  engine: Engine<Kernel>,
  seen: Seen[],
): Promise<void> {
  const expect = new Set(DEMO_STEPS.find((s) => s.attack === 'sniffer')?.expect ?? ['raw-socket']);
  const polled = ALL_POLICIES.filter((p) => expect.has(p.id) && p.poll);
  if (polled.length === 0) {
    ctx.record(
      'sweep',
      'sniffer → alert at a 1 s interval',
      NaN,
      'ms',
      `no registered polled policy of ${[...expect].join('|')}`,
    );
    return;
  }
  const ids = new Set(polled.map((p) => p.id));
  const fromReturn: number[] = [];
  const fromStart: number[] = [];
  let missed = 0;
  for (let i = 0; i < 3; i++) {
    const from = seen.length;
    engine.start();
    let pid: number | undefined;
    try {
      // Let the schedule settle so the attack lands at a random point of the interval.
      await sleep(1_000 + Math.random() * 1_000);
      const t0 = performance.now();
      const r = await runAttack(g, 'sniffer');
      const t1 = performance.now();
      pid = r.pid;
      const hit = await waitAlert(seen, from, (a) => ids.has(a.policy));
      if (hit) {
        fromReturn.push(hit.at - t1);
        fromStart.push(hit.at - t0);
      } else missed++;
    } finally {
      await engine.stop();
      if (pid) await guestRun(g, `kill ${pid}`).catch(() => undefined);
    }
    // A sweep with the sniffer gone clears the alert, so the next run raises a new one.
    await sleep(300);
    await engine.sweep({ force: true });
  }
  ctx.record(
    'sweep',
    `sniffer → ${[...ids].join('|')} alert at a 1 s interval, from starting the attack`,
    median(fromStart),
    'ms',
    `median of ${fromStart.length}${missed ? `, ${missed} missed` : ''}; ${median(fromReturn).toFixed(0)} ms after ` +
      `the runner reported it in place (console round trip included)`,
  );
}

export function sections(ctx: BenchContext): Record<string, () => Promise<void>> {
  return { ps: () => psSection(ctx), sweep: () => sweepSection(ctx), live: () => liveSection(ctx) };
}
