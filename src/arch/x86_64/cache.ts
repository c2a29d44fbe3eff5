// The caches under address translation, both tied to one Epoch:
// - a software TLB keyed by (page-table root, virtual page number) holding the physical base of the 4 KiB
//   page, the size of the page that maps it and the effective W/U/NX flags. It is direct-mapped over
//   typed arrays: bounded memory, no allocation on a hit, and every entry carries the epoch it was filled
//   in, so moving the epoch invalidates it in O(1);
// - the page-table pages read from guest memory (physical page -> 4 KiB of entries), cleared when the
//   epoch moves and capped in size.
// One PagingCache serves one PhysicalMemory and any number of roots on it (kernel and process page
// tables share their upper levels, so they share table pages here too).

import { endianness } from 'node:os';

import { VigilError } from '../../util/errors.js';
import type { PhysicalMemory } from '../../vmm/types.js';
import type { Epoch } from '../epoch.js';
import { hex } from './paging.js';
import { RamRanges } from './ram.js';

export interface PagingCacheOptions {
  /** Software TLB entries, a power of two (default 65536: 256 MiB of 4 KiB pages, ~2.3 MiB of memory). */
  tlbEntries?: number;
  /** Page-table pages kept (default 8192: 32 MiB). The oldest goes first when full. */
  tablePages?: number;
}

export interface PagingCacheStats {
  tlbHits: number;
  tlbMisses: number;
  tableHits: number;
  tableReads: number;
  /** Times the epoch was seen to move and the caches were dropped. */
  flushes: number;
}

const TABLE_BYTES = 4096;

export class PagingCache {
  readonly epoch: Epoch;
  readonly stats: PagingCacheStats = { tlbHits: 0, tlbMisses: 0, tableHits: 0, tableReads: 0, flushes: 0 };

  // The TLB, as parallel arrays indexed by a hash of (root, VPN). Read directly by the address space.
  /** @internal */ readonly tlbMask: number;
  /** @internal */ readonly tlbVpn: Float64Array;
  /** @internal */ readonly tlbRoot: Float64Array;
  /** @internal */ readonly tlbEpoch: Float64Array;
  /** @internal Physical address of the 4 KiB page (inside a large page when the mapping is large). */
  readonly tlbBase: Float64Array;
  /** @internal Bits 0..2: writable, user, NX; bits 3..4: page size code (0 4 KiB, 1 2 MiB, 2 1 GiB). */
  readonly tlbInfo: Uint8Array;

  readonly #tablePages: number;
  readonly #tables = new Map<number, Uint32Array>();
  #seen: number;
  #memory: PhysicalMemory | undefined;
  #ram: RamRanges | undefined;

  constructor(epoch: Epoch, options: PagingCacheOptions = {}) {
    if (endianness() !== 'LE') {
      throw new VigilError('arch', 'unsupported', 'page-table decoding assumes a little-endian host');
    }
    const entries = options.tlbEntries ?? 65536;
    if (!Number.isInteger(entries) || entries < 1 || entries > 1 << 24 || (entries & (entries - 1)) !== 0) {
      throw new VigilError('arch', 'usage', `tlbEntries must be a power of two up to 2^24, got ${entries}`);
    }
    this.#tablePages = Math.max(1, Math.floor(options.tablePages ?? 8192));
    this.epoch = epoch;
    this.#seen = epoch.value;
    this.tlbMask = entries - 1;
    this.tlbVpn = new Float64Array(entries);
    this.tlbRoot = new Float64Array(entries);
    this.tlbEpoch = new Float64Array(entries).fill(-1);
    this.tlbBase = new Float64Array(entries);
    this.tlbInfo = new Uint8Array(entries);
  }

  /** Bind to the memory the cached pages come from; one cache cannot mix two memories. */
  attach(memory: PhysicalMemory): RamRanges {
    if (this.#memory === undefined) {
      this.#memory = memory;
      this.#ram = new RamRanges(memory.ranges);
    } else if (this.#memory !== memory) {
      throw new VigilError('arch', 'usage', 'a PagingCache serves one PhysicalMemory; create one per memory');
    }
    return this.#ram!;
  }

  /** The current epoch value, dropping the table pages first if it moved (TLB entries carry their epoch). */
  sync(): number {
    const now = this.epoch.value;
    if (now !== this.#seen) {
      this.#tables.clear();
      this.#seen = now;
      this.stats.flushes++;
    }
    return now;
  }

  /** Entries of the page table at physical `pa` as little-endian 32-bit halves, or undefined outside RAM. */
  table(pa: number): Uint32Array | undefined {
    const hit = this.#tables.get(pa);
    if (hit !== undefined) {
      this.stats.tableHits++;
      return hit;
    }
    if (!this.#ram!.contains(pa, TABLE_BYTES)) return undefined;
    const words = new Uint32Array(TABLE_BYTES / 4);
    const view = Buffer.from(words.buffer);
    const got = this.#memory!.read(BigInt(pa), TABLE_BYTES, view);
    if (got.length !== TABLE_BYTES) {
      throw new VigilError('arch', 'io', `short read of page table at PA ${hex(pa)}: ${got.length} bytes`);
    }
    if (got.buffer !== view.buffer || got.byteOffset !== 0) got.copy(view);
    this.stats.tableReads++;
    if (this.#tables.size >= this.#tablePages) {
      // Not an LRU: the oldest page goes. Upper levels are re-read at once and stay hot afterwards.
      this.#tables.delete(this.#tables.keys().next().value!);
    }
    this.#tables.set(pa, words);
    return words;
  }

  /** Drop everything now, whatever the epoch says (after writing guest page tables ourselves). */
  clear(): void {
    this.#tables.clear();
    this.tlbEpoch.fill(-1);
  }
}
