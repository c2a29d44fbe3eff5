// Synthetic guest-physical memory and page tables for tests: a Buffer posing as guest RAM (with holes if
// asked) and a builder that writes PML5/PML4/PDPT/PD/PT entries into it the way the Intel SDM lays them
// out. Tests of anything above arch (kernel walkers) can build a small virtual address space with it.

import { VigilError } from '../../util/errors.js';
import type { PhysicalMemory, PhysRange } from '../../vmm/types.js';
import type { PagingMode } from '../types.js';
import { hex, PAGING, PTE, type LevelName } from './paging.js';

/** Guest RAM in a Buffer; file offset = guest-physical address. Bytes outside `ranges` read as zero. */
export class BufferPhysicalMemory implements PhysicalMemory {
  readonly description: string;
  readonly ranges: readonly PhysRange[];
  readonly bytes: Buffer;
  /** Calls to read/readStrict, and bytes they returned: tests check that reads are batched. */
  reads = 0;
  bytesRead = 0;

  constructor(size: number, ranges?: readonly PhysRange[]) {
    this.bytes = Buffer.alloc(size);
    this.ranges = ranges ?? [{ start: 0n, size: BigInt(size) }];
    this.description = `test buffer of ${size} bytes`;
  }

  read(paddr: bigint, length: number, into?: Buffer): Buffer {
    this.reads++;
    this.bytesRead += length;
    const out = into ? into.subarray(0, length) : Buffer.alloc(length);
    out.fill(0);
    const end = paddr + BigInt(length);
    for (const r of this.ranges) {
      const from = paddr > r.start ? paddr : r.start;
      const to = end < r.start + r.size ? end : r.start + r.size;
      if (from < to) this.bytes.copy(out, Number(from - paddr), Number(from), Number(to));
    }
    return out;
  }

  readStrict(paddr: bigint, length: number): Buffer {
    const inside = this.ranges.some((r) => paddr >= r.start && paddr + BigInt(length) <= r.start + r.size);
    if (!inside) throw new VigilError('vmm', 'unmapped', `PA ${hex(paddr)}+${hex(length)} is not RAM`);
    return this.read(paddr, length);
  }

  close(): void {}

  writeU64(pa: bigint, value: bigint): void {
    this.bytes.writeBigUInt64LE(BigInt.asUintN(64, value), Number(pa));
  }

  readU64(pa: bigint): bigint {
    return this.bytes.readBigUInt64LE(Number(pa));
  }

  write(pa: bigint, data: Uint8Array): void {
    this.bytes.set(data, Number(pa));
  }
}

export interface PageFlags {
  /** Default true. */
  writable?: boolean;
  /** Default false (supervisor). */
  user?: boolean;
  /** Default false (executable). */
  nx?: boolean;
}

/** Builds IA-32e page tables in a BufferPhysicalMemory, allocating table pages upward from `tableBase`. */
export class PageTableBuilder {
  readonly memory: BufferPhysicalMemory;
  readonly mode: PagingMode;
  /** Physical address of the top-level table: use it as CR3. */
  readonly root: bigint;
  #next: bigint;
  readonly #limit: bigint;

  constructor(memory: BufferPhysicalMemory, mode: PagingMode, tableBase: bigint, tableLimit?: bigint) {
    this.memory = memory;
    this.mode = mode;
    this.#next = tableBase;
    this.#limit = tableLimit ?? BigInt(memory.bytes.length);
    this.root = this.allocTable();
  }

  /** A zeroed 4 KiB page from the table area. */
  allocTable(): bigint {
    if (this.#next + 0x1000n > this.#limit) throw new Error('PageTableBuilder: table area full');
    const pa = this.#next;
    this.#next += 0x1000n;
    this.memory.bytes.fill(0, Number(pa), Number(pa) + 0x1000);
    return pa;
  }

  /**
   * Map `size` bytes (4 KiB, 2 MiB or 1 GiB: one page) at `va` to `pa`. Intermediate entries are created
   * present, writable and user, so the leaf alone decides permissions unless a test changes them.
   */
  map(va: bigint, pa: bigint, size: bigint, flags: PageFlags = {}): void {
    const leafLevel =
      size === 0x1000n ? 'PT' : size === 0x20_0000n ? 'PD' : size === 0x4000_0000n ? 'PDPT' : '';
    if (leafLevel === '') throw new Error(`PageTableBuilder: bad page size ${hex(size)}`);
    if ((va | pa) & (size - 1n)) throw new Error(`PageTableBuilder: ${hex(va)} -> ${hex(pa)} not aligned`);
    let entry = PTE.present | (pa & PTE.addressMask);
    if (flags.writable ?? true) entry |= PTE.writable;
    if (flags.user) entry |= PTE.user;
    if (flags.nx) entry |= PTE.nx;
    if (leafLevel !== 'PT') entry |= PTE.ps;
    this.setEntry(va, leafLevel, entry);
  }

  /** Map a run of 4 KiB pages: va..va+length -> pa..pa+length. */
  mapRange(va: bigint, pa: bigint, length: bigint, flags: PageFlags = {}): void {
    for (let off = 0n; off < length; off += 0x1000n) this.map(va + off, pa + off, 0x1000n, flags);
  }

  /** Physical address of the entry for `va` at `level`, creating the tables above it as needed. */
  entryAddress(va: bigint, level: LevelName): bigint {
    let table = this.root;
    for (const l of PAGING[this.mode].levels) {
      const addr = table + ((va >> BigInt(l.shift)) & 511n) * 8n;
      if (l.name === level) return addr;
      let e = this.memory.readU64(addr);
      if ((e & PTE.present) === 0n) {
        e = this.allocTable() | PTE.present | PTE.writable | PTE.user;
        this.memory.writeU64(addr, e);
      } else if ((e & PTE.ps) !== 0n) {
        throw new Error(`PageTableBuilder: ${l.name} entry for ${hex(va)} is a large page`);
      }
      table = e & PTE.addressMask;
    }
    throw new Error(`PageTableBuilder: no level ${level} in ${this.mode}-level paging`);
  }

  entry(va: bigint, level: LevelName): bigint {
    return this.memory.readU64(this.entryAddress(va, level));
  }

  setEntry(va: bigint, level: LevelName, value: bigint): void {
    this.memory.writeU64(this.entryAddress(va, level), value);
  }
}
