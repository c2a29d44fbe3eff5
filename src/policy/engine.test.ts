import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { VigilError } from '../util/errors.js';
import type { VmEvent } from '../vmm/types.js';
import { FileBaselineStore, MemoryBaselineStore, type KernelIdentity } from './baseline.js';
import { Engine, type EngineOptions } from './engine.js';
import { HEALTH_POLICY_ID, definePolicy, type Policy } from './policy.js';
import { FakeClock, deferred, fakeControl, fakeMachine, finding, flush } from './testkit.js';
import type { Alert, Finding, Sink } from './types.js';

interface FakeKernel {
  release: string;
}

const base = { title: 'test policy', description: 'for tests', severity: 'high' as const, requires: [] };

function poller(
  id: string,
  fn: Policy<FakeKernel>['poll'],
  extra: Partial<Policy<FakeKernel>> = {},
): Policy<FakeKernel> {
  return { ...base, id, poll: fn, ...extra };
}

function engine(opts: Partial<EngineOptions<FakeKernel>> & Pick<EngineOptions<FakeKernel>, 'policies'>) {
  const clock = (opts.clock as FakeClock | undefined) ?? new FakeClock();
  const delivered: Alert[] = [];
  const e = new Engine<FakeKernel>({
    vm: 'vm1',
    machine: fakeMachine(),
    clock,
    onAlert: (a) => {
      delivered.push(a);
    },
    ...opts,
  });
  return { e, clock, delivered };
}

const health = (alerts: Alert[]) => alerts.filter((a) => a.policy === HEALTH_POLICY_ID);

test('on a dump-like target, policies needing more are skipped with the reason', async () => {
  const ran: string[] = [];
  const mk = (id: string, extra: Partial<Policy<FakeKernel>>) =>
    poller(
      id,
      () => {
        ran.push(id);
        return [];
      },
      extra,
    );
  const policies = [
    mk('plain', {}),
    mk('needs-kernel', { requires: ['kernel'] }),
    mk('needs-live', { requires: ['live', 'kernel'] }),
    mk('needs-events-control', { requires: ['events', 'control'] }),
    mk('off', {}),
    definePolicy<FakeKernel>({ ...base, id: 'event-only', onEvent: () => [] }),
    definePolicy<FakeKernel>({ ...base, id: 'nothing' }),
  ];
  const { e } = engine({
    machine: fakeMachine({ dump: true }),
    policies,
    kernel: { release: '6.1' },
    config: { policies: { off: { enabled: false } } },
  });
  const status = Object.fromEntries(e.status().map((s) => [s.id, s]));
  assert.equal(e.target.description, 'a memory dump');
  assert.equal(status.plain!.state, 'active');
  assert.equal(status['needs-kernel']!.state, 'active');
  assert.equal(status['needs-live']!.reason, 'needs a live VM; target is a memory dump');
  assert.equal(
    status['needs-events-control']!.reason,
    'needs a QMP event stream and VM control (pause, resume, dump); target is a memory dump',
  );
  assert.deepEqual([status.off!.state, status.off!.reason], ['disabled', 'disabled in config']);
  assert.equal(status['event-only']!.reason, 'reacts to VM events only; target is a memory dump');
  assert.equal(status.nothing!.reason, 'has neither poll nor onEvent');
  assert.deepEqual(status.plain!.modes, ['poll']);

  const alerts = await e.runOnce();
  assert.deepEqual(ran, ['plain', 'needs-kernel']);
  assert.deepEqual(alerts, []);

  // Without a kernel, kernel policies are skipped with the bootstrap's reason.
  e.setKernel(undefined, undefined, 'bootstrap failed: no BTF in memory');
  const s2 = Object.fromEntries(e.status().map((s) => [s.id, s]));
  assert.equal(
    s2['needs-kernel']!.reason,
    'needs a Linux kernel found in memory: bootstrap failed: no BTF in memory',
  );
  assert.equal(
    s2['needs-live']!.reason,
    'needs a live VM; target is a memory dump; needs a Linux kernel found in memory: bootstrap failed: no BTF in memory',
  );
});

