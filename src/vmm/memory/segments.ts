// Guest-physical memory stored in pieces of one source: a file (RAM file, dump) or /proc/PID/mem. Every
// concrete source reduces to a sorted list of segments and this one reader, which gathers a request
// across segments with one positioned read per contiguous piece and zero-fills the holes between them.

import { closeSync, readSync } from 'node:fs';
import { VigilError, describeSysError } from '../../util/errors.js';
import type { PhysRange, PhysicalMemory } from '../types.js';

/** One piece of guest-physical RAM and where its bytes are in the source. */
export interface Segment {
  /** First guest-physical address. */
  readonly start: bigint;
  /** Length in guest-physical space, bytes. */
  readonly size: bigint;
  /** Where the first byte lives in the source: a file offset or a host virtual address. */
  readonly offset: bigint;
  /** Bytes actually stored (ELF p_filesz); the rest up to `size` is RAM that reads as zero. Default: size. */
  readonly stored?: bigint;
}

export const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** Above this, guest-physical addresses are not RAM on any x86-64 machine (52-bit physical space). */
const MAX_PHYS = 2n ** 52n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
/** Largest single read; a caller asking for more has a bug, not a use case. */
export const MAX_READ = 1 << 30;

/**
 * Sort segments by start and check they do not overlap. With `clip`, a segment overlapping an earlier one
 * loses its overlapping head (ELF cores written with paging can list the same RAM twice); otherwise
 * overlap is malformed input.
 */
export function normalizeSegments(segments: readonly Segment[], clip = false): Segment[] {
  const sorted = segments
    .filter((s) => s.size > 0n)
    .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Segment[] = [];
  let end = 0n;
  for (const s of sorted) {
    if (s.start < 0n || s.offset < 0n || s.start + s.size > MAX_PHYS) {
      throw new VigilError(
        'vmm',
        'malformed',
        `segment ${hex(s.start)}+${hex(s.size)} is outside physical space`,
      );
    }
    if (s.stored !== undefined && (s.stored < 0n || s.stored > s.size)) {
      throw new VigilError('vmm', 'malformed', `segment ${hex(s.start)} stores more bytes than it maps`);
    }
    if (out.length > 0 && s.start < end) {
      if (!clip)
        throw new VigilError('vmm', 'malformed', `segments overlap at guest-physical ${hex(s.start)}`);
      if (s.start + s.size <= end) continue;
      const cut = end - s.start;
      const stored = s.stored ?? s.size;
      out.push({
        start: end,
        size: s.size - cut,
        offset: s.offset + cut,
        stored: stored > cut ? stored - cut : 0n,
      });
    } else {
      out.push(s);
    }
    end = out[out.length - 1].start + out[out.length - 1].size;
  }
  return out;
}

/** Merge neighbours that are contiguous both in guest-physical space and in the source. */
function coalesce(segments: readonly Segment[]): Segment[] {
  const out: Segment[] = [];
  for (const s of segments) {
    const prev = out[out.length - 1];
    const prevFull = prev !== undefined && (prev.stored ?? prev.size) === prev.size;
    if (prev && prevFull && prev.start + prev.size === s.start && prev.offset + prev.size === s.offset) {
      out[out.length - 1] = {
        start: prev.start,
        size: prev.size + s.size,
        offset: prev.offset,
        stored: prev.size + (s.stored ?? s.size),
      };
    } else {
      out.push(s);
    }
  }
  return out;
}

function rangesOf(segments: readonly Segment[]): PhysRange[] {
  const out: { start: bigint; size: bigint }[] = [];
  for (const s of segments) {
    const prev = out[out.length - 1];
    if (prev && prev.start + prev.size === s.start) prev.size += s.size;
    else out.push({ start: s.start, size: s.size });
  }
  return out.map((r) => Object.freeze(r));
}

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_READ) {
    throw new VigilError('vmm', 'usage', `read length ${length} is not an integer in 0..${MAX_READ}`);
  }
}

export interface SegmentedMemoryOptions {
  /** Open, read-only descriptor; the memory owns it and closes it in close(). */
  readonly fd: number;
  readonly description: string;
  /** Sorted, non-overlapping (see normalizeSegments). */
  readonly segments: readonly Segment[];
  /** Names the source in I/O errors, e.g. "/proc/1234/mem". */
  readonly sourceName: string;
}

/**
 * PhysicalMemory over segments of one descriptor. Reads are synchronous positioned reads; with `into`
 * given (of exactly `length` bytes) a read allocates nothing but the syscall itself.
 */
export class SegmentedMemory implements PhysicalMemory {
  readonly description: string;
  readonly ranges: readonly PhysRange[];
  /** The segments after sorting and merging. */
  readonly segments: readonly Segment[];
  private readonly sourceName: string;
  private fd: number;
  // Parallel arrays of plain numbers: the hot path does no bigint arithmetic. Guest-physical addresses
  // are below 2^52, so they are exact as doubles; source positions above 2^53 (host addresses under
  // 5-level host paging) fall back to bigint positions.
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;
  private readonly storedEnds: Float64Array;
  private readonly offsets: Float64Array;
  private readonly bigOffsets: readonly bigint[] | undefined;

