import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Kernel } from '../os/linux/kernel.js';
import { MemoryBaselineStore } from '../policy/baseline.js';
import { Engine } from '../policy/engine.js';
import { WATCH_EVENT, type WatchTarget } from '../policy/policies/kernel-watchpoints.js';
import { definePolicy } from '../policy/policy.js';
import type { Alert, Finding } from '../policy/types.js';
import { VigilError } from '../util/errors.js';
import type { StopReply } from '../vmm/gdb/stop-reply.js';
import type { DebugHandle, MachineDebug, VmEvent, X86Registers } from '../vmm/types.js';
import { KernelWatch, watchPlan, type KernelWatchOptions, type WatchStub } from './kernel-watch.js';
import { WatchedTarget, type TargetState } from './target-manager.js';
import { FakeQmp, fakeConn, fakeKernel, waitFor, type FakeConn } from './watch-testkit.js';

const TABLE = 0xffffffff82000000n;
const TARGETS: WatchTarget[] = [
  { label: 'sys_call_table[62] (kill)', va: TABLE + 62n * 8n, len: 8, table: 'sys_call_table', nr: 62 },
  { label: 'idt[0x80]', va: 0xffffffff83000800n, len: 8, vector: 0x80 },
];
const WRITER_RIP = 0xffffffffc0001234n;

/**
 * A GDB stub session as QEMU behaves: commands only while stopped, a hit stops the VM (status "debug",
 * QMP STOP after the stop reply), continue resumes it (QMP RESUME).
 */
class FakeStub implements WatchStub {
  readonly address = '127.0.0.1:1234';
  connected = true;
  held = false;
  running = true;
  refuse = new Set<bigint>();
  readonly armed = new Map<bigint, number>();
  readonly memory = new Map<bigint, Buffer>();
  continues = 0;
  units = 0;
  readonly #listeners = new Set<(s: StopReply) => void>();

  constructor(readonly qmp: FakeQmp = new FakeQmp()) {}

  async watch(va: bigint, len: number): Promise<DebugHandle> {
    assert.equal(this.running, false, 'watchpoints are set with the VM stopped');
    if (this.refuse.has(va)) throw new VigilError('vmm', 'unsupported', 'no more debug registers');
    this.armed.set(va, len);
    return {
      remove: async () => {
        assert.equal(this.running, false, 'watchpoints are removed with the VM stopped');
        this.armed.delete(va);
      },
    };
  }

  async continue(): Promise<void> {
    this.held = false;
    if (this.running) return;
    this.continues++;
    this.running = true;
    this.qmp.status = { status: 'running', running: true };
    this.qmp.emit('RESUME');
  }

  async whileStopped<T>(fn: () => Promise<T>): Promise<T> {
    this.units++;
    const was = this.running;
    this.running = false;
    try {
      return await fn();
    } finally {
      if (was && !this.running) this.running = true;
    }
  }