test('alerts raise once, clear after one poll without the key, and raise again when it returns', async () => {
  let seen: string[] = ['a'];
  const { e, delivered } = engine({
    policies: [poller('p', () => seen.map((k) => finding(k)), { technique: 'T1014' })],
  });
  const r1 = await e.sweep({ force: true });
  assert.deepEqual(
    r1.alerts.map((a) => a.key),
    ['a'],
  );
  assert.equal(r1.alerts[0]!.technique, 'T1014');
  assert.equal(r1.alerts[0]!.vm, 'vm1');
  assert.equal((await e.sweep({ force: true })).alerts.length, 0, 'persisting: quiet');
  seen = [];
  const r3 = await e.sweep({ force: true });
  assert.deepEqual(r3.runs[0]!.cleared, ['a']);
  seen = ['a'];
  assert.deepEqual(
    (await e.sweep({ force: true })).alerts.map((a) => a.key),
    ['a'],
    'back: raised again',
  );
  assert.equal(delivered.length, 2);
  assert.notEqual(delivered[0]!.id, delivered[1]!.id);
});

test('a throwing policy becomes one health alert, and the other policies still run', async () => {
  let fail = true;
  let ranAfter = 0;
  const { e } = engine({
    policies: [
      poller('broken', () => {
        if (fail) throw new VigilError('os', 'malformed', 'task list corrupt');
        return [];
      }),
      poller('fine', () => {
        ranAfter++;
        return [finding('x')];
      }),
    ],
  });
  const r1 = await e.sweep({ force: true });
  assert.equal(ranAfter, 1);
  assert.equal(r1.runs[0]!.outcome, 'failed');
  const h = health(r1.alerts);
  assert.equal(h.length, 1);
  assert.equal(h[0]!.summary, 'policy broken failed: os malformed: task list corrupt');
  assert.equal(h[0]!.evidence.policy, 'broken');
  assert.equal(h[0]!.evidence.kind, 'malformed');
  assert.equal(r1.alerts.filter((a) => a.policy === 'fine').length, 1);

  assert.equal(health((await e.sweep({ force: true })).alerts).length, 0, 'still failing: not repeated');
  assert.equal(ranAfter, 2);
  fail = false;
  await e.sweep({ force: true });
  fail = true;
  assert.equal(
    health((await e.sweep({ force: true })).alerts).length,
    1,
    'failing again after recovery: raised',
  );
  assert.equal(e.stats().broken!.failures, 3);
});

test('a malformed finding is a policy failure', async () => {
  const { e } = engine({ policies: [poller('bad', () => [{ key: '' } as Finding])] });
  const h = health(await e.runOnce());
  assert.equal(h.length, 1);
  assert.match(h[0]!.summary, /without a key/);
});

test('a sweep over its budget raises a health alert naming the slowest policies', async () => {
  const clock = new FakeClock();
  let cost = 300;
  const { e } = engine({
    clock,
    config: { sweepBudgetMs: 1000 },
    policies: [
      poller('slow', () => {
        clock.t += cost;
        return [];
      }),
      poller('slower', async () => {
        clock.t += cost * 2;
        return [];
      }),
    ],
  });
  const r1 = await e.sweep({ force: true });
  assert.equal(r1.durationMs, 900);
  assert.equal(r1.overBudget, false);
  assert.deepEqual(
    r1.runs.map((r) => r.durationMs),
    [300, 600],
  );
  cost = 500;
  const r2 = await e.sweep({ force: true });
  assert.equal(r2.durationMs, 1500);
  assert.equal(r2.overBudget, true);
  const h = health(r2.alerts);
  assert.equal(h.length, 1);
  assert.equal(h[0]!.key, 'sweep-budget');
  assert.equal(h[0]!.summary, 'sweep took 1500 ms, over the budget of 1000 ms');
  assert.deepEqual(h[0]!.evidence.slowest, [
    { policy: 'slower', ms: 1000 },
    { policy: 'slow', ms: 500 },
  ]);
  assert.equal(e.stats().slower!.maxMs, 1000);
});

