// `program-integrity`: Livewire's user program integrity detector. For every process, each page of each
// executable file-backed map (r-x with a vm_file, including one that mprotect split off) should be the
// file's own page: the page-cache page at index vm_pgoff + (va - vm_start) / 4096 of the file's
// address_space (vm_file->f_mapping, its i_pages xarray). Text is position-independent or at fixed
// addresses (no text relocations in modern toolchains), so a running program shares those pages with the
// page cache. A private copy (copy-on-write after mprotect(RWX) + memcpy, or a write through
// /proc/PID/mem or ptrace) maps another physical page: its bytes are compared with the page cache's, and
// a difference is a finding naming the page, its file offset and the first differing bytes.
//
// Pages the page cache no longer holds are compared with a baseline of page hashes per (file, offset),
// learned on the first sweep from pages proven to be the page cache's; without one they are counted as
// unchecked. On a live guest a page can move between reads: a difference is confirmed by reading the
// page tables, the page cache and both pages again before it is reported.
import { createHash } from 'node:crypto';
import type { AddressSpace } from '../../arch/types.js';
import type { Kernel } from '../../os/linux/kernel.js';
import {
  mapsBeingChanged,
  stillOwns,
  userProcesses,
  type UserProcess,
} from '../../os/linux/mm/address-spaces.js';
import { VM_ACCOUNT, VM_EXEC, VM_WRITE, type MemoryMap } from '../../os/linux/mm/maps.js';
import { presentPages, type PresentPage } from '../../os/linux/mm/present-pages.js';
import { readProcessDetails } from '../../os/linux/tasks/index.js';
import { xarrayEntries, type XarrayReader } from '../../os/linux/xarray.js';
import { isVigilError, VigilError } from '../../util/errors.js';
import type { PhysicalMemory } from '../../vmm/types.js';
import type { JsonValue } from '../baseline.js';
import { definePolicy, numberOption, type SweepContext } from '../policy.js';
import type { Finding, Severity } from '../types.js';
import { hex, startTime } from './process-facts.js';
import { readProcess, vmaEvidence } from './process-memory.js';

const PAGE = 4096;
/** page->mapping low bit: an anonymous page (its mapping is an anon_vma). */
const PAGE_MAPPING_ANON = 1n;
/** A file's cached pages are walked once per sweep up to this many (4 GiB of text). */
const MAX_CACHE_ENTRIES = 1 << 20;
/** A large folio spans at most this many pages (order 11); tails are checked one by one anyway. */
const MAX_FOLIO_PAGES = 2048;
/** Differing pages reported per process; the rest are counted in the evidence. */
const MAX_PAGES_PER_PROCESS = 16;
/** Bytes of each side shown from the first difference on. */
const EXCERPT = 16;
const INT3 = 0xcc;

// ------------------------------------------------------------------------------------ the page cache

/** What the check needs from the kernel's page cache and memory. */
export interface TextSource {
  /**
   * The physical frame the PTE maps, when it is the page cache's page of `mapping` at `index` (its
   * struct page says so, or the xarray holds it): the process runs the file's own page.
   */
  isCachePage(pfn: number, mapping: bigint, index: number): boolean;
  /** The page cache's frame for `index` of `mapping`, or undefined when the file's page is not cached. */
  cacheFrame(mapping: bigint, index: number): number | undefined;
  /** Whether the frame is an anonymous page (a private copy). */
  isAnonymous(pfn: number): boolean | undefined;
  readFrame(pfn: number): Buffer;
}

interface PageFacts {
  mapping: bigint;
  index: bigint;
  /** compound_head: bit 0 set on a tail page, the rest the head's struct page. */
  compoundHead: bigint;
}

/** What KernelTextSource reads: a Kernel fits; tests pass synthetic BTF and memory. */
export interface PageCacheKernel extends XarrayReader {
  readonly kaslr: { readonly vmemmapBase: bigint };
  readonly memory: Pick<PhysicalMemory, 'ranges' | 'read'>;
}

/**
 * The page cache through struct page (vmemmap) and each file's i_pages xarray, cached for one sweep.
 * pfn ↔ struct page: page = vmemmap_base + pfn * sizeof(struct page).
 */