  onStop(l: (s: StopReply) => void): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  #stop(s: Partial<StopReply>, status: string): void {
    this.running = false;
    this.qmp.status = { status, running: false };
    for (const l of [...this.#listeners])
      l({ kind: 'signal', signal: 5, registers: new Map(), raw: '', ...s });
    this.qmp.emit('STOP');
  }

  /** The guest writes `value` at `va` (inside a watched entry). */
  hit(va: bigint, value: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(value);
    this.memory.set(va, b);
    this.#stop({ thread: 'p01.01', watch: { kind: 'watch', address: va } }, 'debug');
  }

  /** A person's QMP `stop`: the stub sends a SIGINT stop reply. */
  userStop(): void {
    this.#stop({ signal: 2, thread: 'p01.01' }, 'paused');
  }

  async registers(thread?: string): Promise<X86Registers> {
    assert.equal(thread, 'p01.01');
    assert.equal(this.running, false, 'registers are read at the hit');
    return { rip: WRITER_RIP, rsp: 0n, cr0: 0n, cr3: 0n, cr4: 0n, efer: 0n, gsBase: 0xffff888000000000n };
  }

  async readMemory(va: bigint, length: number): Promise<Buffer> {
    assert.equal(this.running, false, 'the value is read at the hit');
    return this.memory.get(va) ?? Buffer.alloc(length);
  }
}

const describeWriter = (_k: Kernel, r: X86Registers) => ({
  rip: `0x${r.rip.toString(16)}`,
  text: `0x${r.rip.toString(16)} in module vk_wp+0x234`,
});

/** An engine stand-in whose answers a test controls. */
class FakeEngine {
  readonly events: VmEvent[] = [];
  answer: (ev: VmEvent) => Promise<Alert[]> = async () => [];
  handleEvent(ev: VmEvent): Promise<Alert[]> {
    this.events.push(ev);
    return this.answer(ev);
  }
}

function options(stub: FakeStub, engine: FakeEngine, extra: Partial<KernelWatchOptions> = {}) {
  const log = { events: 0, held: 0, errors: [] as unknown[] };
  const o: KernelWatchOptions = {
    stub,
    kernel: fakeKernel(1),
    targets: TARGETS,
    engine: () => engine,
    pause: false,
    describeWriter,
    onEvent: () => void log.events++,
    onHeld: () => void log.held++,
    onError: (e) => void log.errors.push(e),
    now: () => 42,
    ...extra,
  };
  return { o, log };
}

const pauseAlert = (ok: boolean): Alert =>
  ({
    policy: 'memory-access',
    response: [
      { action: 'alert', ok: true },
      { action: 'pause', ok },
    ],
  }) as Alert;

describe('kernel watchpoints', () => {
  it('arms in one stopped section, reads the writer at a hit, hands the event over and continues', async () => {
    const stub = new FakeStub();
    const engine = new FakeEngine();
    const { o, log } = options(stub, engine);
    const kw = await KernelWatch.arm(o);
    assert.deepEqual([...stub.armed.keys()], [TARGETS[0]!.va, TARGETS[1]!.va]);
    assert.equal(stub.units, 1);
    assert.equal(stub.running, true, 'the VM runs on after arming');
    stub.hit(TARGETS[0]!.va, 0xffffffffc0001040n);
    await waitFor('the event', () => engine.events.length === 1);
    await waitFor('the VM continued', () => stub.running);
    const ev = engine.events[0]!;
    assert.deepEqual(ev, {
      source: 'gdb',
      name: WATCH_EVENT,
      time: 42,
      data: {
        target: 'sys_call_table[62] (kill)',
        va: `0x${TARGETS[0]!.va.toString(16)}`,
        address: `0x${TARGETS[0]!.va.toString(16)}`,
        kind: 'watch',
        thread: 'p01.01',
        table: 'sys_call_table',
        nr: 62,
        rip: '0xffffffffc0001234',
        value: '401000c0ffffffff',
        writer: { rip: '0xffffffffc0001234', text: '0xffffffffc0001234 in module vk_wp+0x234' },
      },
    });
    assert.equal((o.kernel as unknown as { refreshed: number }).refreshed, 1, 'read afresh at the hit');
    assert.deepEqual([log.events, kw.hits, stub.continues], [1, 1, 1]);
    // Another stop is not ours: the VM stays stopped for whoever stopped it.
    stub.userStop();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual([engine.events.length, stub.continues, stub.running], [1, 1, false]);
    await stub.continue();
    await kw.disarm();
    assert.equal(stub.armed.size, 0);
    assert.equal(stub.running, true);
    assert.deepEqual(log.errors, []);
  });

  it('with a pause response, holds the VM until the engine answered, and keeps it if it paused', async () => {
    const stub = new FakeStub();
    const engine = new FakeEngine();
    let answer!: (alerts: Alert[]) => void;
    engine.answer = () => new Promise((r) => (answer = r));
    const { o, log } = options(stub, engine, { pause: true });
    const kw = await KernelWatch.arm(o);
    stub.hit(TARGETS[1]!.va, 0x1234n);
    await waitFor('the event', () => engine.events.length === 1);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(stub.running, false, 'held while the engine decides');
    answer([pauseAlert(false)]); // the pause failed: let it run
    await waitFor('continued', () => stub.running);
    assert.deepEqual([log.held, stub.held], [0, false]);

    engine.answer = async () => [pauseAlert(true)];
    stub.hit(TARGETS[0]!.va, 0x5678n);
    await waitFor('held', () => log.held === 1);
    assert.deepEqual([stub.running, stub.held, stub.continues], [false, true, 1]);
    await kw.disarm();
    assert.equal(stub.running, false, 'disarming leaves a held VM stopped');
  });

  it('refuses to arm nothing, and leaves nothing behind when the stub refuses everything', async () => {
    const stub = new FakeStub();
    await assert.rejects(
      KernelWatch.arm(options(stub, new FakeEngine(), { targets: [] }).o),
      /no sys_call_table or idt_table/,
    );
    for (const t of TARGETS) stub.refuse.add(t.va);
    await assert.rejects(
      KernelWatch.arm(options(stub, new FakeEngine()).o),
      /set no watchpoint \(sys_call_table\[62\] \(kill\): no more debug registers; idt\[0x80\]/,
    );
    assert.equal(stub.armed.size, 0);
    assert.equal(stub.running, true);
  });

  it('the plan follows memory-access: off when it does not run, pausing when it responds so', () => {
    const plan = (state: string, response: string) =>
      watchPlan({ status: () => [{ id: 'memory-access', state, response }] as never });
    assert.deepEqual(plan('active', 'alert'), { on: true, pause: false });
    assert.deepEqual(plan('active', 'dump-and-pause'), { on: true, pause: true });
    assert.deepEqual(plan('skipped', 'pause'), { on: false, pause: true });
    assert.deepEqual(watchPlan({ status: () => [] }), { on: false, pause: false });
  });
});

// ---- the watched target's lifecycle -------------------------------------------------------------------

interface Harness {
  target: WatchedTarget;
  stubs: FakeStub[];
  conns: FakeConn[];
  transitions: [TargetState, TargetState, string][];
  notes: string[];
  health: Finding[];
  seen: VmEvent[];
  noStub?: string;
}

function harness(response: 'alert' | 'pause' = 'alert'): Harness {
  const h: Harness = {
    target: undefined as unknown as WatchedTarget,
    stubs: [],
    conns: [],
    transitions: [],
    notes: [],
    health: [],
    seen: [],
  };
  // Stands in for memory-access: same id, so the target arms for it, and it hears the watchpoint events.
  const policy = definePolicy<Kernel>({
    id: 'memory-access',
    title: 'memory-access',
    description: 'records watchpoint events',
    severity: 'high',
    requires: ['kernel'],
    defaultIntervalMs: 60_000,
    poll: () => [],
    eventNames: [WATCH_EVENT],
    onEvent(ev): Finding[] {
      h.seen.push(ev);
      return [
        {
          key: `watch:${String(ev.data.target)}`,
          severity: 'high',
          summary: 'written',
          evidence: { ...ev.data },
        },
      ];
    },
  });
  let kernels = 0;
  h.target = new WatchedTarget({
    spec: { name: 'vm1', qmp: '/run/vigil/vm1.qmp' },
    makeEngine: (machine) =>
      new Engine<Kernel>({
        vm: 'vm1',
        machine,
        policies: [policy],
        baselines: new MemoryBaselineStore(),
        config: { policies: { 'memory-access': { response } } },
      }),
    retry: { reconnect: { initialMs: 20, maxMs: 50 }, bootstrap: { initialMs: 10, maxMs: 30 } },
    identityCheckMs: 60_000,
    deps: {
      async connect() {
        const c = fakeConn();
        h.conns.push(c);
        if (h.noStub !== undefined) return Object.assign(c, { gdbProblem: h.noStub });
        const stub = new FakeStub(c.qmp);
        h.stubs.push(stub);
        return Object.assign(c, { gdb: stub, debug: stub as unknown as MachineDebug });
      },
      bootstrap: async () => ({ ok: true, kernel: fakeKernel(++kernels), ms: 1 }),
      socketStamp: () => 's1',
      now: () => Date.now(),
      watchTargets: () => TARGETS,
      describeWriter,
    },
    hooks: {
      transition: (_t, from, to, reason) => h.transitions.push([from, to, reason]),
      note: (_t, m) => h.notes.push(m),
      health: (_t, f) => h.health.push(f),
      event: () => undefined,
      sweep: () => undefined,
      error: (_t, e) => assert.fail(`target error: ${String(e)}`),
    },
  });
  return h;
}

describe('watchpoints in the watched target', () => {
  it('armed after bootstrap, a hit reaches the policy without a pause, re-armed after a reset, gone on stop', async () => {
    const h = harness();
    h.target.start();
    await waitFor('watching', () => h.target.state === 'watching');
    const stub = h.stubs[0]!;
    assert.equal(stub.armed.size, 2);
    assert.match(
      h.notes.join('\n'),
      /write watchpoints on sys_call_table\[62\] \(kill\), idt\[0x80\] via GDB stub/,
    );

    stub.hit(TARGETS[0]!.va, 0xffffffffc0001040n);
    await waitFor('the policy heard the hit', () => h.seen.length === 1);
    await waitFor('continued', () => stub.running);
    assert.equal(h.seen[0]!.data.writer !== undefined, true);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(
      h.transitions.every(([, to]) => to !== 'paused'),
      'a hit stops the VM for a moment: not a pause',
    );
    assert.equal(h.target.machine.debug, stub);

    // A reset: watchpoints out before the re-bootstrap, in again against the new kernel.
    const t0 = h.transitions.length;
    h.conns[0]!.qmp.emit('RESET', { reason: 'guest-reset' });
    await waitFor('watching again', () => h.transitions.length > t0 + 1 && h.target.state === 'watching');
    assert.equal(h.target.kernel?.release, '6.1.0-2');
    assert.equal(h.target.stats.watchArms, 2);
    assert.equal(h.notes.filter((n) => /^write watchpoints on /.test(n)).length, 2, 'said at each arming');
    assert.equal(stub.armed.size, 2);

    // A person pauses the VM: a real pause, and vigil does not resume it.
    const continues = stub.continues;
    stub.userStop();
    await waitFor('paused', () => h.target.state === 'paused');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(stub.continues, continues);
    assert.equal(stub.running, false);

    await h.target.stop();
    assert.equal(stub.armed.size, 0, 'disarmed on stop');
    assert.equal(h.conns[0]!.closed, true, 'and the connection (the stub with it) closed');
  });

  it('holds the VM at a hit when memory-access pauses it, and shows the target paused', async () => {
    const h = harness('pause');
    h.target.start();
    await waitFor('watching', () => h.target.state === 'watching');
    const stub = h.stubs[0]!;
    stub.hit(TARGETS[0]!.va, 0xffffffffc0001040n);
    await waitFor('paused', () => h.target.state === 'paused');
    assert.match(h.transitions.at(-1)![2], /held at a watchpoint hit/);
    assert.deepEqual([stub.running, stub.held], [false, true]);
    // A person resumes it.
    await stub.continue();
    await waitFor('watching', () => h.target.state === 'watching');
    await h.target.stop();
  });

  it('no stub: said once, sweeps go on', async () => {
    const h = harness();
    h.noStub = 'GDB stub at 127.0.0.1:1234 is in use by another debugger';
    h.target.start();
    await waitFor('watching', () => h.target.state === 'watching');
    h.conns[0]!.qmp.emit('RESET');
    await waitFor(
      'watching again',
      () => h.target.kernel?.release === '6.1.0-2' && h.target.state === 'watching',
    );
    assert.deepEqual(
      h.notes.filter((n) => /GDB stub/.test(n)),
      ['no GDB stub watchpoints (GDB stub at 127.0.0.1:1234 is in use by another debugger); sweeps only'],
    );
    assert.equal(h.target.machine.debug, undefined);
    await h.target.stop();
  });
});