test('responses run on the fake control and are recorded in the alert', async () => {
  await withTemp(async (dir) => {
    const control = fakeControl();
    const { e, delivered } = engine({
      machine: fakeMachine({ control }),
      config: {
        dumpDir: dir,
        policies: {
          pauser: { response: 'pause' },
          dumper: { response: 'dump-and-pause', severity: 'critical' },
        },
      },
      policies: [
        poller('pauser', () => [finding('a')]),
        poller('dumper', () => [finding('b'), finding('c')]),
      ],
    });
    const alerts = await e.runOnce();
    assert.deepEqual(control.calls.slice(0, 1), ['pause']);
    assert.equal(control.calls.filter((c) => c.startsWith('dump ')).length, 1, 'one dump for the sweep');
    const [a, b, c] = alerts;
    assert.deepEqual(a!.response, [
      { action: 'alert', ok: true },
      { action: 'pause', ok: true, detail: 'paused' },
    ]);
    assert.equal(b!.severity, 'critical', 'severity override');
    assert.deepEqual(
      b!.response!.map((r) => [r.action, r.ok, r.detail?.startsWith(dir)]),
      [
        ['alert', true, undefined],
        ['pause', true, false],
        ['dump', true, true],
      ],
    );
    assert.ok(b!.response![2]!.detail!.includes(b!.id), 'the dump file is named after the alert');
    assert.match(c!.response![2]!.detail!, /shared/);
    assert.deepEqual(delivered, alerts, 'delivered with the response filled in');
  });

  const { e } = engine({
    machine: fakeMachine({ dump: true }),
    config: { policies: { p: { response: 'pause' } } },
    policies: [poller('p', () => [finding('a')])],
  });
  const [alert] = await e.runOnce();
  assert.deepEqual(alert!.response![1], {
    action: 'pause',
    ok: false,
    detail: 'no VM control: target is a memory dump',
  });
});

test('events go to the policies subscribed to their name, deduplicated within the window', async () => {
  const clock = new FakeClock();
  const got: string[] = [];
  const { e } = engine({
    clock,
    config: { eventDedupeMs: 1000 },
    policies: [
      definePolicy<FakeKernel>({
        ...base,
        id: 'promisc',
        eventNames: ['NIC_RX_FILTER_CHANGED'],
        onEvent: (ev) => {
          got.push(`promisc:${ev.name}`);
          return [finding(`promisc:${String(ev.data.name)}`)];
        },
      }),
      definePolicy<FakeKernel>({
        ...base,
        id: 'all',
        onEvent: (ev) => {
          got.push(`all:${ev.name}`);
          return [];
        },
      }),
      definePolicy<FakeKernel>({
        ...base,
        id: 'stops',
        eventNames: ['STOP'],
        onEvent: () => {
          throw new Error('should not be called');
        },
      }),
    ],
  });
  const ev = (name: string, data: Record<string, unknown> = {}): VmEvent => ({
    source: 'qmp',
    name,
    time: clock.now(),
    data,
  });
  const a1 = await e.handleEvent(ev('NIC_RX_FILTER_CHANGED', { name: 'net0' }));
  assert.deepEqual(
    a1.map((a) => [a.policy, a.key]),
    [['promisc', 'promisc:net0']],
  );
  assert.deepEqual(got, ['promisc:NIC_RX_FILTER_CHANGED', 'all:NIC_RX_FILTER_CHANGED']);
  await e.handleEvent(ev('RESUME'));
  assert.deepEqual(got.slice(2), ['all:RESUME'], 'only the catch-all saw RESUME');
  clock.advance(500);
  assert.equal(
    (await e.handleEvent(ev('NIC_RX_FILTER_CHANGED', { name: 'net0' }))).length,
    0,
    'deduplicated',
  );
  clock.advance(500);
  assert.equal((await e.handleEvent(ev('NIC_RX_FILTER_CHANGED', { name: 'net0' }))).length, 1, 'window over');
  // An event policy that throws becomes a health alert.
  const h = await e.handleEvent(ev('STOP'));
  assert.equal(h.length, 1);
  assert.equal(h[0]!.policy, HEALTH_POLICY_ID);
  assert.match(h[0]!.summary, /policy stops failed: on event STOP: should not be called/);
});