export class KernelTextSource implements TextSource {
  readonly #k: PageCacheKernel;
  readonly #pageSize: bigint;
  readonly #maxPfn: number;
  readonly #off: { mapping: number; index: number; compoundHead: number; iPages: number };
  readonly #files = new Map<bigint, { byIndex: Map<number, bigint>; sorted: number[] }>();
  readonly #proven = new Map<number, { mapping: bigint; index: number }>();
  /** Counted, for evidence: pages the xarray yielded that were not struct page pointers. */
  badEntries = 0;

  constructor(k: PageCacheKernel) {
    this.#k = k;
    const t = k.types;
    this.#pageSize = BigInt(t.sizeof('page'));
    if (this.#pageSize < 16n) {
      throw new VigilError('os', 'malformed', `struct page has ${this.#pageSize} bytes in this kernel's BTF`);
    }
    let top = 0n;
    for (const r of k.memory.ranges) if (r.start + r.size > top) top = r.start + r.size;
    this.#maxPfn = Number(top / BigInt(PAGE));
    this.#off = {
      mapping: t.offsetof('page', 'mapping'),
      index: t.offsetof('page', 'index'),
      compoundHead: t.offsetof('page', 'compound_head'),
      iPages: t.offsetof('address_space', 'i_pages'),
    };
  }

  /** Forget what this sweep read so far (the guest may have changed it): for re-checks. */
  forget(): void {
    this.#files.clear();
    this.#proven.clear();
  }

  structPage(pfn: number): bigint {
    return this.#k.kaslr.vmemmapBase + BigInt(pfn) * this.#pageSize;
  }

  /** The frame a struct page pointer describes, or undefined when it is not one (hostile xarray). */
  pfnOf(pageVa: bigint): number | undefined {
    const rel = pageVa - this.#k.kaslr.vmemmapBase;
    if (rel < 0n || rel % this.#pageSize !== 0n) return undefined;
    const pfn = rel / this.#pageSize;
    return pfn < BigInt(this.#maxPfn) ? Number(pfn) : undefined;
  }

  #facts(pfn: number): PageFacts | undefined {
    const o = this.#off;
    const span = Math.max(o.mapping, o.index, o.compoundHead) + 8;
    const b = this.#k.space.tryRead(this.structPage(pfn), span);
    if (!b) return undefined;
    return {
      mapping: b.readBigUInt64LE(o.mapping),
      index: b.readBigUInt64LE(o.index),
      compoundHead: b.readBigUInt64LE(o.compoundHead),
    };
  }

  isAnonymous(pfn: number): boolean | undefined {
    let f = this.#facts(pfn);
    if (f && f.compoundHead & 1n) {
      const head = this.pfnOf(f.compoundHead - 1n);
      f = head === undefined ? undefined : this.#facts(head);
    }
    return f ? (f.mapping & PAGE_MAPPING_ANON) !== 0n : undefined;
  }

  isCachePage(pfn: number, mapping: bigint, index: number): boolean {
    // Every process running the same program maps the same cached pages: prove each frame once a sweep.
    const known = this.#proven.get(pfn);
    if (known !== undefined && known.mapping === mapping && known.index === index) return true;
    const yes = this.#isCachePage(pfn, mapping, index);
    if (yes) this.#proven.set(pfn, { mapping, index });
    return yes;
  }

  #isCachePage(pfn: number, mapping: bigint, index: number): boolean {
    const f = this.#facts(pfn);
    if (!f) return false;
    if (f.mapping === mapping && f.index === BigInt(index)) return true;
    // A tail page of a large folio: the head carries mapping and index.
    if (f.compoundHead & 1n) {
      const headPfn = this.pfnOf(f.compoundHead - 1n);
      const head = headPfn === undefined ? undefined : this.#facts(headPfn);
      if (head && headPfn !== undefined && head.mapping === mapping && pfn > headPfn) {
        if (head.index + BigInt(pfn - headPfn) === BigInt(index)) return true;
      }
    }
    return this.cacheFrame(mapping, index) === pfn;
  }

  #file(mapping: bigint): { byIndex: Map<number, bigint>; sorted: number[] } {
    let f = this.#files.get(mapping);
    if (f) return f;
    const byIndex = new Map<number, bigint>();
    const xa = mapping + BigInt(this.#off.iPages);
    for (const e of xarrayEntries(this.#k, xa, { walker: 'page-cache', max: MAX_CACHE_ENTRIES })) {
      // Value entries (low bit set) are shadow entries of evicted pages, not pages.
      if (e.entry & 1n || e.index > BigInt(Number.MAX_SAFE_INTEGER)) continue;
      byIndex.set(Number(e.index), e.entry);
    }
    f = { byIndex, sorted: [...byIndex.keys()].sort((a, b) => a - b) };
    this.#files.set(mapping, f);
    return f;
  }

  cacheFrame(mapping: bigint, index: number): number | undefined {
    const f = this.#file(mapping);
    const exact = f.byIndex.get(index);
    if (exact !== undefined) {
      const pfn = this.pfnOf(exact);
      if (pfn === undefined) this.badEntries++;
      return pfn;
    }
    // A multi-index entry (large folio) sits at its first index only: find the nearest one below and
    // accept the frame if its struct page is that folio's tail.
    let lo = 0;
    let hi = f.sorted.length - 1;
    let below = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (f.sorted[mid]! < index) {
        below = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (below < 0) return undefined;
    const first = f.sorted[below]!;
    if (index - first >= MAX_FOLIO_PAGES) return undefined;
    const headVa = f.byIndex.get(first)!;
    const headPfn = this.pfnOf(headVa);
    if (headPfn === undefined) return undefined;
    const pfn = headPfn + (index - first);
    if (pfn >= this.#maxPfn) return undefined;
    const tail = this.#facts(pfn);
    return tail && tail.compoundHead === headVa + 1n ? pfn : undefined;
  }

  readFrame(pfn: number): Buffer {
    return this.#k.memory.read(BigInt(pfn) * BigInt(PAGE), PAGE);
  }
}

// ------------------------------------------------------------------------------------ the comparison

export interface PageDiff {
  /** Offset in the page of the first differing byte. */
  first: number;
  /** Bytes that differ. */
  count: number;
}

/** Where two pages differ, or undefined when they are equal. */
export function diffPages(a: Buffer, b: Buffer): PageDiff | undefined {
  if (a.equals(b)) return undefined;
  let first = -1;
  let count = 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  count += Math.abs(a.length - b.length);
  return { first: first < 0 ? n : first, count };
}

export const pageHash = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 32);

/** Known-good page hashes of one file by file offset (from the baseline). */
export type KnownPages = ReadonlyMap<number, string>;

/** A present page of an executable map and the frame it maps. */
export type TextPage = PresentPage;

export interface PageResult {
  va: bigint;
  fileOffset: number;
  pfn: number;
  /** 'page-cache': compared with the cached page; 'baseline': with a learned hash (cache lacked it). */
  against: 'page-cache' | 'baseline';
  diff?: PageDiff;
  processBytes?: Buffer;
  fileBytes?: Buffer;
  cachePfn?: number;
}

export interface VmaCheck {
  /** Pages the process shares with the page cache (the normal case). */
  shared: number;
  /** Private copies whose bytes equal the file's. */
  identicalCopies: number;
  /** Pages neither the page cache nor the baseline could vouch for. */
  unchecked: number;
  differing: PageResult[];
  /** Pages the process shares with the page cache, with their hash source: for learning. */
  sharedPages: { fileOffset: number; pfn: number }[];
}

/**
 * Check the present pages of one executable file map. `pgoff` is the map's vm_pgoff (in pages);
 * `mapping` the file's address_space. Pure over `src`, so it runs on synthetic pages in tests.
 */
export function checkTextPages(
  src: TextSource,
  mapping: bigint,
  start: bigint,
  pgoff: bigint,
  pages: Iterable<TextPage>,
  known?: KnownPages,
  collectShared = false,
): VmaCheck {
  const out: VmaCheck = { shared: 0, identicalCopies: 0, unchecked: 0, differing: [], sharedPages: [] };
  for (const p of pages) {
    const idxBig = pgoff + (p.va - start) / BigInt(PAGE);
    if (idxBig < 0n || idxBig > BigInt(Number.MAX_SAFE_INTEGER) / BigInt(PAGE)) {
      out.unchecked++;
      continue;
    }
    const index = Number(idxBig);
    const fileOffset = index * PAGE;
    if (src.isCachePage(p.pfn, mapping, index)) {
      out.shared++;
      if (collectShared) out.sharedPages.push({ fileOffset, pfn: p.pfn });
      continue;
    }
    const cachePfn = src.cacheFrame(mapping, index);
    if (cachePfn === undefined) {
      const want = known?.get(fileOffset);
      if (want === undefined) {
        out.unchecked++;
        continue;
      }
      const mine = src.readFrame(p.pfn);
      if (pageHash(mine) === want) out.identicalCopies++;
      else {
        out.differing.push({ va: p.va, fileOffset, pfn: p.pfn, against: 'baseline', processBytes: mine });
      }
      continue;
    }
    const mine = src.readFrame(p.pfn);
    const theirs = src.readFrame(cachePfn);
    const diff = diffPages(mine, theirs);
    if (!diff) {
      out.identicalCopies++;
      continue;
    }
    out.differing.push({
      va: p.va,
      fileOffset,
      pfn: p.pfn,
      against: 'page-cache',
      diff,
      processBytes: mine,
      fileBytes: theirs,
      cachePfn,
    });
  }
  return out;
}

// ------------------------------------------------------------------------------------------- sweeps

/** Executable maps backed by a file: the ones whose pages must be the file's. */
export const isFileText = (m: MemoryMap): boolean => m.file !== undefined && (m.flags & VM_EXEC) !== 0n;

interface MapFacts {
  mapping: bigint;
  pgoff: bigint;
  /** Baseline key of the file: device, inode and path (a replaced file has another inode). */
  fileKey: string;
}

function mapFacts(k: Kernel, m: MemoryMap): MapFacts | undefined {
  const t = k.types;
  const f = k.space.tryRead(m.file! + BigInt(t.offsetof('file', 'f_mapping')), 8);
  const v = k.space.tryRead(m.vma + BigInt(t.offsetof('vm_area_struct', 'vm_pgoff')), 8);
  if (!f || !v) return undefined;
  const mapping = f.readBigUInt64LE(0);
  if (mapping === 0n) return undefined;
  return { mapping, pgoff: v.readBigUInt64LE(0), fileKey: `${m.dev}:${m.inode}:${m.path}` };
}

const BASELINE_PREFIX = 'file:';

function baselineKey(fileKey: string): string {
  return BASELINE_PREFIX + createHash('sha256').update(fileKey).digest('hex').slice(0, 32);
}

interface StoredFile {
  file: string;
  /** File offset (hex) → page hash. */
  pages: Record<string, string>;
}

function knownPages(ctx: SweepContext<Kernel>, fileKey: string, cache: Map<string, KnownPages>): KnownPages {
  let known = cache.get(fileKey);
  if (!known) {
    const stored = ctx.baseline.get(baselineKey(fileKey)) as unknown as StoredFile | undefined;
    const m = new Map<number, string>();
    if (stored && typeof stored === 'object' && stored.pages && typeof stored.pages === 'object') {
      for (const [off, h] of Object.entries(stored.pages)) {
        if (typeof h === 'string') m.set(Number.parseInt(off, 16), h);
      }
    }
    known = m;
    cache.set(fileKey, known);
  }
  return known;
}

const bytesHex = (b: Buffer | undefined, from: number): string | undefined =>
  b ? b.subarray(from, from + EXCERPT).toString('hex') : undefined;

/** A one-byte int3 difference is what a debugger's or uprobe's breakpoint looks like. */
function isBreakpoint(r: PageResult): boolean {
  return (
    r.against === 'page-cache' &&
    r.diff !== undefined &&
    r.diff.count === 1 &&
    r.processBytes?.[r.diff.first] === INT3
  );
}

export interface IntegrityStats {
  processes: number;
  maps: number;
  pagesShared: number;
  identicalCopies: number;
  unchecked: number;
  differing: number;
  /** Differences that vanished on the second read (the guest changed the page meanwhile). */
  unconfirmed: number;
  ms: number;
}

/**
 * Read everything again — the VMA, the page tables, the page cache, both pages — on fresh memory: is the
 * difference still there, and was the map stable (not being changed by the process) meanwhile?
 */
function confirm(
  k: Kernel,
  src: KernelTextSource,
  space: AddressSpace,
  mm: bigint,
  m: MemoryMap,
  f: MapFacts,
  r: PageResult,
): boolean {
  if (mapsBeingChanged(k, mm)) return false;
  const now = mapFacts(k, m);
  const field = (name: string) =>
    k.space.tryRead(m.vma + BigInt(k.types.offsetof('vm_area_struct', name)), 8)?.readBigUInt64LE(0);
  if (!now || now.mapping !== f.mapping || now.pgoff !== f.pgoff) return false;
  if (field('vm_start') !== m.start || field('vm_end') !== m.end) return false;
  const pa = space.translate(r.va);
  if (pa === undefined || Number(pa / 4096n) !== r.pfn) return false;
  const index = r.fileOffset / PAGE;
  if (r.against === 'baseline') {
    return src.cacheFrame(f.mapping, index) === undefined && !src.isCachePage(r.pfn, f.mapping, index);
  }
  if (r.cachePfn === undefined || src.cacheFrame(f.mapping, index) !== r.cachePfn) return false;
  // The cached page must still be this file's page at this index (not freed and reused meanwhile).
  if (!src.isCachePage(r.cachePfn, f.mapping, index)) return false;
  return diffPages(src.readFrame(r.pfn), src.readFrame(r.cachePfn)) !== undefined;
}

export interface IntegrityOptions {
  /** Learn: collect hashes of pages proven to be the page cache's. */
  learn?: { maxPages: number; pages: Map<string, { file: string; pages: Record<string, string> }> };
  baseline?: (fileKey: string) => KnownPages | undefined;
}

/** One sweep over every process. */
export function integritySweep(
  k: Kernel,
  note: (kind: string, detail: string) => void,
  opts: IntegrityOptions = {},
  signal?: AbortSignal,
): { findings: Finding[]; stats: IntegrityStats } {
  const t0 = performance.now();
  const src = new KernelTextSource(k);
  const stats: IntegrityStats = {
    processes: 0,
    maps: 0,
    pagesShared: 0,
    identicalCopies: 0,
    unchecked: 0,
    differing: 0,
    unconfirmed: 0,
    ms: 0,
  };
  const findings: Finding[] = [];
  const before = k.issues.items.length;
  const procs = userProcesses(k);
  for (const i of k.issues.items.slice(before)) note(i.kind, `${i.walker}: ${i.detail}`);
  let learned = 0;
  for (const p of procs) {
    if (signal?.aborted) break;
    stats.processes++;
    findings.push(
      ...checkProcess(k, src, p, stats, note, opts, () => learned++ < (opts.learn?.maxPages ?? 0)),
    );
  }
  stats.ms = performance.now() - t0;
  return { findings, stats };
}

function checkProcess(
  k: Kernel,
  src: KernelTextSource,
  p: UserProcess,
  stats: IntegrityStats,
  note: (kind: string, detail: string) => void,
  opts: IntegrityOptions,
  mayLearn: () => boolean,
): Finding[] {
  const pid = p.task.tgid;
  const view = readProcess(k, p, note);
  // Half-updated maps (start and file offset of a VMA being split) would compare the wrong file pages.
  if (!view || !view.settled) return [];
  const space = view.space;
  const differing: { m: MemoryMap; f: MapFacts; r: PageResult }[] = [];
  const suspects: { m: MemoryMap; f: MapFacts; r: PageResult }[] = [];
  const before = k.issues.items.length;
  let unchecked = 0;
  try {
    for (const m of view.maps.filter(isFileText)) {
      const f = mapFacts(k, m);
      if (!f) {
        k.issues.add('program-integrity', 'unmapped', `file of VMA ${hex(m.vma)} is not readable`);
        continue;
      }
      stats.maps++;
      const known = opts.baseline?.(f.fileKey);
      const res = checkTextPages(
        src,
        f.mapping,
        m.start,
        f.pgoff,
        presentPages(space, m.start, m.end),
        known,
        !!opts.learn,
      );
      stats.pagesShared += res.shared;
      stats.identicalCopies += res.identicalCopies;
      stats.unchecked += res.unchecked;
      unchecked += res.unchecked;
      if (opts.learn) {
        for (const s of res.sharedPages) {
          let e = opts.learn.pages.get(f.fileKey);
          const offKey = s.fileOffset.toString(16);
          if (e?.pages[offKey] !== undefined) continue;
          if (!mayLearn()) break;
          if (!e) opts.learn.pages.set(f.fileKey, (e = { file: m.path, pages: {} }));
          e.pages[offKey] = pageHash(src.readFrame(s.pfn));
        }
      }
      for (const r of res.differing) suspects.push({ m, f, r });
    }
  } catch (e) {
    if (!isVigilError(e)) throw e;
    if (stillOwns(k, p.task, p.mm)) note(e.kind, `pid ${pid}: ${e.message}`);
    return [];
  }
  const issues = k.issues.items.slice(before);
  if (issues.length > 0 && stillOwns(k, p.task, p.mm)) {
    for (const i of issues) note(i.kind, `pid ${pid} ${i.walker}: ${i.detail}`);
  }
  if (suspects.length > 0) {
    // Confirm on fresh reads: cached pages may predate a change the guest made meanwhile.
    if (!k.epoch.frozen) {
      k.epoch.bump();
      src.forget();
    }
    for (const s of suspects) {
      if (confirm(k, src, space, p.mm, s.m, s.f, s.r)) differing.push(s);
      else stats.unconfirmed++;
    }
  }
  stats.differing += differing.length;
  if (differing.length === 0) return [];
  const details = readProcessDetails(k, p.task);
  const st = startTime(p.task);
  return differing.slice(0, MAX_PAGES_PER_PROCESS).map(({ m, r }) => {
    const bp = isBreakpoint(r);
    const severity: Severity = bp ? 'medium' : 'high';
    const first = r.diff?.first ?? 0;
    const anonymous = src.isAnonymous(r.pfn);
    const madeWritable = (m.flags & VM_ACCOUNT) !== 0n && (m.flags & VM_WRITE) === 0n;
    return {
      key: `${pid}:${st ?? 'unknown'}:${hex(r.va)}`,
      severity,
      technique: 'T1055.009',
      summary:
        `process ${pid} (${p.task.comm}) runs modified code at ${hex(r.va)}: its page differs from ` +
        `${m.path} at file offset ${hex(BigInt(r.fileOffset))}` +
        (r.against === 'baseline' ? ' (learned hash; not in the page cache)' : '') +
        (bp ? ' by one int3 byte (a debugger or uprobe breakpoint?)' : ''),
      evidence: {
        pid,
        comm: p.task.comm,
        exe: details.exe,
        startTimeNs: st,
        vma: { ...vmaEvidence(m), ...(madeWritable ? { madeWritable: true } : {}) },
        page: hex(r.va),
        fileOffset: hex(BigInt(r.fileOffset)),
        comparedWith: r.against,
        ...(r.diff
          ? {
              firstDifference: hex(r.va + BigInt(r.diff.first)),
              firstDifferenceOffset: r.diff.first,
              differingBytes: r.diff.count,
              processBytes: bytesHex(r.processBytes, first),
              fileBytes: bytesHex(r.fileBytes, first),
            }
          : { processPageHash: r.processBytes ? pageHash(r.processBytes) : undefined }),
        processFrame: hex(BigInt(r.pfn) * 4096n),
        ...(r.cachePfn !== undefined ? { pageCacheFrame: hex(BigInt(r.cachePfn) * 4096n) } : {}),
        ...(anonymous !== undefined ? { anonymousCopy: anonymous } : {}),
        pagesDiffering: differing.length,
        // Pages of this process the page cache no longer held and no baseline vouched for.
        pagesUnchecked: unchecked,
      },
    };
  });
}

export const programIntegrityPolicy = definePolicy<Kernel>({
  id: 'program-integrity',
  title: 'Running program text equals its file',
  description:
    "Compares every page of each process's executable file maps with the file's page-cache page (or a " +
    'learned hash when the cache lacks it): a private, modified copy of program text is code patched in memory.',
  technique: 'T1055.009',
  severity: 'high',
  requires: ['kernel'],
  defaultIntervalMs: 30_000,
  learn(ctx, baseline) {
    const k = ctx.requireKernel();
    const pages = new Map<string, StoredFile>();
    const maxPages = numberOption(ctx, 'maxBaselinePages', 40_000);
    integritySweep(k, (kind, d) => ctx.note(kind, d), { learn: { maxPages, pages } }, ctx.signal);
    for (const [fileKey, v] of pages) baseline.set(baselineKey(fileKey), v as unknown as JsonValue);
  },
  poll(ctx: SweepContext<Kernel>) {
    const k = ctx.requireKernel();
    const cache = new Map<string, KnownPages>();
    return integritySweep(
      k,
      (kind, d) => ctx.note(kind, d),
      { baseline: (key) => knownPages(ctx, key, cache) },
      ctx.signal,
    ).findings;
  },
});
