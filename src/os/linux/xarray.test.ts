import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeKernel } from './tasks/testkit.js';
import { xarrayEntries } from './xarray.js';

/** A fake kernel's memory with an xarray at a fresh address; nodes built by hand. */
function setup() {
  const k = new FakeKernel();
  const xa = k.alloc(k.types.sizeof('xarray'));
  const node = (shift: number, slots: Record<number, bigint>) => {
    const va = k.alloc(k.types.sizeof('xa_node'));
    k.put('xa_node', va, { shift });
    for (const [i, e] of Object.entries(slots)) k.put('xa_node', va, { [`slots[${i}]`]: e });
    return va;
  };
  const head = (e: bigint) => k.put('xarray', xa, { xa_head: e });
  const walk = (max = 1000, maxNodes?: number) =>
    [...xarrayEntries(k, xa, { walker: 'xa', max, ...(maxNodes ? { maxNodes } : {}) })].map((e) => [
      e.index,
      e.entry,
    ]);
  return { k, xa, node, head, walk };
}

test('empty array, single entry in the head, and a one-level node', () => {
  const { node, head, walk } = setup();
  assert.deepEqual(walk(), []);
  head(0xffff_8880_1000_0000n);
  assert.deepEqual(walk(), [[0n, 0xffff_8880_1000_0000n]]);
  head(node(0, { 3: 0x1000n, 63: 0x2000n }) + 2n);
  assert.deepEqual(walk(), [
    [3n, 0x1000n],
    [63n, 0x2000n],
  ]);
});

test('indexes combine every level; siblings, retry and zero entries are skipped; values are yielded', () => {
  const { node, head, walk } = setup();
  const leafA = node(0, { 0: 0x5000n, 1: 2n /* sibling of slot 0 */, 2: 0x402n /* retry */, 7: 0x406n });
  const leafB = node(0, { 9: 0x6000n, 10: 0x13n /* xa_mk_value(9) */ });
  head(node(6, { 0: leafA + 2n, 2: leafB + 2n }) + 2n);
  assert.deepEqual(walk(), [
    [0n, 0x5000n],
    [137n, 0x6000n],
    [138n, 0x13n],
  ]);
});

test('a node whose shift does not step down, or is absurd, is refused', () => {
  const { k, node, head, walk } = setup();
  const wrong = node(12, { 0: 0x5000n });
  head(node(6, { 1: wrong + 2n, 2: node(0, { 0: 0x7000n }) + 2n }) + 2n);
  assert.deepEqual(walk(), [[128n, 0x7000n]]);
  assert.equal(k.issues.items[0]?.kind, 'malformed');
  head(node(66, {}) + 2n);
  assert.deepEqual(walk(), []);
  head(node(7, {}) + 2n);
  assert.deepEqual(walk(), []);
  assert.equal(k.issues.items.length, 3);
});

test('a node reached twice is visited once', () => {
  const { k, node, head, walk } = setup();
  const leaf = node(0, { 1: 0x5000n });
  head(node(6, { 0: leaf + 2n, 1: leaf + 2n }) + 2n);
  assert.deepEqual(walk(), [[1n, 0x5000n]]);
  assert.equal(k.issues.items[0]?.kind, 'cycle');
});

test('bounds on entries and nodes stop the walk with a bound issue', () => {
  const { k, node, head, walk } = setup();
  const slots: Record<number, bigint> = {};
  for (let i = 0; i < 64; i++) slots[i] = node(0, { 0: 0x1000n, 1: 0x2000n }) + 2n;
  head(node(6, slots) + 2n);
  assert.equal(walk().length, 128);
  assert.equal(walk(100).length, 100);
  assert.equal(k.issues.items.at(-1)?.kind, 'bound');
  assert.equal(walk(1000, 10).length, 18);
  assert.match(k.issues.items.at(-1)!.detail, /10 nodes/);
});

test('unreadable nodes and heads are issues, not errors', () => {
  const { k, xa, head, walk } = setup();
  head(0xffff_dead_0000_0002n);
  assert.deepEqual(walk(), []);
  assert.equal(k.issues.items[0]?.kind, 'unmapped');
  head(0xffff_ffff_ffff_fffan);
  assert.deepEqual(walk(), []);
  assert.deepEqual([...xarrayEntries(k, 0xffff_ffff_ffff_fffcn, { walker: 'xa', max: 5 })], []);
  void xa;
});
