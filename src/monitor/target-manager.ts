// One watched VM and its state machine:
//
//   connecting → bootstrapping → watching ⇄ paused
//        ↑             ↑   (reset, reboot, kernel changed)  │
//        └── lost ←────┴───────────────────────────────────┘  (QMP connection gone)
//
// - connecting: QMP connect and RAM open (connectQemu), retried with backoff while the socket is absent
//   or refuses; a socket that reappears (QEMU restarted) is tried at once.
// - bootstrapping: find the running kernel (live-kernel.ts); while the guest is in firmware or booting
//   it is not there yet: retried with backoff.
// - watching: sweeps every tick (the shortest policy interval); each sweep first checks that the kernel is
//   still the one bootstrapped (memory check every sweep, vCPU check every identityCheckMs).
// - paused: QMP STOP; no sweeps (a paused guest cannot change). RESUME moves the caches' epoch.
// - lost: the QMP connection dropped (QEMU exited or was killed); a health alert is raised.
// With a GDB stub (connectQemu's `gdb`) and memory-access running, write watchpoints are armed after each
// bootstrap and disarmed before the next one, on a lost connection and on stop (kernel-watch.ts). Their hits
// stop the VM for a moment (QMP STOP, status "debug"): that is not a pause of the VM.
// One loop drives the machine; QMP callbacks only set flags and wake it, so transitions never race.

import type { Kernel } from '../os/linux/kernel.js';
import type { Engine, SweepReport } from '../policy/engine.js';
import {
  criticalWatchTargets,
  describeWriter,
  type WatchTarget,
} from '../policy/policies/kernel-watchpoints.js';
import type { Finding } from '../policy/types.js';
import { isVigilError } from '../util/errors.js';
import { sanitize } from '../util/sanitize.js';
import type { PhysicalMemory, Vcpu, VmEvent, X86Registers } from '../vmm/types.js';
import type { RetrySpec, TargetSpec } from './config.js';
import type { KernelIdentity } from '../policy/baseline.js';
import {
  kernelIdentity,
  residentChange,
  runsOnCpu,
  sameIdentity,
  type LiveBootstrap,
} from '../os/linux/live-kernel.js';
import { KernelWatch, watchPlan } from './kernel-watch.js';
import { LiveMachine, type LiveConnection } from './live-machine.js';

export type TargetState = 'connecting' | 'bootstrapping' | 'watching' | 'paused' | 'lost' | 'stopped';
export const TARGET_STATES: readonly TargetState[] = [
  'connecting',
  'bootstrapping',
  'watching',
  'paused',
  'lost',
  'stopped',
];

export interface TargetDeps {
  connect(spec: TargetSpec): Promise<LiveConnection>;
  bootstrap(memory: PhysicalMemory, vcpus: readonly Vcpu[]): Promise<LiveBootstrap>;
  /** Identity of the socket file (device:inode), undefined when it does not exist. */
  socketStamp(path: string): string | undefined;
  now(): number;
  /** The kernel entries to watch through a GDB stub (default: memory-access's criticalWatchTargets). */
  watchTargets?(kernel: Kernel): WatchTarget[];
  /** The writer at a watchpoint hit (default: memory-access's describeWriter). */
  describeWriter?(kernel: Kernel, regs: X86Registers): Record<string, unknown>;
}

export interface TargetHooks {
  transition(target: WatchedTarget, from: TargetState, to: TargetState, reason: string): void;
  /** A line for the log that is not a transition (first failure of a retried step). */
  note(target: WatchedTarget, message: string): void;
  /** A vigil-health condition of this VM (lost, reset), to be delivered as an alert. */
  health(target: WatchedTarget, finding: Finding): void;
  event(target: WatchedTarget, ev: VmEvent): void;
  sweep(target: WatchedTarget, report: SweepReport, kernel: Kernel): void;
  error(target: WatchedTarget, e: unknown): void;
}

export interface WatchedTargetOptions {
  spec: TargetSpec;
  /** Builds an engine for this VM around its LiveMachine: at start, and again for each new boot. */
  makeEngine(machine: LiveMachine): Engine<Kernel>;
  retry: { reconnect: RetrySpec; bootstrap: RetrySpec };
  identityCheckMs: number;
  deps: TargetDeps;
  hooks: TargetHooks;
}

/** How often an absent socket is looked for. */
const SOCKET_POLL_MS = 250;
const MIN_TICK_MS = 100;
const MAX_TICK_MS = 60_000;
const IDLE_TICK_MS = 1_000;
/** QMP events after which the kernel in RAM is no longer the one bootstrapped. */
const RESET_EVENTS = new Set(['RESET', 'SHUTDOWN']);

