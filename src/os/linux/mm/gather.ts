// Gathers the present pages of virtual ranges (a process's maps, a module's memory) into one buffer for a
// scanner: physically contiguous stretches are read at once, a physical page is taken once across the
// gatherers sharing a `seen` set (shared pages, the zero page), and the bytes are bounded.
import type { AddressSpace, MappingWalkOptions, VaRange } from '../../../arch/types.js';
import { isVigilError } from '../../../util/errors.js';
import type { PhysicalMemory } from '../../../vmm/types.js';
import { presentPages } from './present-pages.js';

const PAGE = 4096;

/** What the gatherer needs from an address space: its present pages. */
export type PageSource = Pick<AddressSpace, 'walkMappings'>;

/** A run of virtually contiguous bytes placed in the scan buffer. */
export interface GatheredRun {
  va: bigint;
  /** Offset in the scan buffer. */
  offset: number;
  length: number;
  /** Index into the region list the run came from. */
  region: number;
}

export interface GatherStats {
  /** Bytes placed in the buffer. */
  bytes: number;
  /** Present pages left out because this sweep already scanned them (shared with another process). */
  sharedPages: number;
  /** The byte budget cut the gathering short. */
  truncated: boolean;
  /** A page-table walk stopped at its bound or failed (hostile tables). */
  walkErrors: string[];
}

/**
 * Gathers present pages of address ranges into one buffer, reading each physically contiguous stretch at
 * once, and remembers which physical pages it took (across every gatherer sharing `seen`).
 */
export class MemoryGatherer {
  readonly runs: GatheredRun[] = [];
  readonly stats: GatherStats = { bytes: 0, sharedPages: 0, truncated: false, walkErrors: [] };
  readonly #memory: PhysicalMemory;
  readonly #buf: Buffer;
  readonly #seen: Set<number>;
  readonly #limit: number;
  // A pending physical read: buffer offset, physical address, length.
  #pOff = 0;
  #pPa = 0;
  #pLen = 0;

  constructor(memory: PhysicalMemory, buffer: Buffer, seen: Set<number>, limit: number) {
    this.#memory = memory;
    this.#buf = buffer;
    this.#seen = seen;
    this.#limit = Math.min(limit, buffer.length);
  }

  /** The bytes gathered so far (a view of the shared buffer: scan it before the next gatherer runs). */
  get data(): Buffer {
    this.#flush();
    return this.#buf.subarray(0, this.stats.bytes);
  }

  get full(): boolean {
    return this.stats.bytes + PAGE > this.#limit;
  }

  /** Add the present pages of [start, end) of `space`; false once the budget is used up. */
  add(space: PageSource, range: VaRange, region: number, walk: MappingWalkOptions = {}): boolean {
    const start = range.start & ~0xfffn;
    try {
      const maxEntries = (this.#limit / PAGE) * 2 + 1024;
      for (const { va, pfn } of presentPages(space, start, range.end, { maxEntries, ...walk })) {
        if (this.full) {
          this.stats.truncated = true;
          return false;
        }
        if (this.#seen.has(pfn)) {
          this.stats.sharedPages++;
          continue;
        }
        this.#seen.add(pfn);
        this.#take(va, pfn * PAGE, region);
      }
    } catch (e) {
      if (!isVigilError(e)) throw e;
      this.stats.walkErrors.push(e.message);
    }
    return true;
  }

  #take(va: bigint, pa: number, region: number): void {
    const off = this.stats.bytes;
    const last = this.runs[this.runs.length - 1];
    if (
      last &&
      last.region === region &&
      last.va + BigInt(last.length) === va &&
      last.offset + last.length === off
    ) {
      last.length += PAGE;
    } else {
      this.runs.push({ va, offset: off, length: PAGE, region });
    }
    if (this.#pLen > 0 && this.#pPa + this.#pLen === pa && this.#pOff + this.#pLen === off)
      this.#pLen += PAGE;
    else {
      this.#flush();
      this.#pOff = off;
      this.#pPa = pa;
      this.#pLen = PAGE;
    }
    this.stats.bytes += PAGE;
  }

  #flush(): void {
    if (this.#pLen === 0) return;
    const into = this.#buf.subarray(this.#pOff, this.#pOff + this.#pLen);
    const got = this.#memory.read(BigInt(this.#pPa), this.#pLen, into);
    if (got.buffer !== into.buffer || got.byteOffset !== into.byteOffset) got.copy(into, 0, 0, this.#pLen);
    this.#pLen = 0;
  }
}
