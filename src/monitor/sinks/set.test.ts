import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import type { Alert, Sink } from '../../policy/types.js';
import { isVigilError } from '../../util/errors.js';
import { createSink, createSinkSet } from './index.js';
import { SinkSet, type SinkFailureEvent, type SinkHealth } from './set.js';
import { makeAlert, tempDir } from './test-support.js';

class Memory implements Sink {
  got: Alert[] = [];
  constructor(readonly name: string) {}
  async write(a: Alert) {
    this.got.push(a);
  }
  async close() {}
}

class Flaky implements Sink {
  failing = true;
  constructor(readonly name: string) {}
  async write() {
    if (this.failing) throw new Error('receiver on fire');
  }
  async close() {
    throw new Error('cannot close');
  }
}

test('one failing, one throwing and one hanging sink do not stop the others', async () => {
  const good = new Memory('good');
  const flaky = new Flaky('flaky');
  const throwing: Sink = {
    name: 'throwing',
    write: () => {
      throw new Error('synchronous throw');
    },
    close: async () => {},
  };
  const hanging: Sink = { name: 'hanging', write: () => new Promise(() => {}), close: async () => {} };
  const failures: SinkFailureEvent[] = [];
  const changes: [string, SinkHealth][] = [];
  const set = new SinkSet({
    writeTimeoutMs: 100,
    onFailure: (e) => failures.push(e),
    onHealthChange: (s, h) => changes.push([s, h]),
  });
  for (const s of [good, flaky, throwing, hanging]) set.add(s);
  const a = makeAlert();
  const started = Date.now();
  const r = await set.deliver(a);
  assert.ok(Date.now() - started < 1000);
  assert.deepEqual(r.delivered, ['good']);
  assert.deepEqual(r.failed.map((f) => f.sink).sort(), ['flaky', 'hanging', 'throwing']);
  assert.deepEqual(good.got, [a]);
  assert.ok(failures.every((f) => f.alertId === a.id));
  assert.match(
    String((r.failed.find((f) => f.sink === 'hanging')!.error as Error).message),
    /longer than 100 ms/,
  );
  // A second failure is counted but is not a new transition.
  await set.write(makeAlert());
  assert.equal(failures.filter((f) => f.sink === 'flaky').length, 2);
  assert.equal(failures.find((f) => f.sink === 'flaky' && f.consecutive === 2)?.total, 2);
  assert.deepEqual(changes.sort(), [
    ['flaky', 'failing'],
    ['hanging', 'failing'],
    ['throwing', 'failing'],
  ]);
  flaky.failing = false;
  await set.write(makeAlert());
  assert.deepEqual(changes.at(-1), ['flaky', 'ok']);
  const stats = set.stats().find((s) => s.name === 'flaky')!;
  assert.equal(stats.failures, 2);
  assert.equal(stats.consecutiveFailures, 0);
  await set.close(); // Flaky.close throws: reported, not thrown
  assert.match(String(failures.at(-1)!.error), /cannot close/);
});

test('a throwing callback does not break the fan-out', async () => {
  const good = new Memory('good');
  const set = new SinkSet({
    onFailure: () => {
      throw new Error('callback bug');
    },
  });
  set.add(new Flaky('flaky'));
  set.add(good);
  await set.write(makeAlert());
  assert.equal(good.got.length, 1);
});

test('background failures (reporter) drive health; a queued write does not hide them', async () => {
  const changes: [string, SinkHealth][] = [];
  const set = new SinkSet({ onHealthChange: (s, h) => changes.push([s, h]) });
  let healthy = true;
  const sink = {
    name: 'queued',
    write: async () => {},
    close: async () => {},
    status: () => ({ healthy, pending: 0, dropped: 0, failures: 0 }),
  };
  set.add(sink);
  const reporter = set.reporterFor('queued');
  healthy = false;
  reporter.failure(new Error('connection refused'));
  await set.write(makeAlert());
  assert.deepEqual(changes, [['queued', 'failing']]);
  healthy = true;
  reporter.success();
  assert.deepEqual(changes, [
    ['queued', 'failing'],
    ['queued', 'ok'],
  ]);
});

test('createSinkSet: all config errors at once, with their keys; duplicate names refused', async () => {
  await assert.rejects(
    createSinkSet([
      { type: 'stdout', colour: 'never' },
      { type: 'jsonl' },
      { type: 'syslog', transport: 'carrier-pigeon' },
    ]),
    (e: unknown) => {
      assert.ok(isVigilError(e));
      assert.match(e.message, /sinks\.0\.colour: unknown key/);
      assert.match(e.message, /sinks\.1\.path: Required/);
      assert.match(e.message, /sinks\.2\.transport: Invalid enum value/);
      return true;
    },
  );
  await assert.rejects(
    createSinkSet([{ type: 'stdout' }, { type: 'stdout' }]),
    /sinks\.1\.name: another sink is already named "stdout"/,
  );
});

test('createSinkSet builds working sinks from plain configs', async (t) => {
  const { dir, cleanup } = tempDir('set');
  t.after(cleanup);
  let printed = '';
  const stream = new Writable({
    write(c, _e, cb) {
      printed += c;
      cb();
    },
  });
  const set = await createSinkSet(
    [{ type: 'stdout' }, { type: 'jsonl', path: join(dir, 'a.jsonl') }],
    {},
    { stream, env: {}, hostname: 'hv1' },
  );
  const a = makeAlert();
  const r = await set.deliver(a);
  await set.close();
  assert.deepEqual(r.delivered.sort(), [`jsonl:${join(dir, 'a.jsonl')}`, 'stdout']);
  assert.match(printed, /raw socket opened by nc/);
  assert.equal(JSON.parse(readFileSync(join(dir, 'a.jsonl'), 'utf8')).observer.hostname, 'hv1');
  await assert.rejects(createSink({ type: 'jsonl', path: join(dir, 'a.jsonl'), keep: -1 }), /sink\.keep:/);
});

test('a hung sink stops taking writes once maxPendingWrites are unfinished', async () => {
  const resolvers: (() => void)[] = [];
  const hung: Sink = {
    name: 'hung',
    write: () => new Promise<void>((r) => resolvers.push(r)),
    close: async () => {},
  };
  const set = new SinkSet({ writeTimeoutMs: 20, maxPendingWrites: 2 });
  set.add(hung);
  for (let i = 0; i < 2; i++)
    assert.match(String((await set.deliver(makeAlert())).failed[0]!.error), /longer than 20 ms/);
  const r = await set.deliver(makeAlert());
  assert.match(String(r.failed[0]!.error), /2 earlier writes still unfinished/);
  assert.equal(resolvers.length, 2, 'the hung sink was not called again');
  for (const done of resolvers) done();
  await new Promise((res) => setImmediate(res));
  assert.deepEqual(
    (await set.deliver(makeAlert())).failed.length,
    1,
    'still hung for new writes, but accepted again',
  );
  assert.equal(resolvers.length, 3);
});
