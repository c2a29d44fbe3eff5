import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import {
  enode,
  FakeKernel,
  MAPLE_ARANGE_64,
  MAPLE_LEAF_64,
  MAPLE_RANGE_64,
  mapleNode,
  mapleTree,
  rootOf,
} from '../fs/testkit.js';
import { mapleEntries, MAPLE_HEIGHT_MAX, type MapleEntry } from './maple.js';

const MAX = (1n << 64n) - 1n;
const E1 = 0xffff_8880_1111_0000n;
const E2 = 0xffff_8880_2222_0000n;
const E3 = 0xffff_8880_3333_0000n;

function walk(k: FakeKernel, tree: bigint, opts = {}): MapleEntry[] {
  try {
    return [...mapleEntries(k, tree, opts)];
  } catch (e) {
    assert.ok(e instanceof VigilError, `threw a non-VigilError: ${String(e)}`);
    throw e;
  }
}

/** An arange_64 root over two leaves, with NULL gaps between entries as the kernel stores them. */
function twoLevel(k: FakeKernel): { tree: bigint; root: bigint; leafA: bigint } {
  const leafA = mapleNode(
    k,
    MAPLE_LEAF_64,
    [
      [0xfffn, 0n],
      [0x1fffn, E1],
      [0x4fffn, 0n],
      [0x7fffn, E2],
    ],
    0x7fffn,
  );
  const leafB = mapleNode(k, MAPLE_LEAF_64, [
    [0x8fffn, E3],
    [MAX, 0n],
  ]);
  const root = mapleNode(k, MAPLE_ARANGE_64, [
    [0x7fffn, leafA],
    [MAX, leafB],
  ]);
  return { tree: mapleTree(k, rootOf(root)), root, leafA };
}

test('a two-level tree yields its entries in order with their ranges', () => {
  const k = new FakeKernel();
  const { tree } = twoLevel(k);
  assert.deepEqual(walk(k, tree), [
    { first: 0x1000n, last: 0x1fffn, entry: E1 },
    { first: 0x5000n, last: 0x7fffn, entry: E2 },
    { first: 0x8000n, last: 0x8fffn, entry: E3 },
  ]);
  assert.deepEqual(k.issues.items, []);
});

test('a full range_64 leaf: 16 slots, the last one ending at max', () => {
  const k = new FakeKernel();
  const slots: [bigint, bigint][] = [];
  for (let i = 0; i < 15; i++) slots.push([BigInt(i * 0x1000 + 0xfff), E1 + BigInt(i * 0x100)]);
  slots.push([MAX, E2]);
  const tree = mapleTree(k, rootOf(mapleNode(k, MAPLE_LEAF_64, slots)));
  const out = walk(k, tree);
  assert.equal(out.length, 16);
  assert.deepEqual(out[15], { first: 0xf000n, last: MAX, entry: E2 });
  // And through a range_64 parent.
  const k2 = new FakeKernel();
  const leaf = mapleNode(k2, MAPLE_LEAF_64, [[MAX, E3]]);
  const mid = mapleNode(k2, MAPLE_RANGE_64, [[MAX, leaf]]);
  assert.deepEqual(walk(k2, mapleTree(k2, rootOf(mid))), [{ first: 0n, last: MAX, entry: E3 }]);
});

test('empty trees, a lone root entry and reserved entries', () => {
  const k = new FakeKernel();
  assert.deepEqual(walk(k, mapleTree(k, 0n)), []);
  assert.deepEqual(walk(k, mapleTree(k, E1)), [{ first: 0n, last: 0n, entry: E1 }]);
  assert.deepEqual(walk(k, mapleTree(k, 0x406n)), [], 'XA_ZERO_ENTRY as root');
  const leaf = mapleNode(k, MAPLE_LEAF_64, [
    [0xfffn, 0x406n],
    [MAX, E2],
  ]);
  assert.deepEqual(walk(k, mapleTree(k, rootOf(leaf))), [{ first: 0x1000n, last: MAX, entry: E2 }]);
});