test('stop() during a sweep waits for it, and no further sweep is scheduled', async () => {
  const clock = new FakeClock();
  const gate = deferred();
  const started = deferred();
  let polls = 0;
  let finished = false;
  const { e, delivered } = engine({
    clock,
    policies: [
      poller('gated', async () => {
        polls++;
        started.resolve();
        await gate.promise;
        finished = true;
        return [finding('k')];
      }),
    ],
  });
  e.start();
  assert.equal(e.running, true);
  clock.advance(0);
  await started.promise;
  let stopped = false;
  const stopping = e.stop().then(() => (stopped = true));
  await flush();
  assert.equal(stopped, false, 'stop waits for the sweep');
  gate.resolve();
  await stopping;
  assert.equal(finished, true);
  assert.equal(delivered.length, 1, 'the alert of the interrupted sweep was delivered');
  // Only the policy time-limit timer existed, and it was cancelled.
  assert.equal(clock.timers.size, 0);
  clock.advance(60_000);
  await flush();
  assert.equal(polls, 1);
});

test('the loop sweeps each policy at its own interval, never overlapping', async () => {
  const clock = new FakeClock();
  const runs: Record<string, number[]> = { fast: [], slow: [] };
  let inside = 0;
  let maxInside = 0;
  const track = (id: string) => async () => {
    inside++;
    maxInside = Math.max(maxInside, inside);
    runs[id]!.push(clock.now());
    await flush();
    inside--;
    return [];
  };
  const { e } = engine({
    clock,
    config: { policies: { fast: { intervalMs: 1000 }, slow: { intervalMs: 3000 } } },
    policies: [poller('fast', track('fast')), poller('slow', track('slow'))],
  });
  const t0 = clock.now();
  e.start();
  for (let i = 0; i <= 6; i++) {
    clock.advance(i === 0 ? 0 : 1000);
    await e.idle();
    await flush();
  }
  await e.stop();
  assert.deepEqual(
    runs.fast.map((t) => t - t0),
    [0, 1000, 2000, 3000, 4000, 5000, 6000],
  );
  assert.deepEqual(
    runs.slow.map((t) => t - t0),
    [0, 3000, 6000],
  );
  assert.equal(maxInside, 1);
});

test('notes of a truncated walk raise a health alert, and a partial poll clears nothing', async () => {
  let truncate = false;
  let keys = ['a', 'b'];
  const { e } = engine({
    policies: [
      poller('walker', (ctx) => {
        if (truncate) {
          ctx.note('cycle', 'tasks: list loops back to 0xffff8880 after 12 entries');
          ctx.note('cycle', 'modules: list loops');
        }
        return keys.map((k) => finding(k));
      }),
    ],
  });
  await e.runOnce();
  truncate = true;
  keys = ['a'];
  const r = await e.sweep({ force: true });
  assert.deepEqual(r.runs[0]!.cleared, [], 'b may be hidden by the truncation: not cleared');
  assert.equal(r.runs[0]!.notes, 2);
  const h = health(r.alerts);
  assert.equal(h.length, 1);
  assert.equal(h[0]!.key, 'truncated:walker:cycle');
  assert.equal(h[0]!.severity, 'medium');
  assert.deepEqual(h[0]!.evidence.details, [
    'tasks: list loops back to 0xffff8880 after 12 entries',
    'modules: list loops',
  ]);
  truncate = false;
  keys = ['a', 'b'];
  assert.deepEqual((await e.sweep({ force: true })).alerts, [], 'b never cleared, so not re-raised');
});

