// One x86-64 page-table root over guest-physical memory: translation (4/5-level, 2 MiB and 1 GiB pages),
// virtual reads that gather physically contiguous runs, and enumeration of what is mapped.
//
// The hot path works on Numbers, not BigInts: a virtual address is split once into two 32-bit halves,
// physical addresses (< 2^52) and virtual page numbers (< 2^52) are exact doubles, and page-table entries
// are read as two 32-bit words. BigInts appear only at the API boundary.

import { VigilError } from '../../util/errors.js';
import type { PhysicalMemory } from '../../vmm/types.js';
import type { AddressSpace, PagingMode, Translation } from '../types.js';
import type { PagingCache } from './cache.js';
import { walkMappings, type Mapping, type VaRange, type WalkOptions } from './mappings.js';
import { hex, PAGING, rootFromCr3, type LevelName, type PagingDef } from './paging.js';
import type { RamRanges } from './ram.js';

/** Largest single virtual read; lengths often come from guest data, so they are capped. */
export const MAX_READ_LENGTH = 64 * 1024 * 1024;

const TWO32 = 4294967296;
const U64_MAX = 0xffff_ffff_ffff_ffffn;
// Splitting a BigInt through a typed array allocates nothing: 5x faster than `Number(va & M32)` and
// `Number(va >> 32n)`. The host is little-endian (PagingCache checks), so word 0 is the low half.
const SPLIT64 = new BigUint64Array(1);
const SPLIT32 = new Uint32Array(SPLIT64.buffer);

const PAGE_SIZES = [0x1000n, 0x20_0000n, 0x4000_0000n] as const;

// Why a walk failed.
const NOT_PRESENT = 1;
const RESERVED_PS = 2;
const TABLE_OUTSIDE_RAM = 3;
const NON_CANONICAL = 4;
const OUTSIDE_RAM = 5; // the page is mapped, but to guest-physical space with no RAM behind it
const PAST_TOP = 6; // a read running beyond 0xffff_ffff_ffff_ffff

// Leaf kinds per level, from PagingLevel.leaf.
const LEAF_NEVER = 0;
const LEAF_PS = 1;
const LEAF_ALWAYS = 2;

export class PageTableAddressSpace implements AddressSpace {
  readonly memory: PhysicalMemory;
  /** Physical address of the top-level table (CR3 without PCID and flag bits). */
  readonly root: bigint;
  readonly mode: PagingMode;
  readonly cache: PagingCache;
  readonly def: PagingDef;

  readonly #ram: RamRanges;
  readonly #rootN: number;
  readonly #salt: number;
  readonly #canonShift: number;
  readonly #canonAll: number;
  // Per level, from the root down: how to index, whether it can be a leaf, how to build the frame.
  readonly #names: LevelName[];
  readonly #shift: Int32Array;
  readonly #leaf: Int32Array;
  readonly #frameMaskLo: Int32Array;
  readonly #vaMask: Int32Array;
  readonly #sizeCode: Int32Array;
  readonly #scratch = Buffer.alloc(8);

  // Result of the last #lookup: physical base of the 4 KiB page and its info byte, or why it failed.
  #base = 0;
  #info = 0;
  #failReason = 0;
  #failLevel = 0;
  #failIndex = 0;
  #failTable = 0;
  #failPa = 0;
  #failOffset = 0;

