import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { BoundedQueue } from './bounded-queue.js';

test('buffers up to capacity, drops the oldest and counts', async () => {
  let drops = 0;
  const q = new BoundedQueue<number>(3, { onDrop: () => drops++ });
  for (let i = 1; i <= 5; i++) q.push(i);
  assert.equal(q.dropped, 2);
  assert.equal(drops, 2);
  assert.equal(q.size, 3);
  q.end();
  const seen: number[] = [];
  for await (const v of q) seen.push(v);
  assert.deepEqual(seen, [3, 4, 5]);
});

test('a waiting consumer gets items as they come', async () => {
  const q = new BoundedQueue<string>(2);
  const first = q.next();
  q.push('a');
  assert.deepEqual(await first, { value: 'a', done: false });
  setTimeout(() => q.push('b'), 5);
  assert.deepEqual(await q.next(), { value: 'b', done: false });
});

test('fail() drains the buffer then rejects once', async () => {
  const q = new BoundedQueue<number>(4);
  q.push(1);
  q.fail(new VigilError('vmm', 'io', 'gone'));
  assert.deepEqual(await q.next(), { value: 1, done: false });
  await assert.rejects(q.next(), (e: unknown) => e instanceof VigilError && e.kind === 'io');
  assert.deepEqual(await q.next(), { value: undefined, done: true });
  assert.equal(q.push(2), false);
});

test('breaking out of for-await closes the queue and calls onClose', async () => {
  let closed = 0;
  const q = new BoundedQueue<number>(4, { onClose: () => closed++ });
  q.push(1);
  q.push(2);
  for await (const v of q) {
    assert.equal(v, 1);
    break;
  }
  assert.equal(closed, 1);
  assert.equal(q.closed, true);
  assert.equal(q.push(3), false);
});

test('capacity is validated', () => {
  assert.throws(() => new BoundedQueue(0), VigilError);
  assert.throws(() => new BoundedQueue(1.5), VigilError);
});
