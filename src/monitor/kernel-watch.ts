// Event-driven memory access enforcement for one watched VM: write watchpoints through QEMU's GDB stub on
// the kernel entries rootkits hook first (memory-access's criticalWatchTargets), each hit turned into a
// VmEvent for the engine, which routes it to memory-access at once — no waiting for the next sweep.
//
// Lifecycle (driven by the target's loop): armed after each bootstrap against that kernel; disarmed before
// a reset/reboot re-bootstrap, on a lost connection and on stop (the stub's close then detaches, which
// resumes the VM). At a hit the VM is stopped: the writer's registers and the value written are read
// there, then the VM is continued — unless memory-access responds with a pause, in which case the VM is
// held stopped until the engine has raised the alert and stays so if the pause was carried out.

import type { Kernel } from '../os/linux/kernel.js';
import type { Engine } from '../policy/engine.js';
import {
  armWatchpoints,
  type WatchpointArm,
  type WatchpointClient,
  type WatchTarget,
} from '../policy/policies/kernel-watchpoints.js';
import { memoryAccessPolicy } from '../policy/policies/memory-access.js';
import type { Alert } from '../policy/types.js';
import { VigilError } from '../util/errors.js';
import type { StopReply } from '../vmm/gdb/stop-reply.js';
import type { VmEvent, X86Registers } from '../vmm/types.js';
import { MONITOR_ORIGIN } from './sinks/types.js';

/** The policy whose events the watchpoints feed. */
export const WATCH_POLICY = memoryAccessPolicy.id;

/** What the monitor uses of a GDB stub session (vmm/qemu's QemuGdbStub has it). */
export interface WatchStub extends WatchpointClient {
  readonly address: string;
  readonly connected: boolean;
  /** Set while the VM is held stopped at a hit for a pause response (kept paused on detach). */
  held: boolean;
  registers(thread?: string): Promise<X86Registers>;
  readMemory(va: bigint, length: number, thread?: string): Promise<Buffer>;
}

/** Whether an engine wants watchpoints (memory-access runs) and whether its hits pause the VM. */
export function watchPlan(engine: Pick<Engine<Kernel>, 'status'>): { on: boolean; pause: boolean } {
  const s = engine.status().find((p) => p.id === WATCH_POLICY);
  return {
    on: s?.state === 'active',
    pause: s?.response === 'pause' || s?.response === 'dump-and-pause',
  };
}

export interface KernelWatchOptions {
  stub: WatchStub;
  kernel: Kernel;
  targets: readonly WatchTarget[];
  /** The engine at the time of a hit (a new boot gets a new one). */
  engine(): Pick<Engine<Kernel>, 'handleEvent'>;
  /** Hold the VM at a hit until the engine has answered (memory-access responds with a pause). */
  pause: boolean;
  /** The writer, from its registers at the hit (memory-access's describeWriter). */
  describeWriter(kernel: Kernel, regs: X86Registers): Record<string, unknown>;
  /** Every hit, before the engine sees it (metrics, the machine's event stream). */
  onEvent(ev: VmEvent): void;
  /** The VM stays stopped at this hit: the pause response was carried out. */
  onHeld(ev: VmEvent, alerts: readonly Alert[]): void;
  onError(e: unknown): void;
  now?: () => number;
}

export class KernelWatch {
  readonly #o: KernelWatchOptions;
  readonly #arm: WatchpointArm;
  readonly #loop: Promise<void>;
  /** Hits seen, for status displays and tests. */
  hits = 0;

  private constructor(o: KernelWatchOptions, arm: WatchpointArm) {
    this.#o = o;
    this.#arm = arm;
    this.#loop = this.#run();
  }

  /** Set the watchpoints with the VM stopped for the inserts; it runs on afterwards if it ran before. */
  static async arm(o: KernelWatchOptions): Promise<KernelWatch> {
    if (o.targets.length === 0) {
      throw new VigilError(
        MONITOR_ORIGIN,
        'not-found',
        'no sys_call_table or idt_table in the kernel symbols',
      );
    }
    const arm = await o.stub.whileStopped(() =>
      armWatchpoints(o.stub, o.targets, {
        resume: false,
        hold: () => o.pause,
        inspect: (stop, t) => inspect(o, stop, t),
        ...(o.now ? { now: o.now } : {}),
      }),
    );
    if (arm.armed.length === 0) {
      await arm.disarm();
      const why = arm.failed.map((f) => `${f.target.label}: ${f.reason}`).join('; ');
      throw new VigilError(MONITOR_ORIGIN, 'unsupported', `the GDB stub set no watchpoint (${why})`);
    }
    return new KernelWatch(o, arm);
  }

  get armed(): readonly WatchTarget[] {
    return this.#arm.armed;
  }

  get failed(): readonly { target: WatchTarget; reason: string }[] {
    return this.#arm.failed;
  }

  /** Remove the watchpoints (the VM keeps its run state) and wait for the hits in hand to be handed over. */
  async disarm(): Promise<void> {
    await this.#arm.disarm();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const o = this.#o;
    try {
      for await (const ev of this.#arm.events) {
        this.hits++;
        o.onEvent(ev);
        const handled = o.engine().handleEvent(ev);
        if (!o.pause) {
          handled.catch((e: unknown) => o.onError(e));
          continue;
        }
        // Held at the hit: nothing runs in the guest until the engine has decided.
        let alerts: Alert[] = [];
        try {
          alerts = await handled;
        } catch (e) {
          o.onError(e);
        }
        const paused = alerts.some(
          (a) => a.policy === WATCH_POLICY && (a.response ?? []).some((r) => r.action === 'pause' && r.ok),
        );
        if (paused) {
          o.stub.held = true;
          o.onHeld(ev, alerts);
        } else {
          await o.stub.continue();
        }
      }
    } catch (e) {
      o.onError(e);
    }
  }
}

/** At a hit, with the VM stopped there: the writer's registers and code, and the value now in place. */
async function inspect(
  o: KernelWatchOptions,
  stop: StopReply,
  t: WatchTarget,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const regs = await o.stub.registers(stop.thread);
  out.rip = `0x${regs.rip.toString(16)}`;
  try {
    out.value = (await o.stub.readMemory(t.va, t.len, stop.thread)).toString('hex');
  } catch (e) {
    out.valueError = e instanceof Error ? e.message : String(e);
  }
  try {
    // The guest wrote since the last sweep (a module may even have been loaded): read afresh.
    o.kernel.refresh();
    out.writer = o.describeWriter(o.kernel, regs);
  } catch (e) {
    out.writerError = e instanceof Error ? e.message : String(e);
  }
  return out;
}
