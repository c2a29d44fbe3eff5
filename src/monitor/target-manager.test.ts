import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Kernel } from '../os/linux/kernel.js';
import { MemoryBaselineStore } from '../policy/baseline.js';
import { Engine } from '../policy/engine.js';
import { definePolicy } from '../policy/policy.js';
import type { Finding } from '../policy/types.js';
import { VigilError } from '../util/errors.js';
import type { QmpStatus } from '../vmm/qmp/types.js';
import type { LiveBootstrap } from '../os/linux/live-kernel.js';
import { WatchedTarget, type TargetState } from './target-manager.js';
import { fakeConn, fakeKernel, sleep, waitFor, type FakeConn, type FakeKernel } from './watch-testkit.js';

interface Harness {
  target: WatchedTarget;
  conns: FakeConn[];
  polls: (Kernel & FakeKernel)[];
  transitions: [TargetState, TargetState, string][];
  notes: string[];
  health: Finding[];
  events: string[];
  env: {
    stamp: string | undefined;
    failConnect: boolean;
    bootScript: (LiveBootstrap | 'kernel')[];
    kernels: number;
    pollDelayMs: number;
    connectCalls: number;
  };
}

function harness(
  opts: { status?: QmpStatus; reconnect?: { initialMs: number; maxMs: number } } = {},
): Harness {
  const h: Harness = {
    conns: [],
    polls: [],
    transitions: [],
    notes: [],
    health: [],
    events: [],
    env: { stamp: 's1', failConnect: false, bootScript: [], kernels: 0, pollDelayMs: 0, connectCalls: 0 },
    target: undefined as unknown as WatchedTarget,
  };
  const probe = definePolicy<Kernel>({
    id: 'probe',
    title: 'probe',
    description: 'records each poll',
    severity: 'low',
    requires: ['kernel'],
    defaultIntervalMs: 100,
    async poll(ctx) {
      if (h.env.pollDelayMs > 0) await sleep(h.env.pollDelayMs);
      h.polls.push(ctx.requireKernel() as Kernel & FakeKernel);
      return [];
    },
  });
  h.target = new WatchedTarget({
    spec: { name: 'vm1', qmp: '/run/vigil/vm1.qmp' },
    makeEngine: (machine) =>
      new Engine<Kernel>({ vm: 'vm1', machine, policies: [probe], baselines: new MemoryBaselineStore() }),
    retry: {
      reconnect: opts.reconnect ?? { initialMs: 20, maxMs: 50 },
      bootstrap: { initialMs: 10, maxMs: 30 },
    },
    identityCheckMs: 60_000,
    deps: {
      async connect() {
        h.env.connectCalls++;
        if (h.env.failConnect) throw new VigilError('vmm', 'io', 'connection refused');
        const c = fakeConn();
        if (opts.status) c.qmp.status = opts.status;
        h.conns.push(c);
        return c;
      },
      async bootstrap() {
        const next = h.env.bootScript.shift() ?? 'kernel';
        if (next !== 'kernel') return next;
        return { ok: true, kernel: fakeKernel(++h.env.kernels), ms: 1 };
      },
      socketStamp: () => h.env.stamp,
      now: () => Date.now(),
    },
    hooks: {
      transition: (_t, from, to, reason) => h.transitions.push([from, to, reason]),
      note: (_t, m) => h.notes.push(m),
      health: (_t, f) => h.health.push(f),
      event: (_t, e) => h.events.push(e.name),
      sweep: () => undefined,
      error: (_t, e) => assert.fail(`target error: ${String(e)}`),
    },
  });
  return h;
}

const states = (h: Harness) => h.transitions.map(([, to]) => to);

test('connects, retries the bootstrap until the kernel is up, then sweeps', async () => {
  const h = harness();
  h.env.bootScript = [
    { ok: false, reason: 'the kernel is still booting (SYSTEM_BOOTING)', ms: 1 },
    { ok: false, reason: 'the kernel is still booting (SYSTEM_BOOTING)', ms: 1 },
  ];
  h.target.start();
  await waitFor('watching', () => h.target.state === 'watching');
  assert.deepEqual(states(h), ['bootstrapping', 'watching']);
  assert.match(h.transitions[0]![2], /connected \(running, RAM via shm\)/);
  assert.match(h.transitions[1]![2], /kernel 6\.1\.0-1, KASLR offset 0x200000, bootstrap 1 ms/);
  assert.deepEqual(h.notes, [
    'bootstrapping: no running kernel yet: the kernel is still booting (SYSTEM_BOOTING); retrying',
  ]);
  await waitFor('two sweeps', () => h.polls.length >= 2);
  assert.ok(h.polls.every((k) => k.n === 1));
  assert.ok(h.polls[0]!.refreshed >= 2, 'the epoch moves before each sweep');
  await h.target.stop();
  assert.equal(h.target.state, 'stopped');
  assert.equal(h.conns[0]!.closed, true);
});