test('an async policy over its time limit is abandoned and reported, and stays busy until it settles', async () => {
  const clock = new FakeClock();
  const gate = deferred();
  let calls = 0;
  const aborted: boolean[] = [];
  const { e } = engine({
    clock,
    config: { policyTimeoutMs: 5000 },
    policies: [
      poller('hang', async (ctx) => {
        calls++;
        await gate.promise;
        aborted.push(ctx.signal.aborted);
        return [];
      }),
      poller('next', () => [finding('n')]),
    ],
  });
  const sweeping = e.sweep({ force: true });
  await flush();
  clock.advance(5000);
  const r = await sweeping;
  assert.equal(r.runs[0]!.outcome, 'failed');
  assert.match(r.runs[0]!.error!, /timed out after 5000 ms/);
  assert.equal(r.runs[1]!.outcome, 'ok', 'the next policy ran');
  const r2 = await e.sweep({ force: true });
  assert.equal(r2.runs[0]!.outcome, 'busy');
  assert.equal(calls, 1, 'not started again while the old run hangs');
  assert.equal(health(r2.alerts).length, 0, 'the timeout alert is not repeated');
  gate.resolve();
  await flush();
  const r3 = await e.sweep({ force: true });
  assert.equal(r3.runs[0]!.outcome, 'ok');
  assert.equal(calls, 2);
  assert.deepEqual(aborted, [true, false], 'the abandoned run saw its signal aborted');
});

test('config is checked: unknown policies, bad intervals, responses and options', () => {
  const p = poller('p', () => []);
  assert.throws(() => engine({ policies: [p], config: { policies: { q: {} } } }), /unknown policy "q"/);
  assert.throws(
    () => engine({ policies: [p], config: { policies: { p: { intervalMs: 5 } } } }),
    /intervalMs/,
  );
  assert.throws(
    () => engine({ policies: [p], config: { policies: { p: { response: 'kill' as never } } } }),
    /response/,
  );
  assert.throws(() => engine({ policies: [p, p] }), /two policies/);
  assert.throws(() => engine({ policies: [poller(HEALTH_POLICY_ID, () => [])] }), /reserved/);
  const strict = poller('s', () => [], {
    parseOptions: (raw) => {
      if (typeof raw.limit !== 'number') throw new Error('limit must be a number');
      return raw;
    },
  });
  assert.throws(
    () => engine({ policies: [strict], config: { policies: { s: { options: { limit: 'x' } } } } }),
    /limit must be a number/,
  );
});

test('policies read their options and the kernel from the context', async () => {
  let seen: unknown;
  const { e } = engine({
    kernel: { release: '6.1.0-28' },
    config: { policies: { p: { options: { allow: ['sshd'] } } } },
    policies: [
      poller('p', (ctx) => {
        seen = [ctx.options.allow, ctx.requireKernel().release, ctx.vm, ctx.sweep];
        return [];
      }),
    ],
  });
  await e.runOnce();
  assert.deepEqual(seen, [['sshd'], '6.1.0-28', 'vm1', 1]);
});

