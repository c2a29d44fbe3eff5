import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kernelTaint, taintLetters, taintNames, TAINT_FLAGS } from './taints.js';
import { FakeKernel } from './test-kernel.js';

test('module taint letters follow /proc/modules: only module flags, in bit order', () => {
  assert.equal(taintLetters((1n << 12n) | (1n << 13n)), 'OE');
  assert.equal(taintLetters(1n), 'P');
  // W (bit 9) is a kernel-wide flag: not shown for a module.
  assert.equal(taintLetters((1n << 9n) | (1n << 12n), true), 'O');
  assert.equal(taintLetters(1n << 40n), '?');
  assert.deepEqual(taintNames((1n << 13n) | (1n << 50n)), ['TAINT_UNSIGNED_MODULE', 'bit 50']);
});

test('the table has one flag per bit with unique letters', () => {
  TAINT_FLAGS.forEach((f, i) => assert.equal(f.bit, i));
  assert.equal(new Set(TAINT_FLAGS.map((f) => f.letter)).size, TAINT_FLAGS.length);
});

test('kernel-wide taint from tainted_mask', () => {
  const k = new FakeKernel();
  assert.deepEqual(kernelTaint(k), { mask: 0n, letters: '', names: [] });
  k.writeU64(k.at.taintedMask, (1n << 12n) | (1n << 13n) | (1n << 9n));
  assert.deepEqual(kernelTaint(k)?.letters, 'WOE');
});