test('corrupt: a node pointing at itself stops with a cycle issue', () => {
  const k = new FakeKernel();
  const { tree, root } = twoLevel(k);
  // Make the root's second child the root itself.
  const node = root & ~0xffn;
  const slotOff = BigInt(k.types.member('maple_arange_64', 'slot').offset);
  k.writeU64(node + slotOff + 8n, root);
  const out = walk(k, tree);
  assert.equal(out.length, 2, 'the first leaf is still read');
  assert.equal(k.issues.items.at(-1)?.kind, 'cycle');
});

test('corrupt: an absurd node type stops with a malformed issue', () => {
  const k = new FakeKernel();
  const leaf = mapleNode(k, MAPLE_LEAF_64, [[MAX, E1]]);
  const bogus = (leaf & ~0xffn) | (9n << 3n) | 4n;
  const root = mapleNode(k, MAPLE_RANGE_64, [[MAX, bogus]]);
  assert.deepEqual(walk(k, mapleTree(k, rootOf(root))), []);
  assert.equal(k.issues.items[0]?.kind, 'malformed');
  assert.match(k.issues.items[0]!.detail, /type 9/);
});

test('corrupt: deeper than MAPLE_HEIGHT_MAX stops at the bound', () => {
  const k = new FakeKernel();
  let child = mapleNode(k, MAPLE_LEAF_64, [[MAX, E1]]);
  for (let i = 0; i < MAPLE_HEIGHT_MAX + 10; i++) child = mapleNode(k, MAPLE_RANGE_64, [[MAX, child]]);
  assert.deepEqual(walk(k, mapleTree(k, rootOf(child))), []);
  assert.equal(k.issues.items[0]?.kind, 'bound');
  // A smaller bound on request.
  const k2 = new FakeKernel();
  const { tree } = twoLevel(k2);
  assert.deepEqual(walk(k2, tree, { maxDepth: 0 }), []);
  assert.equal(k2.issues.items[0]?.kind, 'bound');
});

test('corrupt: pivots out of order, a data end past the slots, unmapped nodes, too many entries', () => {
  const k = new FakeKernel();
  const { tree, leafA } = twoLevel(k);
  const pivotOff = BigInt(k.types.offsetof('maple_range_64', 'pivot'));
  k.writeU64((leafA & ~0xffn) + pivotOff + 8n, 0x10n); // pivot[1] below pivot[0]
  const out = walk(k, tree);
  assert.deepEqual(
    out.map((e) => e.entry),
    [E3],
    'the broken leaf is skipped whole, the walk goes on',
  );
  assert.equal(k.issues.items[0]?.kind, 'malformed');

  const k2 = new FakeKernel();
  const arange = mapleNode(k2, MAPLE_ARANGE_64, [[MAX, mapleNode(k2, MAPLE_LEAF_64, [[MAX, E1]])]]);
  k2.set(arange & ~0xffn, 'maple_node', 'ma64.meta.end', 200);
  assert.deepEqual(walk(k2, mapleTree(k2, rootOf(arange))), []);
  assert.match(k2.issues.items[0]!.detail, /data end 200/);

  const k3 = new FakeKernel();
  const root = mapleNode(k3, MAPLE_RANGE_64, [[MAX, enode(0xdead_0000_0000n, MAPLE_LEAF_64)]]);
  assert.deepEqual(walk(k3, mapleTree(k3, rootOf(root))), []);
  assert.equal(k3.issues.items[0]?.kind, 'unmapped');
  assert.deepEqual(walk(k3, 0xbad_0000_0000n), []);
  assert.equal(k3.issues.items[1]?.kind, 'unmapped');

  const k4 = new FakeKernel();
  const { tree: t4 } = twoLevel(k4);
  assert.equal(walk(k4, t4, { maxEntries: 2 }).length, 2);
  assert.equal(k4.issues.items[0]?.kind, 'bound');
});
