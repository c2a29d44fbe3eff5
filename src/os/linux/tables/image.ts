// Kernel text and read-only data as byte ranges: where they lie (the linker's boundary symbols), their bytes
// read with unmapped pages as counted zeros, and one snapshot of text per cache epoch for the checks that
// read all of it.
import { VigilError, isVigilError } from '../../../util/errors.js';
import { hex, type KernelAccess } from '../modules/access.js';

/** Text is ~14 MiB and rodata ~9 MiB on a distribution kernel. */
const MAX_RANGE_BYTES = 64 << 20;
/** Ranges are read in 64 KiB pieces; a piece that fails is read again page by page. */
const READ_PIECE = 0x10000;
/** x86-64 module mapping space (Documentation/x86/x86_64/mm.rst): BPF images and ftrace trampolines too. */
export const MODULE_AREA = { start: 0xffffffffa0000000n, end: 0xffffffffff000000n };

export const inModuleArea = (va: bigint): boolean => va >= MODULE_AREA.start && va < MODULE_AREA.end;

/** The walkers' kernel slice and its cache epoch when there is one (Kernel's). */
export type EpochKernel = KernelAccess & { readonly epoch?: { readonly value: number } };

export interface ImageRange {
  name: 'text' | 'rodata';
  start: bigint;
  end: bigint;
}

/** Kernel text (_stext.._etext) and read-only data (__start_rodata..__end_rodata) when present. */
export function imageRanges(k: KernelAccess): ImageRange[] {
  const out: ImageRange[] = [];
  for (const [name, a, b] of [
    ['text', '_stext', '_etext'],
    ['rodata', '__start_rodata', '__end_rodata'],
  ] as const) {
    const start = k.symbols.address(a);
    const end = k.symbols.address(b);
    if (start === undefined || end === undefined || end <= start) continue;
    if (end - start > BigInt(MAX_RANGE_BYTES)) {
      throw new VigilError('os', 'bound', `kernel ${name} ${hex(start)}..${hex(end)} is implausibly large`);
    }
    out.push({ name, start, end });
  }
  if (!out.some((r) => r.name === 'text')) {
    throw new VigilError('os', 'not-found', 'kernel text boundaries (_stext/_etext) not found');
  }
  return out;
}

/** A range being read, and how many of its pages read as zeros because they are not mapped. */
export interface ImageRead {
  range: ImageRange;
  unreadablePages: number;
}

/** Fill `buf` with the range's raw bytes from range offset `at`; unmapped pages read as zeros, counted. */
export function readImageBytes(k: KernelAccess, rs: ImageRead, buf: Buffer, at: number): void {
  for (let i = 0; i < buf.length;) {
    const va = rs.range.start + BigInt(at + i);
    const n = Math.min(READ_PIECE - Number(va & BigInt(READ_PIECE - 1)), buf.length - i);
    const piece = buf.subarray(i, i + n);
    try {
      k.space.readInto(va, piece);
    } catch (e) {
      if (!isVigilError(e)) throw e;
      for (let p = i; p < i + n;) {
        const pv = rs.range.start + BigInt(at + p);
        const step = Math.min(0x1000 - Number(pv & 0xfffn), i + n - p);
        const page = k.space.tryRead(pv, step);
        if (page) page.copy(buf, p);
        else {
          buf.fill(0, p, p + step);
          rs.unreadablePages++;
        }
        p += step;
      }
    }
    i += n;
  }
}

export interface TextSnapshot {
  range: ImageRange;
  bytes: Buffer;
  unreadablePages: number;
  epoch: number | undefined;
}

const snapshots = new WeakMap<object, TextSnapshot>();

/**
 * The raw bytes of kernel text, read once per cache epoch (one sweep on a live guest, forever on a dump)
 * and shared by the policies that look at it (memory-access, kernel-hooks).
 */
export function textSnapshot(k: EpochKernel): TextSnapshot {
  const epoch = k.epoch?.value;
  let snap = snapshots.get(k);
  if (snap && epoch !== undefined && snap.epoch === epoch) return snap;
  if (!snap) {
    const range = imageRanges(k).find((r) => r.name === 'text')!;
    snap = { range, bytes: Buffer.alloc(Number(range.end - range.start)), unreadablePages: 0, epoch };
    snapshots.set(k, snap);
  }
  const holder = { range: snap.range, unreadablePages: 0 };
  readImageBytes(k, holder, snap.bytes, 0);
  snap.unreadablePages = holder.unreadablePages;
  snap.epoch = epoch;
  return snap;
}
