// Test doubles for the policy layer: a manual clock, a fake Machine with recorded control calls, and a
// few policy builders. No guest needed, and no test waits on real time.
import type { Machine, MachineControl, PhysicalMemory, VmEvent } from '../vmm/types.js';
import type { Clock } from './policy.js';
import type { Finding } from './types.js';

/** A clock that moves only when told; timers fire in time order during `advance`. */
export class FakeClock implements Clock {
  t: number;
  #id = 0;
  readonly timers = new Map<number, { at: number; fn: () => void }>();

  constructor(start = Date.UTC(2025, 0, 2, 3, 4, 5)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimer(fn: () => void, ms: number): () => void {
    const id = ++this.#id;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return () => this.timers.delete(id);
  }

  /** Move time forward, firing due timers (each at its own time) in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
  }
}

const emptyMemory: PhysicalMemory = {
  description: 'no memory (test)',
  ranges: [],
  read: (_p, length) => Buffer.alloc(length),
  readStrict: () => {
    throw new Error('no memory');
  },
  close: () => undefined,
};

export interface FakeControl extends MachineControl {
  calls: string[];
  paused: boolean;
  failDump?: Error;
}

export function fakeControl(): FakeControl {
  const c: FakeControl = {
    calls: [],
    paused: false,
    async pause() {
      c.calls.push('pause');
      c.paused = true;
    },
    async resume() {
      c.calls.push('resume');
      c.paused = false;
    },
    async dump(path: string) {
      c.calls.push(`dump ${path}`);
      if (c.failDump) throw c.failDump;
    },
    async isPaused() {
      return c.paused;
    },
  };
  return c;
}

/** A live-looking machine (events + control) or, with `dump: true`, a dump-like one (neither). */
export function fakeMachine(opts: { dump?: boolean; control?: FakeControl } = {}): Machine {
  const events: AsyncIterable<VmEvent> = {
    [Symbol.asyncIterator]: () => ({ next: () => new Promise<IteratorResult<VmEvent>>(() => undefined) }),
  };
  return {
    name: 'test-vm',
    memory: emptyMemory,
    vcpus: [],
    ...(opts.dump ? {} : { events, control: opts.control ?? fakeControl() }),
    close: async () => undefined,
  };
}

export const finding = (key: string, extra: Partial<Finding> = {}): Finding => ({
  key,
  severity: 'high',
  summary: `saw ${key}`,
  evidence: { key },
  ...extra,
});

/** A promise with its resolve exposed. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Let pending promise callbacks run. */
export const flush = (): Promise<void> => new Promise((r) => setImmediate(r));