test('QMP STOP pauses the sweeps; RESUME moves the epoch and sweeps again', async () => {
  const h = harness();
  h.target.start();
  await waitFor('first sweep', () => h.polls.length >= 1);
  h.conns[0]!.qmp.emit('STOP');
  await waitFor('paused', () => h.target.state === 'paused');
  const polls = h.polls.length;
  const refreshed = h.polls[0]!.refreshed;
  await sleep(300);
  assert.equal(h.polls.length, polls, 'no sweep while paused');
  h.conns[0]!.qmp.emit('RESUME');
  await waitFor('sweeping again', () => h.polls.length > polls);
  assert.ok(h.polls[0]!.refreshed > refreshed);
  assert.deepEqual(states(h), ['bootstrapping', 'watching', 'paused', 'watching']);
  assert.deepEqual(h.events, ['STOP', 'RESUME']);
  await h.target.stop();
});

test('a VM paused when vigil connects is bootstrapped and left paused', async () => {
  const h = harness({ status: { status: 'paused', running: false } });
  h.target.start();
  await waitFor('paused', () => h.target.state === 'paused');
  assert.deepEqual(states(h), ['bootstrapping', 'paused']);
  assert.equal(h.polls.length, 0);
  await h.target.stop();
});

test('a guest reset re-bootstraps the new kernel and raises an info health alert', async () => {
  const h = harness();
  h.target.start();
  await waitFor('first sweep', () => h.polls.length >= 1);
  const firstEngine = h.target.engine;
  h.env.bootScript = [{ ok: false, reason: 'paging is off on the vCPU', ms: 1 }];
  h.conns[0]!.qmp.emit('RESET', { guest: true, reason: 'guest-reset' });
  await waitFor('second kernel swept', () => h.polls.some((k) => k.n === 2));
  assert.deepEqual(states(h), ['bootstrapping', 'watching', 'bootstrapping', 'watching']);
  assert.equal(h.transitions[2]![2], 'QMP RESET, guest-reset');
  assert.deepEqual(
    h.health.map((f) => [f.key, f.severity]),
    [['vm-reset', 'info']],
  );
  assert.equal(h.conns.length, 1, 'same connection');
  assert.notEqual(h.target.engine, firstEngine, 'a new boot gets a fresh alert lifecycle');
  await h.target.stop();
});

test('a kernel going down is noticed by the per-sweep memory check', async () => {
  const h = harness();
  h.target.start();
  await waitFor('first sweep', () => h.polls.length >= 1);
  h.polls[0]!.state = 6; // SYSTEM_RESTART: `reboot -f` in the guest, before QEMU resets
  await waitFor('second kernel', () => h.polls.some((k) => k.n === 2));
  assert.equal(h.transitions[2]![2], 'the kernel is going down (SYSTEM_RESTART)');
  await h.target.stop();
});

test('a lost connection raises vm-lost; the VM is watched again when its socket returns', async () => {
  const h = harness();
  h.target.start();
  await waitFor('first sweep', () => h.polls.length >= 1);
  h.env.stamp = undefined; // QEMU exited and removed its socket
  h.conns[0]!.qmp.emit('SHUTDOWN', { guest: false, reason: 'host-signal' });
  h.conns[0]!.qmp.drop();
  await waitFor('lost', () => h.target.state === 'lost');
  assert.equal(h.conns[0]!.closed, true);
  assert.deepEqual(
    h.health.map((f) => [f.key, f.severity]),
    [['vm-lost', 'medium']],
  );
  assert.match(h.health[0]!.summary, /lost VM vm1: .*closed by the other side/);
  const status = h.target.engine.status()[0]!;
  assert.equal(status.state, 'skipped');
  assert.match(status.reason ?? '', /VM lost/);
  await sleep(100);
  assert.equal(h.target.state, 'lost', 'stays lost while the socket is absent');
  h.env.stamp = 's2';
  await waitFor('watching again', () => h.target.state === 'watching' && h.polls.some((k) => k.n === 2));
  assert.deepEqual(states(h), [
    'bootstrapping',
    'watching',
    'lost',
    'connecting',
    'bootstrapping',
    'watching',
  ]);
  assert.equal(h.conns.length, 2);
  await h.target.stop();
});

test('connection failures back off; a socket that reappears is tried at once', async () => {
  const h = harness({ reconnect: { initialMs: 400, maxMs: 2000 } });
  h.env.failConnect = true;
  h.target.start();
  await sleep(300);
  assert.equal(h.target.state, 'connecting');
  assert.equal(h.env.connectCalls, 1, 'the next attempt waits 400 ms');
  assert.deepEqual(h.notes, ['connecting: cannot connect: vmm io: connection refused; retrying']);
  h.env.failConnect = false;
  await sleep(50);
  assert.equal(h.conns.length, 0, 'still in backoff for the same socket');
  h.env.stamp = 's2';
  await waitFor('connected', () => h.conns.length === 1, 200);
  await waitFor('watching', () => h.target.state === 'watching');
  await h.target.stop();
});

test('stop waits for the sweep in flight', async () => {
  const h = harness();
  h.env.pollDelayMs = 200;
  h.target.start();
  await waitFor('watching', () => h.target.state === 'watching');
  await sleep(50); // the first sweep is inside its 200 ms poll
  const t0 = Date.now();
  await h.target.stop();
  assert.ok(h.polls.length >= 1, 'the poll in flight completed');
  assert.ok(Date.now() - t0 >= 100);
  assert.equal(h.target.state, 'stopped');
  assert.equal(h.conns[0]!.closed, true);
  const before = h.polls.length;
  await sleep(250);
  assert.equal(h.polls.length, before, 'no sweep after stop');
});
