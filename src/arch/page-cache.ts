// A cache of guest-physical data pages, tied to an Epoch. Kernel walkers make thousands of small reads
// per sweep (a pointer here, a struct there); each uncached read is a system call (~1 µs). Within one
// epoch (one sweep on a live VM, forever on a dump) a page is read from the source once. It lives in
// arch, not vmm, because the Epoch — the rule for when cached guest state is stale — lives here.

import type { PhysicalMemory, PhysRange } from '../vmm/types.js';
import type { Epoch } from './epoch.js';

const PAGE = 4096;

export interface PageCacheStats {
  hits: number;
  misses: number;
}

export class CachedPhysicalMemory implements PhysicalMemory {
  readonly inner: PhysicalMemory;
  readonly epoch: Epoch;
  readonly maxPages: number;
  readonly stats: PageCacheStats = { hits: 0, misses: 0 };
  // Keyed by page frame number as a Number: guest-physical addresses fit in 52 bits, and Number keys
  // hash far faster than BigInt ones.
  readonly #pages = new Map<number, Buffer>();
  #seen: number;

  constructor(inner: PhysicalMemory, epoch: Epoch, maxPages = 16384) {
    this.inner = inner;
    this.epoch = epoch;
    this.maxPages = maxPages;
    this.#seen = epoch.value;
  }

  get description(): string {
    return this.inner.description;
  }

  get ranges(): readonly PhysRange[] {
    return this.inner.ranges;
  }

  #page(pfn: number): Buffer {
    const now = this.epoch.value;
    if (now !== this.#seen) {
      this.#pages.clear();
      this.#seen = now;
    }
    let page = this.#pages.get(pfn);
    if (page) {
      this.stats.hits++;
      return page;
    }
    this.stats.misses++;
    page = this.inner.read(BigInt(pfn) << 12n, PAGE);
    if (this.#pages.size >= this.maxPages) {
      // Oldest first: Map iteration order is insertion order.
      const oldest = this.#pages.keys().next().value;
      if (oldest !== undefined) this.#pages.delete(oldest);
    }
    this.#pages.set(pfn, page);
    return page;
  }

  read(paddr: bigint, length: number, into?: Buffer): Buffer {
    // Large reads bypass the cache: they are bulk copies (scans, hashes) that would only evict.
    if (length > 2 * PAGE) return this.inner.read(paddr, length, into);
    const out = into && into.length >= length ? into : Buffer.allocUnsafe(length);
    let done = 0;
    let pfn = Number(paddr >> 12n);
    let off = Number(paddr & 0xfffn);
    while (done < length) {
      const n = Math.min(PAGE - off, length - done);
      this.#page(pfn).copy(out, done, off, off + n);
      done += n;
      pfn++;
      off = 0;
    }
    return out.length === length ? out : out.subarray(0, length);
  }

  readStrict(paddr: bigint, length: number): Buffer {
    // Strictness is about holes, which the cache does not hide: ask the source.
    return this.inner.readStrict(paddr, length);
  }

  close(): void {
    this.#pages.clear();
    this.inner.close();
  }
}