  constructor(options: SegmentedMemoryOptions) {
    const segs = coalesce(normalizeSegments(options.segments));
    this.segments = Object.freeze(segs.map((s) => Object.freeze({ ...s })));
    this.ranges = Object.freeze(rangesOf(segs));
    this.description = options.description;
    this.sourceName = options.sourceName;
    this.fd = options.fd;
    const n = segs.length;
    this.starts = new Float64Array(n);
    this.ends = new Float64Array(n);
    this.storedEnds = new Float64Array(n);
    this.offsets = new Float64Array(n);
    let big = false;
    segs.forEach((s, i) => {
      this.starts[i] = Number(s.start);
      this.ends[i] = Number(s.start + s.size);
      this.storedEnds[i] = Number(s.start + (s.stored ?? s.size));
      this.offsets[i] = Number(s.offset);
      if (s.offset + s.size > MAX_SAFE) big = true;
    });
    this.bigOffsets = big ? segs.map((s) => s.offset) : undefined;
  }

  read(paddr: bigint, length: number, into?: Buffer): Buffer {
    const out = this.target(length, into);
    this.gather(paddr, length, out);
    return out;
  }

  readStrict(paddr: bigint, length: number): Buffer {
    const out = this.target(length, undefined);
    const hole = this.firstHole(paddr, length);
    if (hole !== undefined) {
      throw new VigilError('vmm', 'unmapped', `guest-physical ${hex(hole)} is not RAM`);
    }
    this.gather(paddr, length, out);
    return out;
  }

  /** The first guest-physical address in [paddr, paddr+length) that is not RAM, if any. */
  firstHole(paddr: bigint, length: number): bigint | undefined {
    checkLength(length);
    if (paddr < 0n) throw new VigilError('vmm', 'usage', `negative guest-physical address ${paddr}`);
    if (length === 0) return undefined;
    if (paddr >= MAX_PHYS) return paddr;
    let p = Number(paddr);
    const end = p + length;
    let i = this.find(p);
    while (p < end) {
      if (i < 0 || p >= this.ends[i]) return BigInt(p);
      p = this.ends[i];
      i++;
      if (p < end && (i >= this.starts.length || this.starts[i] !== p)) return BigInt(p);
    }
    return undefined;
  }

  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    closeSync(fd);
  }

  get closed(): boolean {
    return this.fd < 0;
  }

  private target(length: number, into: Buffer | undefined): Buffer {
    checkLength(length);
    if (this.fd < 0) throw new VigilError('vmm', 'state', `${this.description}: memory source is closed`);
    if (!into) return Buffer.allocUnsafe(length);
    if (into.length < length) {
      throw new VigilError('vmm', 'usage', `read buffer of ${into.length} bytes is shorter than ${length}`);
    }
    return into.length === length ? into : into.subarray(0, length);
  }

  /** Index of the last segment starting at or below p, or -1. */
  private find(p: number): number {
    const starts = this.starts;
    let lo = 0;
    let hi = starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid] <= p) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  private gather(paddr: bigint, length: number, out: Buffer): void {
    if (length === 0) return;
    if (paddr < 0n) throw new VigilError('vmm', 'usage', `negative guest-physical address ${paddr}`);
    if (paddr >= MAX_PHYS) {
      out.fill(0);
      return;
    }
    let p = Number(paddr);
    const end = p + length;
    let at = 0;
    let i = this.find(p);
    const n = this.starts.length;
    while (p < end) {
      if (i >= 0 && p < this.ends[i]) {
        const pieceEnd = Math.min(end, this.ends[i]);
        const storedEnd = Math.min(pieceEnd, this.storedEnds[i]);
        if (p < storedEnd) {
          const len = storedEnd - p;
          this.readAt(i, p - this.starts[i], out, at, len);
          at += len;
          p = storedEnd;
        }
        if (p < pieceEnd) {
          out.fill(0, at, at + (pieceEnd - p));
          at += pieceEnd - p;
          p = pieceEnd;
        }
      } else {
        const next = i + 1 < n ? Math.min(end, this.starts[i + 1]) : end;
        out.fill(0, at, at + (next - p));
        at += next - p;
        p = next;
      }
      if (i + 1 < n && p >= this.starts[i + 1]) i++;
    }
  }

  private readAt(i: number, delta: number, out: Buffer, at: number, len: number): void {
    let done = 0;
    while (done < len) {
      const position =
        this.bigOffsets === undefined
          ? this.offsets[i] + delta + done
          : this.bigOffsets[i] + BigInt(delta + done);
      let got: number;
      try {
        got = readSync(this.fd, out, at + done, len - done, position);
      } catch (e) {
        throw new VigilError(
          'vmm',
          'io',
          `reading ${this.sourceName} at ${hex(position)} failed (${describeSysError(e)})`,
          { cause: e },
        );
      }
      if (got === 0) {
        throw new VigilError(
          'vmm',
          'io',
          `short read from ${this.sourceName} at ${hex(position)}: source ended (truncated while open?)`,
        );
      }
      done += got;
    }
  }
}