test('a failing sink is reported as a health alert once, and does not stop delivery to the others', async () => {
  const good: Alert[] = [];
  let broken = true;
  const sinks: Sink[] = [
    {
      name: 'webhook',
      write: async () => {
        if (broken) throw new Error('connection refused');
      },
      close: async () => undefined,
    },
    { name: 'file', write: async (a) => void good.push(a), close: async () => undefined },
  ];
  let keys = ['a'];
  const { e } = engine({ sinks, policies: [poller('p', () => keys.map((k) => finding(k)))] });
  const r1 = await e.sweep({ force: true });
  const h1 = health(r1.alerts);
  assert.equal(h1.length, 1);
  assert.equal(h1[0]!.key, 'sink-failed:webhook');
  assert.match(h1[0]!.summary, /alert delivery to webhook failed: connection refused/);
  assert.deepEqual(
    good.map((a) => a.key),
    ['a', 'sink-failed:webhook'],
    'the other sink got both',
  );
  assert.equal(health((await e.sweep({ force: true })).alerts).length, 0, 'still down: not repeated');
  broken = false;
  keys = ['a', 'b'];
  assert.equal(health((await e.sweep({ force: true })).alerts).length, 0, 'delivered again: cleared');
  broken = true;
  keys = ['a', 'b', 'c'];
  await e.sweep({ force: true });
  assert.deepEqual(
    good.map((a) => a.key).slice(2),
    ['b', 'c', 'sink-failed:webhook'],
    'down again: raised again',
  );
});

test('baselines: learned on the first clean sweep, kept in the file, re-learned after a reboot', async () => {
  await withTemp(async (dir) => {
    const store = new FileBaselineStore(dir);
    const boot1: KernelIdentity = {
      banner: 'Linux version 6.1.0-28-amd64',
      kaslrOffset: 0x10000000n,
      release: '6.1.0-28-amd64',
    };
    let modules = ['virtio_net', 'ext4'];
    let learns = 0;
    let truncated = false;
    const policy = poller(
      'modules',
      (ctx) => {
        const known = ctx.baseline.get<string[]>('names') ?? [];
        return modules.filter((m) => !known.includes(m)).map((m) => finding(`module:${m}`));
      },
      {
        learn: (ctx, b) => {
          learns++;
          if (truncated) ctx.note('bound', 'modules: stopped at the bound');
          b.set('names', modules);
        },
      },
    );
    const make = (identity: KernelIdentity) =>
      engine({
        baselines: store,
        kernel: { release: identity.release! },
        kernelIdentity: identity,
        policies: [policy],
      }).e;

    // A truncated walk during learning keeps nothing and the poll waits for a good baseline.
    truncated = true;
    let e = make(boot1);
    const r0 = await e.runOnce();
    assert.equal(health(r0).length, 1);
    assert.equal(await store.load('vm1'), undefined, 'nothing saved');
    truncated = false;

    const r1 = await e.sweep({ force: true });
    assert.equal(r1.runs[0]!.outcome, 'learned');
    assert.deepEqual(
      r1.alerts.filter((a) => a.policy === 'modules'),
      [],
    );
    const file = JSON.parse(await readFile(store.pathFor('vm1'), 'utf8')) as Record<
      string,
      Record<string, unknown>
    >;
    assert.deepEqual(file.modules!.values, { names: ['virtio_net', 'ext4'] });
    assert.equal((file._vigil!.kernel as Record<string, string>).kaslrOffset, '0x10000000');
    assert.equal(file._vigil!.vm, 'vm1');

    // A new engine (vigil restarted) reuses the saved baseline and alerts on the new module.
    modules = ['virtio_net', 'ext4', 'diamorphine'];
    e = make(boot1);
    const r2 = await e.runOnce();
    assert.equal(learns, 2);
    assert.deepEqual(
      r2.map((a) => a.key),
      ['module:diamorphine'],
    );

    // After a reboot (new KASLR slide) the policy re-learns and says so, instead of alerting.
    e = make({ ...boot1, kaslrOffset: 0x2a000000n });
    const r3 = await e.runOnce();
    assert.equal(learns, 3);
    assert.deepEqual(
      r3.map((a) => [a.policy, a.severity]),
      [[HEALTH_POLICY_ID, 'info']],
    );
    assert.match(r3[0]!.summary, /kernel changed \(now 6\.1\.0-28-amd64\): baseline of modules re-learned/);
    const after = JSON.parse(await readFile(store.pathFor('vm1'), 'utf8')) as Record<
      string,
      Record<string, unknown>
    >;
    assert.deepEqual(after.modules!.values, { names: ['virtio_net', 'ext4', 'diamorphine'] });

    // Resetting the policy's baseline makes it learn again.
    await e.resetBaseline('modules');
    assert.equal(JSON.parse(await readFile(store.pathFor('vm1'), 'utf8')).modules, undefined);
    await e.runOnce();
    assert.equal(learns, 4);
  });
});

