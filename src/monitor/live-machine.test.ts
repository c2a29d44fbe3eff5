import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeTarget } from '../policy/engine.js';
import { isVigilError } from '../util/errors.js';
import type { VmEvent } from '../vmm/types.js';
import { LiveMachine } from './live-machine.js';
import { fakeConn } from './watch-testkit.js';

const ev = (name: string): VmEvent => ({ source: 'qmp', name, time: 0, data: {} });

test('a LiveMachine forwards to the current connection and fails clearly without one', async () => {
  const m = new LiveMachine('vm1');
  assert.deepEqual(describeTarget(m).capabilities, ['live', 'events', 'control']);
  assert.throws(
    () => m.memory.read(0n, 8),
    (e: unknown) => isVigilError(e) && e.kind === 'state' && /VM vm1 is not connected/.test(e.message),
  );
  assert.throws(() => m.qmp, /not connected/);
  await assert.rejects(m.control.pause(), /not connected/);
  assert.deepEqual(m.vcpus, []);

  const c = fakeConn();
  m.attach(c);
  assert.equal(m.memory, c.memory);
  assert.equal(m.qmp, c.qmp);
  await m.control.pause();
  assert.equal(await m.control.isPaused(), true);
  assert.equal(m.detach(), c);
  assert.equal(m.connected, false);
});

test('event streams span connections and end on close', async () => {
  const m = new LiveMachine('vm1');
  const it = m.events[Symbol.asyncIterator]();
  m.publish(ev('STOP'));
  m.attach(fakeConn());
  m.publish(ev('RESUME'));
  assert.equal((await it.next()).value?.name, 'STOP');
  assert.equal((await it.next()).value?.name, 'RESUME');
  await m.close();
  assert.equal((await it.next()).done, true);
});
