import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { makeAlert } from './alerts.js';
import { Responder } from './responses.js';
import { FakeClock, fakeControl, finding, flush } from './testkit.js';
import type { MachineControl } from '../vmm/types.js';

const alertAt = (clock: FakeClock, key = 'k') =>
  makeAlert(finding(key), { vm: 'web 1', policy: 'p', time: clock.now(), defaultSeverity: 'high' });

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vigil-resp-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('alert mode records the alert and touches nothing', async () => {
  const control = fakeControl();
  const r = new Responder({ vm: 'v', control, clock: new FakeClock() });
  assert.deepEqual(await r.respond(alertAt(new FakeClock()), 'alert'), [{ action: 'alert', ok: true }]);
  assert.deepEqual(control.calls, []);
});

test('pause, dump and dump-and-pause call the control and are recorded', async () => {
  await withDir(async (dir) => {
    const clock = new FakeClock();
    const control = fakeControl();
    const r = new Responder({
      vm: 'web 1',
      control,
      clock,
      dumpDir: join(dir, 'dumps'),
      minDumpIntervalMs: 1000,
    });

    const a = alertAt(clock);
    const dumped = await r.respond(a, 'dump');
    const path = join(dir, 'dumps', `web%201-${a.time.replace(/:/g, '')}-${a.id}.elf`);
    assert.deepEqual(dumped, [
      { action: 'alert', ok: true },
      { action: 'dump', ok: true, detail: path },
    ]);
    assert.deepEqual(control.calls, [`dump ${path}`], 'no pause: QEMU stops the VM for the dump itself');
    assert.equal(((await stat(join(dir, 'dumps'))).mode & 0o777).toString(8), '700');
    assert.deepEqual(r.dumps, [path]);

    // A second alert in the same batch shares the dump instead of writing another.
    const shared = await r.respond(alertAt(clock, 'k2'), 'dump');
    assert.equal(shared[1]!.ok, true);
    assert.match(shared[1]!.detail!, /shared/);
    assert.equal(control.calls.length, 1);

    r.beginBatch();
    clock.advance(1000);
    control.calls.length = 0;
    const b = alertAt(clock, 'k3');
    const dp = await r.respond(b, 'dump-and-pause');
    assert.deepEqual(
      dp.map((x) => [x.action, x.ok]),
      [
        ['alert', true],
        ['pause', true],
        ['dump', true],
      ],
    );
    assert.equal(control.calls[0], 'pause', 'paused before the dump');
    assert.match(control.calls[1]!, /^dump .*\.elf$/);
    assert.equal(control.paused, true, 'stays paused');

    r.beginBatch();
    assert.deepEqual(await r.respond(alertAt(clock), 'pause'), [
      { action: 'alert', ok: true },
      { action: 'pause', ok: true, detail: 'already paused' },
    ]);
    assert.equal(control.calls.filter((c) => c === 'pause').length, 1, 'not paused twice');
  });
});

test('dumps are rate limited and capped', async () => {
  await withDir(async (dir) => {
    const clock = new FakeClock();
    const control = fakeControl();
    const r = new Responder({
      vm: 'v',
      control,
      clock,
      dumpDir: dir,
      minDumpIntervalMs: 60_000,
      maxDumps: 2,
    });
    assert.equal((await r.respond(alertAt(clock), 'dump'))[1]!.ok, true);
    r.beginBatch();
    clock.advance(30_000);
    const limited = (await r.respond(alertAt(clock), 'dump'))[1]!;
    assert.equal(limited.ok, false);
    assert.match(limited.detail!, /30 s ago/);
    r.beginBatch();
    clock.advance(30_000);
    assert.equal((await r.respond(alertAt(clock), 'dump'))[1]!.ok, true);
    r.beginBatch();
    clock.advance(600_000);
    const capped = (await r.respond(alertAt(clock), 'dump'))[1]!;
    assert.equal(capped.ok, false);
    assert.match(capped.detail!, /limit/);
    assert.equal(control.calls.length, 2);
  });
});

test('without control every action is recorded as not done, with the reason', async () => {
  const r = new Responder({ vm: 'v', noControlReason: 'target is a memory dump', clock: new FakeClock() });
  const rec = await r.respond(alertAt(new FakeClock()), 'dump-and-pause');
  assert.deepEqual(rec, [
    { action: 'alert', ok: true },
    { action: 'pause', ok: false, detail: 'no VM control: target is a memory dump' },
    { action: 'dump', ok: false, detail: 'no VM control: target is a memory dump' },
  ]);
});

test('a failing or hanging control command is recorded, not thrown', async () => {
  await withDir(async (dir) => {
    const clock = new FakeClock();
    const control = fakeControl();
    control.failDump = new Error('dump-guest-memory: no space left');
    const r = new Responder({ vm: 'v', control, clock, dumpDir: dir, pauseTimeoutMs: 5000 });
    const failed = (await r.respond(alertAt(clock), 'dump'))[1]!;
    assert.equal(failed.ok, false);
    assert.match(failed.detail!, /no space left/);

    const hung: MachineControl = {
      ...control,
      pause: () => new Promise<void>(() => undefined),
      isPaused: async () => false,
    };
    const r2 = new Responder({ vm: 'v', control: hung, clock, dumpDir: dir, pauseTimeoutMs: 5000 });
    const pending = r2.respond(alertAt(clock), 'pause');
    await flush();
    clock.advance(5000);
    const rec = (await pending)[1]!;
    assert.equal(rec.ok, false);
    assert.match(rec.detail!, /timed out after 5000 ms/);
  });
});
