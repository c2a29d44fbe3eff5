import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decodeAddresses,
  hasNegativeOffsets,
  inversions,
  kernelHalfCount,
  placeRelativePositions,
} from './addresses.js';

const U64 = (1n << 64n) - 1n;

describe('kallsyms addresses', () => {
  // Values chosen to cross 32-bit carries and the sign of the offsets.
  const s32 = [0, 1, 0x7fffffff, -1, -2, -0x80000000, 0x1000, -0x1234568];
  const buf = Buffer.alloc(4 * s32.length);
  s32.forEach((v, i) => buf.writeInt32LE(v, 4 * i));

  it('absolute-percpu: non-negative offsets are absolute, negative ones relative to base - 1', () => {
    const base = 0xffffffff91200000n;
    const got = decodeAddresses(buf, 0, s32.length, 'absolute-percpu', base);
    const want = s32.map((v) => (v >= 0 ? BigInt(v) : (base - 1n - BigInt(v)) & U64));
    assert.deepEqual([...got], want);
    assert.equal(got[3], base);
  });

  it('base-relative: unsigned offsets added to the base, with carries', () => {
    const base = 0xffffffff_fffff000n;
    const got = decodeAddresses(buf, 0, s32.length, 'base-relative', base);
    const want = s32.map((v) => (base + BigInt(v >>> 0)) & U64);
    assert.deepEqual([...got], want);
  });

  it('place-relative: each offset relative to its own slot', () => {
    const base = 0xffffffff82000000n;
    const got = decodeAddresses(buf, 0, s32.length, 'place-relative', base);
    const want = s32.map((v, i) => (base + BigInt(4 * i) + BigInt(v)) & U64);
    assert.deepEqual([...got], want);
    assert.deepEqual(
      [...placeRelativePositions(buf, 0, s32.length)],
      s32.map((v, i) => 4 * i + v),
    );
  });

  it('absolute: 64-bit values as they are', () => {
    const vals = [0n, 0xffffffff81000000n, U64, 0x123456789abcdefn];
    const b = Buffer.alloc(8 * vals.length + 3);
    vals.forEach((v, i) => b.writeBigUInt64LE(v, 3 + 8 * i));
    assert.deepEqual([...decodeAddresses(b, 3, vals.length, 'absolute')], vals);
  });

  it('counts inversions, kernel-half addresses and negative offsets', () => {
    const a = BigUint64Array.from([1n, 0xffffffff00000000n, 0xfffffffe00000001n, 0xffffffff00000000n, 5n]);
    assert.equal(inversions(a), 2);
    assert.equal(inversions(Float64Array.from([1, 2, 2, 3])), 0);
    assert.equal(kernelHalfCount(a), 3);
    assert.equal(hasNegativeOffsets(buf, 0, 3), false);
    assert.equal(hasNegativeOffsets(buf, 0, 4), true);
  });
});
