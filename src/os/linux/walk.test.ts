import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hlistEntries, listHeadEntries, rbTreeNodes, WalkIssues, type PointerReader } from './walk.js';

/** A tiny pointer memory: address → value. */
const mem = (pairs: [bigint, bigint][]): PointerReader => {
  const m = new Map(pairs);
  return (va) => m.get(va);
};

test('list_head walk yields entries in order and stops at the head', () => {
  // head 0x100 → 0x200 → 0x300 → back to 0x100
  const read = mem([
    [0x100n, 0x200n],
    [0x200n, 0x300n],
    [0x300n, 0x100n],
  ]);
  assert.deepEqual([...listHeadEntries(read, 0x100n, { walker: 't', max: 10 })], [0x200n, 0x300n]);
});

test('list_head walk detects a cycle that skips the head', () => {
  const read = mem([
    [0x100n, 0x200n],
    [0x200n, 0x300n],
    [0x300n, 0x200n],
  ]);
  const issues = new WalkIssues();
  const got = [...listHeadEntries(read, 0x100n, { walker: 'tasks', max: 1000, issues })];
  assert.deepEqual(got, [0x200n, 0x300n]);
  assert.equal(issues.items[0]?.kind, 'cycle');
});

test('list_head walk stops at its bound and at unreadable or NULL entries', () => {
  const pairs: [bigint, bigint][] = [[0x10n, 0x1000n]];
  for (let i = 0; i < 100; i++) pairs.push([0x1000n + BigInt(i) * 16n, 0x1000n + BigInt(i + 1) * 16n]);
  const issues = new WalkIssues();
  assert.equal([...listHeadEntries(mem(pairs), 0x10n, { walker: 'l', max: 50, issues })].length, 50);
  assert.equal(issues.items[0]?.kind, 'bound');

  const issues2 = new WalkIssues();
  const broken = mem([
    [0x10n, 0x20n],
    [0x20n, 0x30n],
  ]);
  assert.deepEqual(
    [...listHeadEntries(broken, 0x10n, { walker: 'l', max: 50, issues: issues2 })],
    [0x20n, 0x30n],
  );
  assert.equal(issues2.items[0]?.kind, 'unmapped');

  const issues3 = new WalkIssues();
  const nul = mem([
    [0x10n, 0x20n],
    [0x20n, 0n],
  ]);
  assert.deepEqual([...listHeadEntries(nul, 0x10n, { walker: 'l', max: 50, issues: issues3 })], [0x20n]);
  assert.equal(issues3.items[0]?.kind, 'malformed');
});

test('hlist walk ends at NULL and detects cycles', () => {
  const read = mem([
    [0x10n, 0x20n],
    [0x20n, 0x30n],
    [0x30n, 0n],
  ]);
  assert.deepEqual([...hlistEntries(read, 0x10n, { walker: 'h', max: 10 })], [0x20n, 0x30n]);
  const issues = new WalkIssues();
  const loop = mem([
    [0x10n, 0x20n],
    [0x20n, 0x30n],
    [0x30n, 0x20n],
  ]);
  assert.equal([...hlistEntries(loop, 0x10n, { walker: 'h', max: 10, issues })].length, 2);
  assert.equal(issues.items[0]?.kind, 'cycle');
});

test('rb-tree walk is in order, bounded and cycle-safe', () => {
  // node layout: +8 right, +16 left; root pointer at 0x10
  //        0x200
  //       /     \
  //    0x100   0x300
  const read = mem([
    [0x10n, 0x200n],
    [0x200n + 16n, 0x100n],
    [0x200n + 8n, 0x300n],
    [0x100n + 16n, 0n],
    [0x100n + 8n, 0n],
    [0x300n + 16n, 0n],
    [0x300n + 8n, 0n],
  ]);
  const off = { left: 16, right: 8 };
  assert.deepEqual([...rbTreeNodes(read, 0x10n, off, { walker: 'rb', max: 10 })], [0x100n, 0x200n, 0x300n]);
  const issues = new WalkIssues();
  const loop = mem([
    [0x10n, 0x200n],
    [0x200n + 16n, 0x100n],
    [0x100n + 16n, 0x200n],
  ]);
  assert.deepEqual([...rbTreeNodes(loop, 0x10n, off, { walker: 'rb', max: 10, issues })], []);
  assert.equal(issues.items[0]?.kind, 'cycle');
});
