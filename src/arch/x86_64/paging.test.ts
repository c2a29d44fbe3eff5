import assert from 'node:assert/strict';
import { test } from 'node:test';

import { VigilError } from '../../util/errors.js';
import { canonicalize, isCanonical, PAGING, pagingModeFromCr4, rootFromCr3 } from './paging.js';

test('pagingModeFromCr4 reads LA57 (bit 12)', () => {
  assert.equal(pagingModeFromCr4(0x751ef0n), 5); // the dev guest under TCG -cpu max
  assert.equal(pagingModeFromCr4(0x751ef0n & ~(1n << 12n)), 4);
  assert.equal(pagingModeFromCr4(0x20n), 4);
});

test('pagingModeFromCr4 rejects CR4 without PAE', () => {
  assert.throws(
    () => pagingModeFromCr4(0x1000n),
    (e: unknown) => e instanceof VigilError && e.kind === 'unsupported' && /PAE/.test(e.message),
  );
});

test('rootFromCr3 drops PCID, the no-flush bit and bits above 51', () => {
  assert.equal(rootFromCr3(0x2a58000n), 0x2a58000n);
  assert.equal(rootFromCr3((1n << 63n) | 0x1234_5678_9000n | 0xabcn), 0x1234_5678_9000n);
  assert.equal(rootFromCr3(0x7ff0_0000_0000_0000n | 0x1000n), 0x1000n);
});

test('levels as data: 4-level is 9/9/9/9/12, 5-level adds PML5 at bit 48', () => {
  assert.deepEqual(
    PAGING[4].levels.map((l) => [l.name, l.shift]),
    [
      ['PML4', 39],
      ['PDPT', 30],
      ['PD', 21],
      ['PT', 12],
    ],
  );
  assert.deepEqual(
    PAGING[5].levels.map((l) => l.name),
    ['PML5', 'PML4', 'PDPT', 'PD', 'PT'],
  );
  assert.equal(PAGING[5].vaBits, 57);
  assert.deepEqual(
    PAGING[5].levels.map((l) => l.leaf),
    ['never', 'never', 'ps', 'ps', 'always'],
  );
});

test('canonical addresses sign-extend bit 47 (4-level) or bit 56 (5-level)', () => {
  assert.equal(isCanonical(0x0000_7fff_ffff_ffffn, 4), true);
  assert.equal(isCanonical(0x0000_8000_0000_0000n, 4), false);
  assert.equal(isCanonical(0xffff_8000_0000_0000n, 4), true);
  assert.equal(isCanonical(0xff7f_8000_0000_0000n, 4), false);
  assert.equal(isCanonical(0x0000_8000_0000_0000n, 5), true);
  assert.equal(isCanonical(0x00ff_ffff_ffff_ffffn, 5), true);
  assert.equal(isCanonical(0x0100_0000_0000_0000n, 5), false);
  assert.equal(isCanonical(0xff00_0000_0000_0000n, 5), true);
  assert.equal(isCanonical(0xfe00_0000_0000_0000n, 5), false);
  assert.equal(canonicalize(0x8000_0000_0000n, 4), 0xffff_8000_0000_0000n);
  assert.equal(canonicalize(0x7fff_ffff_f000n, 4), 0x7fff_ffff_f000n);
  assert.equal(canonicalize(0x1fe_0000_0000_0000n, 5), 0xfffe_0000_0000_0000n);
});
