// What memory-access remembers of kernel text and rodata between sweeps (the raw bytes last read, the
// normalised copy known to match the baseline, a verdict per chunk) and the sweep that re-judges only the
// chunks whose bytes moved.
import type { KernelAccess } from '../../os/linux/modules/access.js';
import {
  firstSiteFrom,
  imageRanges,
  normalizeText,
  patchSites,
  readImageBytes,
  tableSlots,
  textSnapshot,
  MAX_SYSCALLS,
  SYSCALL_TABLES,
  type CallTargets,
  type ImageRange,
  type PatchSites,
} from '../../os/linux/tables/index.js';
import { CHUNK_SIZE, sha256, type RangeBaseline } from './memory-access-baseline.js';

/** What the integrity checks read: the walkers' kernel slice, and the cache epoch when there is one. */
export type IntegrityKernel = KernelAccess & {
  readonly epoch?: { readonly frozen: boolean; readonly value: number };
};

/** What a chunk looked like when it was last judged (its raw bytes have not changed since). */
export interface ChunkVerdict {
  changed: boolean;
  /** Sites starting in this chunk's window that are in no accepted state. */
  bad: number[];
  /** Normalised bytes of a changed chunk, to diff against the pristine copy. */
  normalized?: Buffer;
  sha256?: string;
}

export interface RangeState {
  range: ImageRange;
  len: number;
  /** The raw bytes as last read: a sweep re-judges only the chunks whose raw bytes moved. */
  lastRaw: Buffer;
  /** Normalised bytes known to equal the baseline, chunk by chunk (`verified`). */
  pristine: Buffer;
  verified: Uint8Array;
  verdicts: (ChunkVerdict | undefined)[];
  masks: [number, number][];
  /** Kernel text only: its run-time patch sites, and each site's raw bytes when its chunk was verified. */
  sites?: PatchSites;
  siteRaw?: Uint8Array;
  unreadablePages: number;
}

const states = new WeakMap<object, RangeState[]>();

export function rangeStates(k: IntegrityKernel): RangeState[] {
  let s = states.get(k);
  if (!s) {
    s = imageRanges(k).map((range) => {
      const len = Number(range.end - range.start);
      const chunks = Math.ceil(len / CHUNK_SIZE);
      return {
        range,
        len,
        lastRaw: Buffer.alloc(len),
        pristine: Buffer.alloc(len),
        verified: new Uint8Array(chunks),
        verdicts: new Array<ChunkVerdict | undefined>(chunks).fill(undefined),
        masks: range.name === 'rodata' ? rodataMasks(k, range) : [],
        ...(range.name === 'text' ? textSites(k) : {}),
        unreadablePages: 0,
      };
    });
    states.set(k, s);
  }
  return s;
}

function textSites(k: KernelAccess): { sites: PatchSites; siteRaw: Uint8Array } {
  const sites = patchSites(k);
  return { sites, siteRaw: new Uint8Array(sites.offsets.length * SITE_BYTES) };
}

/** Raw bytes kept per patch site: the longest form (5) is what the kernel writes. */
const SITE_BYTES = 5;

/** Record chunk `c`'s raw site bytes (from rs.lastRaw) as the pristine ones. */
export function keepSiteRaw(rs: RangeState, c: number): void {
  if (!rs.sites || !rs.siteRaw) return;
  const a = c * CHUNK_SIZE;
  const b = Math.min(a + CHUNK_SIZE, rs.len);
  const offs = rs.sites.offsets;
  for (let i = firstSiteFrom(rs.sites, a); i < offs.length && offs[i]! < b; i++) {
    const o = offs[i]!;
    rs.siteRaw.set(rs.lastRaw.subarray(o, Math.min(o + SITE_BYTES, rs.len)), i * SITE_BYTES);
  }
}

/** The pristine raw bytes of [start, end): the normalised copy with the sites' recorded bytes put back. */
export function pristineRaw(rs: RangeState, start: number, end: number): Buffer {
  const out = Buffer.from(rs.pristine.subarray(start, end));
  if (!rs.sites || !rs.siteRaw) return out;
  const offs = rs.sites.offsets;
  for (
    let i = firstSiteFrom(rs.sites, Math.max(0, start - SITE_BYTES));
    i < offs.length && offs[i]! < end;
    i++
  ) {
    const o = offs[i]!;
    for (let j = 0; j < SITE_BYTES; j++) {
      const p = o + j;
      // Only bytes the normalisation zeroed: a 2-byte site's next bytes are ordinary code.
      if (p >= start && p < end && out[p - start] === 0) out[p - start] = rs.siteRaw[i * SITE_BYTES + j]!;
    }
  }
  return out;
}

