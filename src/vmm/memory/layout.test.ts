import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultLayout, lowMemory, resolveLayout } from './layout.js';

const GiB = 1n << 30n;
const MiB = 1n << 20n;

test('q35 keeps RAM below 2.75 GiB flat and splits at 2 GiB from 2.75 GiB up', () => {
  assert.deepEqual(defaultLayout(256n * MiB), [{ start: 0n, size: 256n * MiB, backendOffset: 0n }]);
  assert.equal(lowMemory(0xb000_0000n - 4096n, 'q35'), 0xb000_0000n - 4096n);
  assert.equal(lowMemory(0xb000_0000n, 'q35'), 2n * GiB);
  // What `info mtree -f` shows for a 3 GiB q35 guest (test/fixtures/memory/mtree-q35-3g.txt).
  assert.deepEqual(defaultLayout(3n * GiB, 'q35'), [
    { start: 0n, size: 2n * GiB, backendOffset: 0n },
    { start: 4n * GiB, size: GiB, backendOffset: 2n * GiB },
  ]);
});

test('i440fx splits at 3 GiB from 3.5 GiB up; flat is 0..size', () => {
  assert.deepEqual(defaultLayout(3n * GiB, 'pc'), [{ start: 0n, size: 3n * GiB, backendOffset: 0n }]);
  assert.deepEqual(defaultLayout(4n * GiB, 'pc'), [
    { start: 0n, size: 3n * GiB, backendOffset: 0n },
    { start: 4n * GiB, size: GiB, backendOffset: 3n * GiB },
  ]);
  assert.deepEqual(defaultLayout(4n * GiB, 'flat'), [{ start: 0n, size: 4n * GiB, backendOffset: 0n }]);
});

test('an explicit map must fit the backend', () => {
  const map = [{ start: 0x100000n, size: 0x1000n, backendOffset: 0x100000n }];
  assert.deepEqual(resolveLayout(map, 0x101000n, 'f'), map);
  assert.throws(
    () => resolveLayout(map, 0x100800n, 'RAM file x'),
    (e: Error) => /past the end of RAM file x/.test(e.message),
  );
  assert.throws(() => defaultLayout(0n), { kind: 'malformed' });
});