test('a poll that throws keeps none of its baseline writes', async () => {
  const store = new MemoryBaselineStore();
  let fail = false;
  const { e } = engine({
    baselines: store,
    policies: [
      poller('p', (ctx) => {
        ctx.baseline.set('n', (ctx.baseline.get<number>('n') ?? 0) + 1);
        if (fail) throw new Error('late failure');
        return [];
      }),
    ],
  });
  await e.runOnce();
  fail = true;
  await e.runOnce();
  const doc = await store.load('vm1');
  assert.deepEqual(doc!.policies.get('p')!.values, { n: 1 });
});

test('an unreadable baseline file is reported and never overwritten', async () => {
  const store = new MemoryBaselineStore();
  store.texts.set('vm1', 'not json');
  const { e } = engine({
    baselines: store,
    policies: [poller('p', (ctx) => (ctx.baseline.set('x', 1), []))],
  });
  const r = health(await e.runOnce());
  assert.equal(r.length, 1);
  assert.equal(r[0]!.key, 'baseline-unreadable');
  assert.equal(store.texts.get('vm1'), 'not json');
  assert.equal(health(await e.runOnce()).length, 0, 'reported once');
  await e.resetBaseline();
  await e.runOnce();
  assert.match(store.texts.get('vm1')!, /"_vigil"/);
});

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vigil-engine-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('events queue behind a running sweep; beyond the limit they are dropped and the drop reported', async () => {
  const gate = deferred();
  const started = deferred();
  const seen: number[] = [];
  const { e } = engine({
    config: { maxPendingEvents: 2 },
    policies: [
      poller('gated', async () => {
        started.resolve();
        await gate.promise;
        return [];
      }),
      definePolicy<FakeKernel>({
        ...base,
        id: 'ev',
        onEvent: (ev) => {
          seen.push(ev.data.n as number);
          return [];
        },
      }),
    ],
  });
  const sweeping = e.sweep({ force: true });
  await started.promise;
  const results = [1, 2, 3, 4, 5].map((n) =>
    e.handleEvent({ source: 'qmp', name: 'X', time: 0, data: { n } }),
  );
  gate.resolve();
  await sweeping;
  const out = await Promise.all(results);
  assert.deepEqual(seen, [1, 2], 'handled in order, after the sweep');
  assert.deepEqual(out.slice(2), [[], [], []]);
  assert.equal(out[0]![0]!.key, 'events-dropped');
  assert.equal(out[0]![0]!.evidence.dropped, 3);
});

test('on a live target everything is active, and an event-only policy learns in the first sweep', async () => {
  let learned = 0;
  const { e } = engine({
    policies: [
      poller('live', () => [], { requires: ['live', 'events', 'control'] }),
      definePolicy<FakeKernel>({
        ...base,
        id: 'ev',
        onEvent: (_ev, ctx) => (ctx.baseline.get('seen') ? [] : [finding('no-baseline')]),
        learn: (_ctx, b) => {
          learned++;
          b.set('seen', true);
        },
      }),
    ],
  });
  assert.equal(e.target.description, 'a live VM');
  assert.deepEqual(
    e.status().map((s) => s.state),
    ['active', 'active'],
  );
  const r = await e.sweep();
  assert.deepEqual(
    r.runs.map((x) => [x.policy, x.outcome]),
    [
      ['live', 'ok'],
      ['ev', 'learned'],
    ],
  );
  await e.sweep({ force: true });
  assert.equal(learned, 1);
  assert.deepEqual(await e.handleEvent({ source: 'qmp', name: 'X', time: 0, data: {} }), []);
});
