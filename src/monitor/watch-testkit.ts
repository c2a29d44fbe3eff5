// Test doubles for the monitor: a QMP connection whose events and drops a test triggers, a kernel with
// just enough surface for the target's checks, and polling helpers.
import assert from 'node:assert/strict';
import type { Kernel } from '../os/linux/kernel.js';
import { fakeControl } from '../policy/testkit.js';
import { VigilError } from '../util/errors.js';
import type { QmpConnectionState, QmpEvent, QmpStatus } from '../vmm/qmp/types.js';
import type { PhysicalMemory } from '../vmm/types.js';
import type { LiveConnection, QmpLike } from './live-machine.js';

export class FakeQmp implements QmpLike {
  state: QmpConnectionState = 'connected';
  status: QmpStatus = { status: 'running', running: true };
  readonly #events = new Set<(e: QmpEvent) => void>();
  readonly #states = new Set<(s: QmpConnectionState, e?: VigilError) => void>();

  onEvent(l: (e: QmpEvent) => void) {
    this.#events.add(l);
    return () => this.#events.delete(l);
  }

  onState(l: (s: QmpConnectionState, e?: VigilError) => void) {
    this.#states.add(l);
    return () => this.#states.delete(l);
  }

  async queryStatus() {
    return this.status;
  }

  emit(event: string, data: Record<string, unknown> = {}) {
    for (const l of [...this.#events]) l({ event, data, time: Date.now() });
  }

  drop() {
    this.state = 'disconnected';
    for (const l of [...this.#states])
      l('disconnected', new VigilError('vmm', 'io', 'closed by the other side'));
  }
}

export const memory: PhysicalMemory = {
  description: 'test',
  ranges: [],
  read: (_p, n) => Buffer.alloc(n),
  readStrict: (_p, n) => Buffer.alloc(n),
  close: () => undefined,
};

export type FakeConn = LiveConnection & { qmp: FakeQmp; closed: boolean };

export function fakeConn(): FakeConn {
  const c: FakeConn = {
    name: 'vm',
    memory,
    vcpus: [],
    control: fakeControl(),
    qmp: new FakeQmp(),
    memoryAccess: 'shm',
    closed: false,
    async close() {
      c.closed = true;
    },
  };
  return c;
}

export interface FakeKernel {
  n: number;
  state: number;
  refreshed: number;
}

/** Enough of a Kernel for the target: an identity, a system_state to read, refresh(). */
export function fakeKernel(n: number): Kernel & FakeKernel {
  const k = {
    n,
    state: 3,
    refreshed: 0,
    release: `6.1.0-${n}`,
    banner: { text: `Linux version 6.1.0-${n} (test) #1`, release: `6.1.0-${n}` },
    kaslr: { virtualOffset: BigInt(n) << 21n, physBase: 0n, physicalBase: 0n },
    symbols: { address: (name: string) => (name === 'system_state' ? 0x1000n : undefined) },
    types: {
      enumValue: (name: string) => {
        const v = { SYSTEM_BOOTING: 0n, SYSTEM_RUNNING: 3n, SYSTEM_RESTART: 6n }[name];
        if (v === undefined) throw new VigilError('os', 'not-found', name);
        return v;
      },
    },
    space: {
      mode: 4,
      translate: () => undefined,
      tryRead: () => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(k.state);
        return b;
      },
    },
    memory,
    issues: { items: [] },
    refresh() {
      k.refreshed++;
    },
  };
  return k as unknown as Kernel & FakeKernel;
}

export async function waitFor(what: string, pred: () => boolean, timeoutMs = 3000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > timeoutMs) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