/** Ranges of rodata masked from the hash because they are checked entry by entry: the syscall tables. */
function rodataMasks(k: KernelAccess, range: ImageRange): [number, number][] {
  const out: [number, number][] = [];
  for (const name of SYSCALL_TABLES) {
    const va = k.symbols.address(name);
    if (va === undefined || va < range.start || va >= range.end) continue;
    const { count } = tableSlots(k, va, MAX_SYSCALLS);
    const o = Number(va - range.start);
    out.push([o, Math.min(o + count * 8, Number(range.end - range.start))]);
  }
  return out;
}

/** Margin around a chunk so that every patch site reaching into it is judged whole. */
const SITE_MARGIN = 8;
let scratchWindow = Buffer.alloc(0);

/** Chunk `c` of rs.lastRaw, masked and normalised (sites starting in its window judged). */
export function normalizedChunk(
  rs: RangeState,
  c: number,
  targets: CallTargets,
): { norm: Buffer; bad: number[] } {
  const a = c * CHUNK_SIZE;
  const b = Math.min(a + CHUNK_SIZE, rs.len);
  const lo = Math.max(0, a - SITE_MARGIN);
  const hi = Math.min(rs.len, b + SITE_MARGIN);
  // One scratch window reused for every chunk: callers copy out what they keep.
  if (scratchWindow.length < hi - lo) scratchWindow = Buffer.alloc(CHUNK_SIZE + 2 * SITE_MARGIN);
  const tmp = scratchWindow.subarray(0, hi - lo);
  rs.lastRaw.copy(tmp, 0, lo, hi);
  for (const [x, y] of rs.masks)
    if (y > lo && x < hi) tmp.fill(0, Math.max(x, lo) - lo, Math.min(y, hi) - lo);
  const bad = rs.sites
    ? normalizeText(tmp, rs.sites, targets, { base: lo, from: a - SITE_MARGIN, to: b })
    : [];
  return { norm: tmp.subarray(a - lo, b - lo), bad };
}

/** Judge chunk `c` from rs.lastRaw: equal to the pristine copy, or to the baseline's hash? */
function judgeChunk(
  rs: RangeState,
  c: number,
  rb: RangeBaseline | undefined,
  targets: CallTargets,
): ChunkVerdict {
  const a = c * CHUNK_SIZE;
  const { norm, bad } = normalizedChunk(rs, c, targets);
  if (rs.verified[c]) {
    const changed = !norm.equals(rs.pristine.subarray(a, a + norm.length));
    return changed ? { changed, bad, normalized: Buffer.from(norm) } : { changed, bad };
  }
  const sha = sha256(norm);
  if (rb === undefined || rb.sha256[c] === sha) {
    // Equal to the baseline (or, with no usable baseline for this range, the first thing this run saw).
    norm.copy(rs.pristine, a);
    keepSiteRaw(rs, c);
    rs.verified[c] = 1;
    return { changed: false, bad, sha256: sha };
  }
  return { changed: true, bad, normalized: Buffer.from(norm), sha256: sha };
}

/**
 * Read the range; chunks whose raw bytes moved since the last sweep (or never judged) are judged again.
 * On a live guest a chunk found changed is read and judged once more: the kernel may be mid-patch.
 */
export function sweepRange(
  k: IntegrityKernel,
  rs: RangeState,
  rb: RangeBaseline | undefined,
  targets: CallTargets,
): void {
  const scratch = Buffer.allocUnsafe(CHUNK_SIZE);
  const dirty: number[] = [];
  const snap = rs.range.name === 'text' ? textSnapshot(k) : undefined;
  rs.unreadablePages = snap?.unreadablePages ?? 0;
  for (let c = 0; c < rs.verdicts.length; c++) {
    const a = c * CHUNK_SIZE;
    const n = Math.min(CHUNK_SIZE, rs.len - a);
    const piece = snap ? snap.bytes.subarray(a, a + n) : scratch.subarray(0, n);
    if (!snap) readImageBytes(k, rs, piece, a);
    const last = rs.lastRaw.subarray(a, a + piece.length);
    const v = rs.verdicts[c];
    const same = v !== undefined && piece.equals(last);
    if (!same) piece.copy(last);
    // A chunk that was clean and has not moved keeps its verdict. One with a change or a doubtful site is
    // judged again: its verdict also depends on ftrace's state and the module list, which move on their own.
    if (same && !v.changed && v.bad.length === 0) continue;
    dirty.push(c);
  }
  // Judge after everything was read, so that a site straddling two chunks is judged on current bytes.
  const again: number[] = [];
  for (const c of dirty) {
    const v = judgeChunk(rs, c, rb, targets);
    rs.verdicts[c] = v;
    if (v.changed) again.push(c);
  }
  if (again.length > 0 && k.epoch && !k.epoch.frozen) {
    for (const c of again) {
      const a = c * CHUNK_SIZE;
      const lo = Math.max(0, a - SITE_MARGIN);
      readImageBytes(k, rs, rs.lastRaw.subarray(lo, Math.min(rs.len, a + CHUNK_SIZE + SITE_MARGIN)), lo);
    }
    for (const c of again) rs.verdicts[c] = judgeChunk(rs, c, rb, targets);
  }
}
