// Symbol addresses, in the four encodings kernels have used:
//  - absolute: kallsyms_addresses, one unsigned long per symbol (!CONFIG_KALLSYMS_BASE_RELATIVE);
//  - base-relative: kallsyms_offsets (u32) added to kallsyms_relative_base (arm64 and most others);
//  - absolute-percpu: x86-64 SMP until per-CPU symbols stopped being absolute — an offset >= 0 is the
//    address itself (a per-CPU offset), a negative one means relative_base - 1 - offset;
//  - place-relative: Linux 7.0 dropped kallsyms_relative_base; each s32 is relative to its own slot, so
//    the address is &kallsyms_offsets[i] + offset and needs the table's virtual address.
// kallsyms_relative_base is a relocated pointer (.quad _text + …): under KASLR it holds the randomised
// address, so every decoded address is a run-time address.

export type AddressMode = 'absolute' | 'base-relative' | 'absolute-percpu' | 'place-relative';

const TWO32 = 2 ** 32;
/** Typed-array views share the host's byte order; the fast paths below assume little-endian hosts. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Write base + delta (delta a safe integer, possibly negative) into words[2i], words[2i+1], modulo 2^64. */
function putSum(words: Uint32Array, i: number, baseLo: number, baseHi: number, delta: number): void {
  const lo = baseLo + delta;
  const carry = Math.floor(lo / TWO32);
  words[2 * i] = lo - carry * TWO32;
  words[2 * i + 1] = (baseHi + carry) >>> 0;
}

/**
 * Decode `count` addresses from buf at `off` in the given mode. `base` is kallsyms_relative_base, or
 * for place-relative tables the virtual address of kallsyms_offsets itself. Built without a BigInt per
 * symbol: 100k symbols decode in about a millisecond.
 */
export function decodeAddresses(
  buf: Buffer,
  off: number,
  count: number,
  mode: AddressMode,
  base = 0n,
): BigUint64Array {
  const out = new BigUint64Array(count);
  if (!LITTLE_ENDIAN) {
    for (let i = 0; i < count; i++) out[i] = slowAddress(buf, off, i, mode, base);
    return out;
  }
  const words = new Uint32Array(out.buffer);
  const baseLo = Number(base & 0xffffffffn);
  const baseHi = Number((base >> 32n) & 0xffffffffn);
  switch (mode) {
    case 'absolute':
      buf.copy(Buffer.from(out.buffer), 0, off, off + 8 * count);
      break;
    case 'base-relative':
      for (let i = 0; i < count; i++) putSum(words, i, baseLo, baseHi, buf.readUInt32LE(off + 4 * i));
      break;
    case 'absolute-percpu':
      for (let i = 0; i < count; i++) {
        const v = buf.readInt32LE(off + 4 * i);
        if (v >= 0) words[2 * i] = v;
        else putSum(words, i, baseLo, baseHi, -1 - v);
      }
      break;
    case 'place-relative':
      for (let i = 0; i < count; i++) putSum(words, i, baseLo, baseHi, 4 * i + buf.readInt32LE(off + 4 * i));
      break;
  }
  return out;
}

const U64 = (1n << 64n) - 1n;

function slowAddress(buf: Buffer, off: number, i: number, mode: AddressMode, base: bigint): bigint {
  switch (mode) {
    case 'absolute':
      return buf.readBigUInt64LE(off + 8 * i);
    case 'base-relative':
      return (base + BigInt(buf.readUInt32LE(off + 4 * i))) & U64;
    case 'absolute-percpu': {
      const v = buf.readInt32LE(off + 4 * i);
      return v >= 0 ? BigInt(v) : (base - 1n - BigInt(v)) & U64;
    }
    case 'place-relative':
      return (base + BigInt(4 * i + buf.readInt32LE(off + 4 * i))) & U64;
  }
}

/** Does any s32 offset have its sign bit set? That is what tells absolute-percpu from base-relative. */
export function hasNegativeOffsets(buf: Buffer, off: number, count: number): boolean {
  for (let i = 0; i < count; i++) if (buf.readInt32LE(off + 4 * i) < 0) return true;
  return false;
}

/** Place-relative offsets as positions relative to the table start: 4i + offset[i]. */
export function placeRelativePositions(buf: Buffer, off: number, count: number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = 4 * i + buf.readInt32LE(off + 4 * i);
  return out;
}

/** Number of i with a[i] < a[i-1]: kallsyms is sorted by address, so a real table has none. */
export function inversions(a: BigUint64Array | Float64Array): number {
  let n = 0;
  if (a instanceof BigUint64Array && LITTLE_ENDIAN) {
    const w = new Uint32Array(a.buffer, a.byteOffset, a.length * 2);
    for (let i = 1; i < a.length; i++) {
      const hi = w[2 * i + 1];
      const prevHi = w[2 * i - 1];
      if (hi < prevHi || (hi === prevHi && w[2 * i] < w[2 * i - 2])) n++;
    }
    return n;
  }
  for (let i = 1; i < a.length; i++) if (a[i] < a[i - 1]) n++;
  return n;
}

/** x86-64 kernel-half addresses (the top 17 bits set). */
export const KERNEL_HALF = 0xffff800000000000n;

/** How many addresses lie in the kernel half: the non-per-CPU symbols must. */
export function kernelHalfCount(a: BigUint64Array): number {
  let n = 0;
  if (LITTLE_ENDIAN) {
    const w = new Uint32Array(a.buffer, a.byteOffset, a.length * 2);
    for (let i = 0; i < a.length; i++) if (w[2 * i + 1] >= 0xffff8000) n++;
    return n;
  }
  for (let i = 0; i < a.length; i++) if (a[i] >= KERNEL_HALF) n++;
  return n;
}