  /**
   * @param root a CR3 value (PCID bits 0..11, bit 63 and bits above 51 are ignored) or a table address
   * @param mode 4 or 5 levels; use pagingModeFromCr4 on a live vCPU
   */
  constructor(memory: PhysicalMemory, root: bigint, mode: PagingMode, cache: PagingCache) {
    const def = PAGING[mode];
    if (def === undefined) throw new VigilError('arch', 'usage', `paging mode must be 4 or 5, got ${mode}`);
    this.memory = memory;
    this.root = rootFromCr3(root);
    this.mode = mode;
    this.def = def;
    this.cache = cache;
    this.#ram = cache.attach(memory);
    this.#rootN = Number(this.root);
    this.#salt = (this.#rootN / 4096) | 0;
    this.#canonShift = def.vaBits - 1 - 32;
    this.#canonAll = 2 ** (32 - this.#canonShift) - 1;
    const n = def.levels.length;
    this.#names = def.levels.map((l) => l.name);
    this.#shift = new Int32Array(n);
    this.#leaf = new Int32Array(n);
    this.#frameMaskLo = new Int32Array(n);
    this.#vaMask = new Int32Array(n);
    this.#sizeCode = new Int32Array(n);
    def.levels.forEach((level, i) => {
      const s = level.shift;
      this.#shift[i] = s;
      this.#leaf[i] = level.leaf === 'never' ? LEAF_NEVER : level.leaf === 'ps' ? LEAF_PS : LEAF_ALWAYS;
      if (level.leaf !== 'never') {
        // Frame bits 12..s-1 of a large-page entry are PAT and reserved bits, not address.
        this.#frameMaskLo[i] = 0xfffff000 & ~(2 ** s - 1);
        this.#vaMask[i] = (2 ** s - 1) & ~0xfff;
        this.#sizeCode[i] = (s - 12) / 9;
      }
    });
  }