function backoff(attempt: number, r: RetrySpec): number {
  return Math.min(r.maxMs, r.initialMs * 2 ** Math.min(Math.max(0, attempt - 1), 20));
}

function line(e: unknown): string {
  if (isVigilError(e)) return sanitize(e.toLine(), 300);
  return sanitize(e instanceof Error ? e.message : String(e), 300);
}

export class WatchedTarget {
  readonly spec: TargetSpec;
  readonly machine: LiveMachine;
  readonly #o: WatchedTargetOptions;
  #engine: Engine<Kernel>;
  /** Identity of the last kernel bootstrapped: another one is another boot. */
  #identity: KernelIdentity | undefined;
  #state: TargetState = 'connecting';
  #since: number;
  #kernel: Kernel | undefined;
  #unsubscribe: (() => void)[] = [];
  // Flags set by QMP callbacks, acted upon by the loop.
  #lost: string | undefined;
  #reset: string | undefined;
  #paused = false;
  // Retry bookkeeping.
  #attempts = 0;
  #nextAttempt = 0;
  #failedStamp: string | undefined;
  #lastFailure: string | undefined;
  #nextSweep = 0;
  #lastCpuCheck = 0;
  /** Write watchpoints through the GDB stub, while armed against the current kernel. */
  #kwatch: KernelWatch | undefined;
  /** The last thing said about the GDB stub, so that it is said once. */
  #gdbSaid: string | undefined;
  #stopping = false;
  #wakeup: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  /** Counters for status displays and tests. */
  readonly stats = { connects: 0, bootstraps: 0, losses: 0, resets: 0, sweeps: 0, events: 0, watchArms: 0 };

  constructor(options: WatchedTargetOptions) {
    this.#o = options;
    this.spec = options.spec;
    this.machine = new LiveMachine(options.spec.name);
    this.#engine = options.makeEngine(this.machine);
    this.#since = options.deps.now();
  }

  get name(): string {
    return this.spec.name;
  }

  /**
   * This VM's engine. A new boot gets a new engine, so that a condition still (or again) present after a
   * reboot raises its alert again: a backdoor that survives a reboot is news. Baselines are kept in the
   * store and re-learned by the engine when the kernel identity changed.
   */
  get engine(): Engine<Kernel> {
    return this.#engine;
  }

  get state(): TargetState {
    return this.#state;
  }

  /** When the current state was entered (ms since the epoch). */
  get since(): number {
    return this.#since;
  }

  get kernel(): Kernel | undefined {
    return this.#kernel;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stop the loop, let a sweep in flight finish, stop the engine, close the connection. */
  async stop(reason = 'vigil is stopping'): Promise<void> {
    this.#stopping = true;
    this.#wake();
    await this.#loop;
    await this.#engine.stop();
    await this.#teardown();
    await this.machine.close();
    this.#set('stopped', reason);
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      try {
        switch (this.#state) {
          case 'connecting':
            await this.#connecting();
            break;
          case 'bootstrapping':
            await this.#bootstrapping();
            break;
          case 'watching':
          case 'paused':
            await this.#watching();
            break;
          case 'lost':
            await this.#lostWait();
            break;
          default:
            return;
        }
      } catch (e) {
        // A bug of ours must not end the watch of this VM: report it and slow down.
        this.#o.hooks.error(this, e);
        await this.#wait(1_000);
      }
    }
  }

  // ---- steps -----------------------------------------------------------------------------------------

  async #connecting(): Promise<void> {
    const now = this.#o.deps.now();
    const stamp = this.#o.deps.socketStamp(this.spec.qmp);
    if (stamp === undefined) {
      this.#failOnce(`waiting for QMP socket ${this.spec.qmp}`);
      await this.#wait(SOCKET_POLL_MS);
      return;
    }
    // A socket that failed stays in backoff; a new one (QEMU restarted) is tried at once.
    if (stamp === this.#failedStamp && now < this.#nextAttempt) {
      await this.#wait(Math.min(SOCKET_POLL_MS, this.#nextAttempt - now));
      return;
    }
    let conn: LiveConnection;
    try {
      conn = await this.#o.deps.connect(this.spec);
    } catch (e) {
      this.#failedStamp = stamp;
      this.#attempts++;
      this.#nextAttempt = this.#o.deps.now() + backoff(this.#attempts, this.#o.retry.reconnect);
      this.#failOnce(`cannot connect: ${line(e)}`);
      return;
    }
    if (this.#stopping) {
      await conn.close().catch(() => undefined);
      return;
    }
    this.stats.connects++;
    this.#attach(conn);
    let status = 'running';
    try {
      const s = await conn.qmp.queryStatus();
      this.#paused = !s.running;
      status = s.status;
    } catch (e) {
      this.#lost ??= `query-status failed: ${line(e)}`;
    }
    if (this.#takeLost()) return;
    const how = conn.memoryAccess ? `, RAM via ${conn.memoryAccess}` : '';
    this.#toBootstrapping(`connected (${sanitize(status, 40)}${how})`, 0);
  }

