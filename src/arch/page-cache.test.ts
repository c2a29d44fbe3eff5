import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Epoch } from './epoch.js';
import { CachedPhysicalMemory } from './page-cache.js';
import { BufferPhysicalMemory } from './x86_64/test-memory.js';

test('page cache serves repeated small reads from one source read per page, per epoch', () => {
  const mem = new BufferPhysicalMemory(64 * 1024);
  mem.write(0x1ff8n, Buffer.from('0123456789abcdef'));
  const epoch = new Epoch();
  const cached = new CachedPhysicalMemory(mem, epoch);
  // A read across the page boundary at 0x2000 gathers two pages.
  assert.equal(cached.read(0x1ff8n, 16).toString(), '0123456789abcdef');
  const readsAfterFirst = mem.reads;
  for (let i = 0; i < 100; i++) cached.read(0x1ff8n + BigInt(i % 16), 1);
  assert.equal(mem.reads, readsAfterFirst, 'no more source reads within the epoch');
  assert.equal(cached.stats.misses, 2);

  // The guest changes memory: the cache is stale until the epoch moves.
  mem.write(0x1ff8n, Buffer.from('X'));
  assert.equal(cached.read(0x1ff8n, 1).toString(), '0');
  epoch.bump();
  assert.equal(cached.read(0x1ff8n, 1).toString(), 'X');
});

test('page cache is bounded and large reads bypass it', () => {
  const mem = new BufferPhysicalMemory(64 * 1024);
  const cached = new CachedPhysicalMemory(mem, new Epoch(), 4);
  for (let p = 0n; p < 10n; p++) cached.read(p * 4096n, 8);
  assert.equal(cached.stats.misses, 10);
  cached.read(0n, 8); // evicted long ago
  assert.equal(cached.stats.misses, 11);
  const before = cached.stats.misses;
  assert.equal(cached.read(0n, 40000).length, 40000);
  assert.equal(cached.stats.misses, before);
});