  translate(va: bigint): bigint | undefined {
    checkVa(va);
    SPLIT64[0] = va;
    const lo = SPLIT32[0]!;
    if (!this.#lookup(lo, SPLIT32[1]!)) return undefined;
    return BigInt(this.#base + (lo & 0xfff));
  }

  translateDetailed(va: bigint): Translation {
    checkVa(va);
    SPLIT64[0] = va;
    const lo = SPLIT32[0]!;
    if (!this.#lookup(lo, SPLIT32[1]!)) throw this.#error(va);
    const info = this.#info;
    return {
      paddr: BigInt(this.#base + (lo & 0xfff)),
      pageSize: PAGE_SIZES[info >> 3]!,
      writable: (info & 1) !== 0,
      user: (info & 2) !== 0,
      nx: (info & 4) !== 0,
    };
  }

  read(va: bigint, length: number): Buffer {
    checkLength(length);
    return this.readInto(va, Buffer.allocUnsafe(length));
  }

  /** Fill `buf` from `va` on; throws 'unmapped' naming the first page that is not mapped. */
  readInto(va: bigint, buf: Buffer): Buffer {
    checkLength(buf.length);
    if (!this.#readCore(va, buf)) throw this.#error(this.#failPageVa(va), va, buf.length);
    return buf;
  }

  tryRead(va: bigint, length: number): Buffer | undefined {
    checkLength(length);
    const buf = Buffer.allocUnsafe(length);
    return this.#readCore(va, buf) ? buf : undefined;
  }

  readU64(va: bigint): bigint {
    checkVa(va);
    SPLIT64[0] = va;
    const lo = SPLIT32[0]!;
    if ((lo & 0xfff) > 0x1000 - 8) return this.read(va, 8).readBigUInt64LE(0);
    if (!this.#lookup(lo, SPLIT32[1]!)) throw this.#error(va);
    return this.#readSmall(va, lo, 8).readBigUInt64LE(0);
  }

  readU32(va: bigint): number {
    checkVa(va);
    SPLIT64[0] = va;
    const lo = SPLIT32[0]!;
    if ((lo & 0xfff) > 0x1000 - 4) return this.read(va, 4).readUInt32LE(0);
    if (!this.#lookup(lo, SPLIT32[1]!)) throw this.#error(va);
    return this.#readSmall(va, lo, 4).readUInt32LE(0);
  }

  /**
   * Present leaf mappings (4 KiB, 2 MiB, 1 GiB pages) in ascending VA order, optionally inside `range`.
   * Throws VigilError 'bound' after options.maxEntries mappings or options.maxTables tables: page tables
   * are guest data and can be built to be enormous or to point back at themselves.
   */
  walkMappings(range?: VaRange, options: WalkOptions = {}): Generator<Mapping> {
    this.cache.sync();
    return walkMappings(this.cache, this.#rootN, this.def, range, options);
  }

  // Translate one page into #base/#info, from the TLB or by walking the tables. False sets #fail*.
  #lookup(lo: number, hi: number): boolean {
    const c = this.cache;
    const epoch = c.sync();
    const vpn = hi * 1048576 + (lo >>> 12);
    // Consecutive pages take consecutive slots (a sweep does not evict itself); the VPN bits above the
    // low 16 and the root pick, hashed, where the run starts.
    let h = Math.imul((lo >>> 28) ^ Math.imul(hi ^ this.#salt, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 15;
    const i = ((lo >>> 12) + h) & c.tlbMask;
    if (c.tlbVpn[i] === vpn && c.tlbEpoch[i] === epoch && c.tlbRoot[i] === this.#rootN) {
      c.stats.tlbHits++;
      this.#base = c.tlbBase[i]!;
      this.#info = c.tlbInfo[i]!;
      return true;
    }
    c.stats.tlbMisses++;
    const top = hi >>> this.#canonShift;
    if (top !== 0 && top !== this.#canonAll) {
      this.#failReason = NON_CANONICAL;
      return false;
    }
    if (!this.#walk(lo, hi)) return false;
    c.tlbVpn[i] = vpn;
    c.tlbEpoch[i] = epoch;
    c.tlbRoot[i] = this.#rootN;
    c.tlbBase[i] = this.#base;
    c.tlbInfo[i] = this.#info;
    return true;
  }

  #walk(lo: number, hi: number): boolean {
    const c = this.cache;
    const levels = this.#shift.length;
    let table = this.#rootN;
    let w = 1;
    let u = 1;
    let nx = 0;
    for (let l = 0; l < levels; l++) {
      const s = this.#shift[l]!;
      const index = (s >= 32 ? hi >>> (s - 32) : s + 9 > 32 ? (lo >>> s) | (hi << (32 - s)) : lo >>> s) & 511;
      const entries = c.table(table);
      if (entries === undefined) return this.#fail(TABLE_OUTSIDE_RAM, l, index, table);
      const elo = entries[index << 1]!;
      const ehi = entries[(index << 1) | 1]!;
      if ((elo & 1) === 0) return this.#fail(NOT_PRESENT, l, index, table);
      w &= elo >>> 1;
      u &= elo >>> 2;
      nx |= ehi >>> 31;
      const leaf = this.#leaf[l]!;
      if (leaf === LEAF_ALWAYS || (leaf === LEAF_PS && (elo & 0x80) !== 0)) {
        this.#base =
          (ehi & 0xfffff) * TWO32 + ((elo & this.#frameMaskLo[l]!) >>> 0) + (lo & this.#vaMask[l]!);
        this.#info = (w & 1) | ((u & 1) << 1) | ((nx & 1) << 2) | (this.#sizeCode[l]! << 3);
        return true;
      }
      if ((elo & 0x80) !== 0) return this.#fail(RESERVED_PS, l, index, table);
      table = (ehi & 0xfffff) * TWO32 + ((elo & 0xfffff000) >>> 0);
    }
    return false; // unreachable: the last level is always a leaf
  }

  #fail(reason: number, level: number, index: number, table: number): false {
    this.#failReason = reason;
    this.#failLevel = level;
    this.#failIndex = index;
    this.#failTable = table;
    return false;
  }

  // Fill buf from va page by page, merging pages that are contiguous in guest-physical memory into one
  // memory read. False (with #fail* set and #failPa/#failOffset for the page) on the first unmapped page.
  #readCore(va: bigint, buf: Buffer): boolean {
    const len = buf.length;
    checkVa(va);
    if (len === 0) return true;
    SPLIT64[0] = va;
    let lo = SPLIT32[0]!;
    let hi = SPLIT32[1]!;
    let off = 0;
    let runPa = 0;
    let runOff = 0;
    let runLen = 0;
    while (off < len) {
      if (hi >= TWO32) {
        this.#failOffset = off;
        this.#failReason = PAST_TOP;
        return false;
      }
      if (!this.#lookup(lo, hi)) {
        this.#failOffset = off;
        return false;
      }
      const pageOff = lo & 0xfff;
      const n = Math.min(0x1000 - pageOff, len - off);
      const pa = this.#base + pageOff;
      if (runLen > 0 && pa === runPa + runLen) runLen += n;
      else {
        if (runLen > 0 && !this.#readRun(runPa, buf, runOff, runLen)) return false;
        runPa = pa;
        runOff = off;
        runLen = n;
      }
      off += n;
      lo += n;
      if (lo >= TWO32) {
        lo -= TWO32;
        hi++;
      }
    }
    return this.#readRun(runPa, buf, runOff, runLen);
  }

  #readRun(pa: number, buf: Buffer, off: number, len: number): boolean {
    if (!this.#ram.contains(pa, len)) {
      // Report the first page of the run that has no RAM behind it.
      let bad = 0;
      while (bad < len && this.#ram.contains(pa + bad, 1)) bad += 0x1000 - ((pa + bad) & 0xfff);
      this.#failReason = OUTSIDE_RAM;
      this.#failOffset = off + bad;
      this.#failPa = pa + bad;
      return false;
    }
    const into = off === 0 && len === buf.length ? buf : buf.subarray(off, off + len);
    const got = this.memory.read(BigInt(pa), len, into);
    if (got.buffer !== into.buffer || got.byteOffset !== into.byteOffset) got.copy(into, 0, 0, len);
    return true;
  }

  // A read of up to 8 bytes inside the page #lookup just resolved.
  #readSmall(va: bigint, lo: number, len: number): Buffer {
    const pa = this.#base + (lo & 0xfff);
    if (!this.#ram.contains(pa, len)) {
      this.#failReason = OUTSIDE_RAM;
      this.#failPa = pa;
      throw this.#error(va);
    }
    return this.memory.read(BigInt(pa), len, this.#scratch);
  }

  #failPageVa(va: bigint): bigint {
    return this.#failOffset === 0 ? va : va + BigInt(this.#failOffset);
  }

  #error(pageVa: bigint, readVa?: bigint, readLen?: number): VigilError {
    const what = readVa === undefined ? '' : ` (reading ${hex(readLen!)} bytes at ${hex(readVa)})`;
    const at = `of table at PA ${hex(this.#failTable)}`;
    const level = this.#names[this.#failLevel];
    switch (this.#failReason) {
      case NON_CANONICAL: {
        const bit = this.def.vaBits - 1;
        const msg = `VA ${hex(pageVa)} is not canonical: bits 63..${bit} must all equal bit ${bit} in ${this.mode}-level paging`;
        return new VigilError('arch', 'unmapped', msg + what);
      }
      case PAST_TOP:
        return new VigilError('arch', 'unmapped', `read runs past the top of the address space${what}`);
      case RESERVED_PS:
        return new VigilError(
          'arch',
          'unmapped',
          `VA ${hex(pageVa)} not mapped: ${level} entry ${hex(this.#failIndex)} ${at} has the reserved PS bit set${what}`,
        );
      case TABLE_OUTSIDE_RAM:
        return new VigilError(
          'arch',
          'unmapped',
          `VA ${hex(pageVa)} not mapped: ${level} table at PA ${hex(this.#failTable)} is outside guest RAM${what}`,
        );
      case OUTSIDE_RAM:
        return new VigilError(
          'arch',
          'unmapped',
          `VA ${hex(pageVa)} maps to PA ${hex(this.#failPa)}, which is outside guest RAM${what}`,
        );
      default:
        return new VigilError(
          'arch',
          'unmapped',
          `VA ${hex(pageVa)} not mapped: ${level} entry not present (entry ${hex(this.#failIndex)} ${at})${what}`,
        );
    }
  }
}

function checkVa(va: bigint): void {
  if (va < 0n || va > U64_MAX) {
    throw new VigilError('arch', 'usage', `virtual address ${va} is not an unsigned 64-bit value`);
  }
}

function checkLength(length: number): void {
  if (!Number.isInteger(length) || length < 0) {
    throw new VigilError('arch', 'usage', `read length must be a non-negative integer, got ${length}`);
  }
  if (length > MAX_READ_LENGTH) {
    throw new VigilError('arch', 'bound', `read of ${length} bytes exceeds the ${MAX_READ_LENGTH}-byte cap`);
  }
}