  async #bootstrapping(): Promise<void> {
    if (this.#takeLost()) return;
    this.#reset = undefined;
    const now = this.#o.deps.now();
    if (now < this.#nextAttempt) {
      await this.#wait(this.#nextAttempt - now);
      return;
    }
    const conn = this.machine.connection;
    if (!conn) {
      this.#lost ??= 'no connection';
      return;
    }
    const r = await this.#o.deps.bootstrap(conn.memory, conn.vcpus);
    if (this.#stopping || this.#takeLost()) return;
    if (this.#reset !== undefined) {
      // Reset while bootstrapping: what was found may be the kernel that is going away.
      this.#nextAttempt = this.#o.deps.now() + this.#o.retry.bootstrap.initialMs;
      return;
    }
    if (!r.ok) {
      this.#attempts++;
      this.#nextAttempt = this.#o.deps.now() + backoff(this.#attempts, this.#o.retry.bootstrap);
      this.#failOnce(`no running kernel yet: ${sanitize(r.reason, 300)}`);
      return;
    }
    this.stats.bootstraps++;
    const k = r.kernel;
    const identity = kernelIdentity(k);
    if (this.#identity && !sameIdentity(this.#identity, identity)) {
      const old = this.#engine;
      this.#engine = this.#o.makeEngine(this.machine);
      await old.stop();
    }
    this.#identity = identity;
    this.#kernel = k;
    this.#engine.setKernel(k, identity);
    const t = this.#o.deps.now();
    this.#lastCpuCheck = t;
    this.#nextSweep = t;
    this.#attempts = 0;
    this.#lastFailure = undefined;
    const why =
      `kernel ${k.release}, KASLR offset 0x${k.kaslr.virtualOffset.toString(16)}, bootstrap ${r.ms} ms` +
      (r.note ? `; ${r.note}` : '');
    await this.#armWatch(k);
    if (this.#stopping || this.#takeLost()) return;
    // Arming stopped the VM for a moment: its QMP STOP is not a pause.
    if (this.#paused && (await this.#stubStop()) === 'transient') this.#paused = false;
    this.#set(this.#paused ? 'paused' : 'watching', why);
  }

  async #watching(): Promise<void> {
    if (this.#takeLost()) return;
    const k = this.#kernel!;
    if (this.#reset !== undefined) {
      const why = this.#reset;
      this.#reset = undefined;
      await this.#disarmWatch();
      this.#guestReset(why);
      return;
    }
    if (this.#paused && this.#state === 'watching') {
      const held = await this.#stubStop();
      if (held === 'transient') this.#paused = false;
      else
        this.#set(
          'paused',
          held === 'held' ? 'VM held at a watchpoint hit (pause response)' : 'VM paused (QMP STOP)',
        );
    } else if (!this.#paused && this.#state === 'paused') {
      // The guest ran again: nothing cached before the pause may be trusted.
      k.refresh();
      this.#nextSweep = this.#o.deps.now();
      this.#set('watching', 'VM resumed (QMP RESUME)');
    }
    if (this.#state === 'paused') {
      await this.#wait(MAX_TICK_MS);
      return;
    }
    const start = this.#o.deps.now();
    if (start < this.#nextSweep) {
      await this.#wait(this.#nextSweep - start);
      return;
    }
    k.refresh();
    let changed: string | undefined;
    try {
      changed = residentChange(k) ?? (await this.#cpuCheck(k));
    } catch (e) {
      changed = `kernel check failed: ${line(e)}`;
    }
    if (this.#stopping || this.#takeLost()) return;
    if (changed) {
      await this.#disarmWatch();
      this.#guestReset(changed);
      return;
    }
    const report = await this.#engine.sweep();
    this.stats.sweeps++;
    this.#o.hooks.sweep(this, report, k);
    this.#nextSweep = Math.max(start + this.#tick(), this.#o.deps.now() + 10);
  }

  async #lostWait(): Promise<void> {
    const now = this.#o.deps.now();
    if (now < this.#nextAttempt) {
      await this.#wait(Math.min(SOCKET_POLL_MS, this.#nextAttempt - now));
      return;
    }
    if (this.#o.deps.socketStamp(this.spec.qmp) === undefined) {
      await this.#wait(SOCKET_POLL_MS);
      return;
    }
    this.#failedStamp = undefined;
    this.#attempts = 0;
    this.#lastFailure = undefined;
    this.#set('connecting', 'QMP socket is back');
  }

  // ---- transitions -----------------------------------------------------------------------------------

  #set(to: TargetState, reason: string): void {
    const from = this.#state;
    this.#state = to;
    this.#since = this.#o.deps.now();
    this.#o.hooks.transition(this, from, to, reason);
  }

  #toBootstrapping(reason: string, delayMs: number): void {
    this.#kernel = undefined;
    this.#engine.setKernel(undefined, undefined, `kernel not bootstrapped yet (${reason})`);
    this.#attempts = 0;
    this.#lastFailure = undefined;
    this.#nextAttempt = this.#o.deps.now() + delayMs;
    this.#set('bootstrapping', reason);
  }

  /** The kernel bootstrapped is gone (reboot, reset, shutdown): find the next one. */
  #guestReset(reason: string): void {
    this.stats.resets++;
    this.#o.hooks.health(this, {
      key: 'vm-reset',
      severity: 'info',
      summary: `VM ${this.name} reset or rebooted: ${reason}; watching again once its kernel is up`,
      evidence: { vm: this.name, reason },
    });
    // Give the firmware a moment: right after a reset RAM still holds the old kernel.
    this.#toBootstrapping(reason, this.#o.retry.bootstrap.initialMs);
  }

  /** If the connection was lost: tear it down, raise the alert, go to 'lost'. */
  #takeLost(): boolean {
    if (this.#lost === undefined) return false;
    const why = this.#lost;
    this.#lost = undefined;
    this.#reset = undefined;
    this.stats.losses++;
    void this.#teardown();
    this.#kernel = undefined;
    this.#engine.setKernel(undefined, undefined, `VM lost: ${why}`);
    this.#attempts = 0;
    this.#failedStamp = undefined;
    this.#nextAttempt = this.#o.deps.now() + this.#o.retry.reconnect.initialMs;
    this.#set('lost', why);
    this.#o.hooks.health(this, {
      key: 'vm-lost',
      severity: 'medium',
      summary: `lost VM ${this.name}: ${why}; reconnecting when its QMP socket answers again`,
      evidence: { vm: this.name, qmp: this.spec.qmp, reason: why },
    });
    return true;
  }

  /** Log the first failure of a retried step, and again only when the reason changes. */
  #failOnce(reason: string): void {
    if (reason === this.#lastFailure) return;
    this.#lastFailure = reason;
    this.#o.hooks.note(this, `${this.#state}: ${reason}; retrying`);
  }

  // ---- connection --------------------------------------------------------------------------------------

  #attach(conn: LiveConnection): void {
    this.#lost = undefined;
    this.#reset = undefined;
    this.#paused = false;
    this.machine.attach(conn);
    this.#unsubscribe = [
      conn.qmp.onState((s, err) => {
        if (s === 'disconnected' || s === 'closed' || s === 'reconnecting') {
          this.#lost ??= err ? line(err) : `QMP connection ${s}`;
          this.#wake();
        }
      }),
      conn.qmp.onEvent((e) => {
        const ev: VmEvent = { source: 'qmp', name: e.event, time: e.time, data: e.data };
        this.#onEvent(ev);
      }),
    ];
    if (conn.qmp.state !== 'connected') this.#lost ??= `QMP connection ${conn.qmp.state}`;
  }

  #onEvent(ev: VmEvent): void {
    this.stats.events++;
    this.#o.hooks.event(this, ev);
    this.machine.publish(ev);
    if (ev.name === 'STOP') this.#paused = true;
    else if (ev.name === 'RESUME') this.#paused = false;
    else if (RESET_EVENTS.has(ev.name)) {
      const reason = typeof ev.data.reason === 'string' ? `, ${sanitize(ev.data.reason, 40)}` : '';
      this.#reset ??= `QMP ${ev.name}${reason}`;
    }
    // Event policies hear every event; the engine skips those whose requirements are unmet.
    this.#engine.handleEvent(ev).catch((e: unknown) => this.#o.hooks.error(this, e));
    this.#wake();
  }

  async #teardown(): Promise<void> {
    // Everything that names the current connection is let go before the first await: a lost VM's
    // teardown runs in the background while the loop may attach a new connection.
    const kw = this.#kwatch;
    this.#kwatch = undefined;
    for (const u of this.#unsubscribe) u();
    this.#unsubscribe = [];
    const conn = this.machine.detach();
    if (kw) await kw.disarm().catch((e: unknown) => this.#o.hooks.note(this, `watchpoints: ${line(e)}`));
    if (conn) await conn.close().catch(() => undefined);
  }

  async #cpuCheck(k: Kernel): Promise<string | undefined> {
    const now = this.#o.deps.now();
    if (now - this.#lastCpuCheck < this.#o.identityCheckMs) return undefined;
    this.#lastCpuCheck = now;
    const r = await runsOnCpu(k, this.machine.vcpus);
    return r && !r.live ? `the vCPU no longer runs the kernel bootstrapped (${r.why})` : undefined;
  }

  // ---- watchpoints ------------------------------------------------------------------------------------

  /**
   * Arm write watchpoints against a freshly bootstrapped kernel, when the VM has a GDB stub and
   * memory-access runs. A stub that is missing, busy or refuses is said once; watching goes on with sweeps.
   */
  async #armWatch(k: Kernel): Promise<void> {
    await this.#disarmWatch();
    const conn = this.machine.connection;
    const stub = conn?.gdb;
    const plan = watchPlan(this.#engine);
    if (!plan.on) return;
    if (!stub) {
      if (conn?.gdbProblem) this.#gdbOnce(`no GDB stub watchpoints (${conn.gdbProblem}); sweeps only`);
      return;
    }
    try {
      const kw = await KernelWatch.arm({
        stub,
        kernel: k,
        targets: (this.#o.deps.watchTargets ?? criticalWatchTargets)(k),
        engine: () => this.#engine,
        pause: plan.pause,
        describeWriter: this.#o.deps.describeWriter ?? describeWriter,
        onEvent: (ev) => {
          this.stats.events++;
          this.#o.hooks.event(this, ev);
          this.machine.publish(ev);
        },
        onHeld: () => {
          this.#paused = true;
          this.#wake();
        },
        onError: (e) => this.#o.hooks.note(this, `watchpoints: ${line(e)}`),
        now: () => this.#o.deps.now(),
      });
      this.#kwatch = kw;
      this.stats.watchArms++;
      const failed =
        kw.failed.length > 0 ? `; refused: ${kw.failed.map((f) => f.target.label).join(', ')}` : '';
      // Said at every arming (each boot); a problem after it is news again.
      this.#gdbSaid = undefined;
      this.#o.hooks.note(
        this,
        `write watchpoints on ${kw.armed.map((t) => t.label).join(', ')} via GDB stub ${stub.address}${failed}`,
      );
    } catch (e) {
      this.#gdbOnce(`watchpoints not armed through GDB stub ${stub.address}: ${line(e)}; sweeps only`);
    }
  }

  /** Take the watchpoints out (the VM keeps its run state); before a re-bootstrap and on teardown. */
  async #disarmWatch(): Promise<void> {
    const kw = this.#kwatch;
    this.#kwatch = undefined;
    if (kw) await kw.disarm().catch((e: unknown) => this.#o.hooks.note(this, `watchpoints: ${line(e)}`));
  }

  /**
   * Why the VM stopped, when it has a GDB stub: a hit of ours being handled is 'transient' (status
   * "debug", or already running again), a hit held for a pause response is 'held'; anything else is a pause.
   */
  async #stubStop(): Promise<'transient' | 'held' | 'paused'> {
    const conn = this.machine.connection;
    if (!conn?.gdb) return 'paused';
    if (conn.gdb.held) return 'held';
    try {
      const s = await conn.qmp.queryStatus();
      return s.running || s.status === 'debug' ? 'transient' : 'paused';
    } catch {
      return 'paused';
    }
  }

  #gdbOnce(message: string): void {
    if (message === this.#gdbSaid) return;
    this.#gdbSaid = message;
    this.#o.hooks.note(this, message);
  }

  /** Sweep period: the shortest interval of the polling policies that run here. */
  #tick(): number {
    const intervals = this.engine
      .status()
      .filter((s) => s.state === 'active' && s.intervalMs !== undefined)
      .map((s) => s.intervalMs!);
    const t = intervals.length > 0 ? Math.min(...intervals) : IDLE_TICK_MS;
    return Math.min(MAX_TICK_MS, Math.max(MIN_TICK_MS, t));
  }

  // ---- waiting ---------------------------------------------------------------------------------------

  #wait(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#wakeup === done) this.#wakeup = undefined;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.#wakeup = done;
    });
  }

  #wake(): void {
    this.#wakeup?.();
  }
}
