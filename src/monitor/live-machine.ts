// One Machine for the whole life of a watched VM, across QMP reconnections and QEMU restarts. The policy
// engine (and the alert lifecycle it keeps) is built once per VM around a Machine; the QMP connection and
// the RAM file under it change when QEMU restarts. LiveMachine forwards to whichever connection is current
// and fails with a clear error while there is none.

import { BoundedQueue } from '../vmm/qmp/bounded-queue.js';
import type { QmpConnectionState, QmpEvent, QmpStatus } from '../vmm/qmp/types.js';
import type {
  GuestAgent,
  Machine,
  MachineControl,
  MachineCpuState,
  MachineDebug,
  PhysicalMemory,
  PhysRange,
  Vcpu,
  VmEvent,
} from '../vmm/types.js';
import { VigilError } from '../util/errors.js';
import type { WatchStub } from './kernel-watch.js';

/** The QMP surface the monitor uses (QmpClient has it). */
export interface QmpLike {
  readonly state: QmpConnectionState;
  onEvent(listener: (e: QmpEvent) => void): () => void;
  onState(listener: (state: QmpConnectionState, error?: VigilError) => void): () => void;
  queryStatus(): Promise<QmpStatus>;
}

/** A live connection to one QEMU (connectQemu's QemuMachine is one). */
export interface LiveConnection extends Machine {
  readonly qmp: QmpLike;
  readonly control: MachineControl;
  /** How RAM is reached ("shm", "proc-mem"), for logs. */
  readonly memoryAccess?: string;
  /** Why the VM's qemu-guest-agent is not reachable (connectQemu's `agentProblem`). */
  readonly agentProblem?: string;
  /** The GDB stub session, when one is attached (connectQemu's `gdb`). */
  readonly gdb?: WatchStub;
  /** Why no GDB stub is attached although one was asked for. */
  readonly gdbProblem?: string;
}

const EVENT_BUFFER = 1024;

export class LiveMachine implements Machine {
  readonly name: string;
  #conn: LiveConnection | undefined;
  readonly #streams = new Set<BoundedQueue<VmEvent>>();
  readonly #detachedMemory: PhysicalMemory;
  readonly events: AsyncIterable<VmEvent>;
  readonly control: MachineControl;

  constructor(name: string) {
    this.name = name;
    const down = (): never => {
      throw new VigilError('vmm', 'state', `VM ${name} is not connected`);
    };
    this.#detachedMemory = {
      description: `VM ${name} (not connected)`,
      ranges: [] as PhysRange[],
      read: down,
      readStrict: down,
      close: () => undefined,
    };
    this.events = {
      [Symbol.asyncIterator]: () => {
        const q = new BoundedQueue<VmEvent>(EVENT_BUFFER, { onClose: () => this.#streams.delete(q) });
        this.#streams.add(q);
        return q;
      },
    };
    const current = () => this.#conn?.control ?? down();
    this.control = {
      pause: async () => current().pause(),
      resume: async () => current().resume(),
      dump: async (path) => current().dump(path),
      isPaused: async () => current().isPaused(),
    };
  }

  /** The current connection, if any. */
  get connection(): LiveConnection | undefined {
    return this.#conn;
  }

  get connected(): boolean {
    return this.#conn !== undefined;
  }

  get memory(): PhysicalMemory {
    return this.#conn?.memory ?? this.#detachedMemory;
  }

  get vcpus(): readonly Vcpu[] {
    return this.#conn?.vcpus ?? [];
  }

  /** The current connection's GDB stub, if it has one. */
  get debug(): MachineDebug | undefined {
    return this.#conn?.debug;
  }

  /** The current connection's qemu-guest-agent, if it has one that answered. */
  get agent(): GuestAgent | undefined {
    return this.#conn?.agent;
  }

  /** Why the current connection has no agent although the VM has (or was said to have) one. */
  get agentProblem(): string | undefined {
    return this.#conn?.agentProblem;
  }

  /** The current connection's vCPU state beyond registers (syscall entry MSRs), when it offers one. */
  get cpuState(): MachineCpuState | undefined {
    return this.#conn?.cpuState;
  }

  /** The current QMP client (policies that query QEMU use it); throws while disconnected. */
  get qmp(): QmpLike {
    if (!this.#conn) throw new VigilError('vmm', 'state', `VM ${this.name} is not connected`);
    return this.#conn.qmp;
  }

  attach(conn: LiveConnection): void {
    this.#conn = conn;
  }

  /** Forget the current connection (the caller closes it). */
  detach(): LiveConnection | undefined {
    const c = this.#conn;
    this.#conn = undefined;
    return c;
  }

  /** Hand an event to every events() stream (bounded: a stream nobody reads drops its oldest). */
  publish(ev: VmEvent): void {
    for (const q of this.#streams) q.push(ev);
  }

  /** End the event streams. The connection is closed by its owner. */
  async close(): Promise<void> {
    for (const q of [...this.#streams]) q.end();
  }
}
