// `signature`: Livewire's signature detector with YARA-X rules over guest memory. Each user process's
// private memory (anonymous maps, heap, stack, writable file data, and the whole of any mapped file that
// no longer exists on disk: memfd and unlinked executables) is gathered page by page through its page
// tables — only pages that are present; swapped-out and never-touched ones are skipped — into one
// buffer and scanned as one block, so a rule's condition sees the whole process as YARA's own process
// scan does. Kernel module memory is scanned per module. A physical page is scanned once per sweep
// (shared pages, the zero page), and every sweep and process is bounded in bytes.
//
// Rules: rules/default.yar (shipped; matches the lab's yara-string attack and real-world indicators) plus
// the user's rule files (option `rules`), compiled together; `noDefaultRules` leaves the default set out.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile, validate, type YaraX } from '@litko/yara-x';
import type { AddressSpace, VaRange, Mapping, MappingWalkOptions } from '../../arch/types.js';
import type { Kernel } from '../../os/linux/kernel.js';
import { memoryMaps, VM_EXEC, VM_READ, VM_SHARED, VM_WRITE, type MemoryMap } from '../../os/linux/mm/maps.js';
import { listModules } from '../../os/linux/modules/index.js';
import { listPidTasks, listTasks, readProcessDetails, type Task } from '../../os/linux/tasks/index.js';
import { VigilError, isVigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import type { PhysicalMemory } from '../../vmm/types.js';
import { definePolicy, isSeverity, type SweepContext } from '../policy.js';
import type { Finding, Severity } from '../types.js';

const PAGE = 4096;
const MiB = 1024 * 1024;
/** include/linux/mm.h: I/O and raw-PFN maps ([vvar], device memory) are not RAM to scan. */
const VM_IO = 0x4000n;
const VM_PFNMAP = 0x400n;
/** User addresses end below 2^56 (5-level paging); the [vsyscall] gate VMA lies in the kernel half. */
const USER_LIMIT = 1n << 56n;

export interface SignatureOptions {
  /** User rule files, compiled together with the default set. */
  rules: string[];
  /** Leave rules/default.yar out (then `rules` must name at least one file). */
  noDefaultRules: boolean;
  /** Bytes gathered from one process at most (its first maps in address order). */
  maxBytesPerProcess: number;
  /** Bytes scanned in one sweep at most; the next sweep starts with the processes this one left out. */
  maxBytesPerSweep: number;
  /** Scan read-only and executable file maps too (libraries, executables on disk): off by default. */
  scanFileMappings: boolean;
  /** Scan the memory of loaded kernel modules. */
  scanKernelModules: boolean;
  /** Matched strings reported per rule and process. */
  maxStringsPerRule: number;
}

export const DEFAULT_SIGNATURE_OPTIONS: Readonly<SignatureOptions> = Object.freeze({
  rules: [],
  noDefaultRules: false,
  maxBytesPerProcess: 64 * MiB,
  maxBytesPerSweep: 256 * MiB,
  scanFileMappings: false,
  scanKernelModules: true,
  maxStringsPerRule: 16,
});

/** Validate config options; unknown keys and wrong types are usage errors. */
export function parseSignatureOptions(raw: Readonly<Record<string, unknown>>): SignatureOptions {
  const o: SignatureOptions = { ...DEFAULT_SIGNATURE_OPTIONS, rules: [] };
  for (const [key, v] of Object.entries(raw)) {
    switch (key) {
      case 'rules':
        if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x.length > 0)) {
          throw new VigilError('policy', 'usage', 'option "rules" must be a list of rule file paths');
        }
        o.rules = [...(v as string[])];
        break;
      case 'noDefaultRules':
      case 'scanFileMappings':
      case 'scanKernelModules':
        if (typeof v !== 'boolean')
          throw new VigilError('policy', 'usage', `option "${key}" must be true or false`);
        o[key] = v;
        break;
      case 'maxBytesPerProcess':
      case 'maxBytesPerSweep':
      case 'maxStringsPerRule':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
          throw new VigilError('policy', 'usage', `option "${key}" must be a positive integer`);
        }
        o[key] = v;
        break;
      default:
        throw new VigilError('policy', 'usage', `unknown option "${key}"`);
    }
  }
  // One process's bytes live in one buffer: keep it to a sane size whatever the config says.
  o.maxBytesPerProcess = Math.min(o.maxBytesPerProcess, 1024 * MiB);
  if (o.noDefaultRules && o.rules.length === 0) {
    throw new VigilError('policy', 'usage', 'noDefaultRules is set but no "rules" files are given');
  }
  return o;
}

// ---------------------------------------------------------------------------------------------- rules

export interface RuleSource {
  /** File path (or a label) errors name. */
  name: string;
  text: string;
}

export interface CompiledRules {
  scanner: YaraX;
  sources: string[];
  /** sha256 of the sources, to tell rule sets apart. */
  digest: string;
}

/** The shipped rule file: `rules/default.yar` of the vigil tree this module belongs to. */
export function defaultRulesPath(): string {
  if (process.env.VIGIL_DEFAULT_RULES) return resolve(process.env.VIGIL_DEFAULT_RULES);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'rules', 'default.yar');
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new VigilError(
    'policy',
    'not-found',
    'cannot find rules/default.yar of the vigil installation (set VIGIL_DEFAULT_RULES)',
  );
}

/** "error[E025]: unknown pattern `$b`" and "line:5:48" out of a YARA-X diagnostic. */
function diagnostic(message: string): { text: string; line?: number; column?: number } {
  const lines = message.split('\n');
  const head = lines.find((l) => /error\[|warning\[/.test(l)) ?? lines[0] ?? message;
  const at = /-->\s*line:(\d+):(\d+)/.exec(message);
  const text = head.replace(/^.*?(error\[)/, '$1').trim();
  return at ? { text, line: Number(at[1]), column: Number(at[2]) } : { text };
}

/** Rule names a source declares, with their lines (for clashes between files). */
function declaredRules(text: string): Map<string, number> {
  const out = new Map<string, number>();
  text.split('\n').forEach((l, i) => {
    const m = /^\s*(?:(?:private|global)\s+)*rule\s+([A-Za-z_]\w*)/.exec(l);
    if (m && !out.has(m[1]!)) out.set(m[1]!, i + 1);
  });
  return out;
}

/**
 * Compile rule sources together. Each source is validated on its own first, so an error names its file
 * and line; a rule declared in two files names both.
 */
export function compileRules(sources: readonly RuleSource[]): CompiledRules {
  if (sources.length === 0) throw new VigilError('policy', 'usage', 'no YARA rules to compile');
  const owner = new Map<string, string>();
  for (const s of sources) {
    const r = validate(s.text);
    if (r.errors.length > 0) {
      const first = r.errors[0]!;
      const d = diagnostic(first.message);
      const line = d.line ?? first.line;
      const where = line !== undefined ? `:${line}${d.column !== undefined ? `:${d.column}` : ''}` : '';
      throw new VigilError(
        'policy',
        'usage',
        `YARA rules ${s.name}${where}: ${sanitize(d.text || first.code, 300)}`,
      );
    }
    for (const [rule, line] of declaredRules(s.text)) {
      const prev = owner.get(rule);
      if (prev !== undefined) {
        throw new VigilError(
          'policy',
          'usage',
          `YARA rule ${sanitize(rule, 128)} is declared twice: ${prev} and ${s.name}:${line}`,
        );
      }
      owner.set(rule, `${s.name}:${line}`);
    }
  }
  const combined = sources.map((s) => s.text).join('\n');
  let scanner: YaraX;
  try {
    scanner = compile(combined);
  } catch (e) {
    const d = diagnostic(e instanceof Error ? e.message : String(e));
    throw new VigilError(
      'policy',
      'usage',
      `YARA rules of ${sources.map((s) => s.name).join(', ')} do not compile together: ${sanitize(d.text, 300)}`,
    );
  }
  return {
    scanner,
    sources: sources.map((s) => s.name),
    digest: createHash('sha256').update(combined).digest('hex'),
  };
}

function readRuleFile(path: string): RuleSource {
  try {
    return { name: path, text: readFileSync(path, 'utf8') };
  } catch (e) {
    throw new VigilError('policy', 'not-found', `cannot read YARA rule file ${path}`, { cause: e });
  }
}

/** Compiled rule sets, by file list and content: rules compile once, not per sweep. */
const ruleCache = new Map<string, CompiledRules>();

/** The rule set an options object asks for (default set unless noDefaultRules, plus `rules`). */
export function loadRules(opts: Pick<SignatureOptions, 'rules' | 'noDefaultRules'>): CompiledRules {
  const files = [...(opts.noDefaultRules ? [] : [defaultRulesPath()]), ...opts.rules.map((r) => resolve(r))];
  const sources = files.map(readRuleFile);
  const key = createHash('sha256');
  for (const s of sources) key.update(s.name).update('\0').update(s.text).update('\0');
  const k = key.digest('hex');
  let rules = ruleCache.get(k);
  if (!rules) {
    rules = compileRules(sources);
    if (ruleCache.size >= 8) ruleCache.clear();
    ruleCache.set(k, rules);
  }
  return rules;
}

// --------------------------------------------------------------------------------- gathering memory

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
    const end = range.end;
    let mappings: Iterable<Mapping>;
    try {
      mappings = space.walkMappings({ start, end }, { maxEntries: (this.#limit / PAGE) * 2 + 1024, ...walk });
      for (const m of mappings) {
        // A large page may start before the range and end after it: take only its pages inside.
        const from = m.va > start ? m.va : start;
        const to = m.va + m.size < end ? m.va + m.size : end;
        for (let va = from; va < to; va += 0x1000n) {
          if (this.full) {
            this.stats.truncated = true;
            return false;
          }
          const pa = Number(m.paddr + (va - m.va));
          const pfn = pa / PAGE;
          if (this.#seen.has(pfn)) {
            this.stats.sharedPages++;
            continue;
          }
          this.#seen.add(pfn);
          this.#take(va, pa, region);
        }
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

// ---------------------------------------------------------------------------------------- scanning

export interface StringHit {
  identifier: string;
  /** Virtual address of the match: the run's address plus the offset into it. */
  va: bigint;
  length: number;
  /** The matched bytes (first 64), sanitised. */
  excerpt: string;
  region: number;
}

export interface RuleHit {
  rule: string;
  namespace: string;
  tags: string[];
  meta: Record<string, string | number | boolean>;
  strings: StringHit[];
  /** Matches found in all (more than `strings` holds when capped). */
  matchCount: number;
}

/** Run index holding buffer offset `off` (runs are in buffer order). */
function runAt(runs: readonly GatheredRun[], off: number): GatheredRun | undefined {
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = runs[mid]!;
    if (off < r.offset) hi = mid - 1;
    else if (off >= r.offset + r.length) lo = mid + 1;
    else return r;
  }
  return undefined;
}

function cleanMeta(meta: object): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(meta).slice(0, 32)) {
    if (typeof v === 'string') out[sanitize(k, 64)] = sanitize(v, 500);
    else if (typeof v === 'number' || typeof v === 'boolean') out[sanitize(k, 64)] = v;
  }
  return out;
}

/**
 * Scan gathered bytes and place each match at its virtual address. A match that straddles two runs
 * (pages that are not neighbours in the process) is not reported as a string: it exists only in the
 * buffer's layout.
 */
export function scanGathered(
  rules: CompiledRules,
  data: Buffer,
  runs: readonly GatheredRun[],
  maxStrings: number,
): RuleHit[] {
  if (data.length === 0) return [];
  const hits: RuleHit[] = [];
  for (const m of rules.scanner.scan(data)) {
    const strings: StringHit[] = [];
    let count = 0;
    for (const s of m.matches) {
      const run = runAt(runs, s.offset);
      if (!run || s.offset + s.length > run.offset + run.length) continue;
      count++;
      if (strings.length >= maxStrings) continue;
      const bytes = data.subarray(s.offset, s.offset + Math.min(s.length, 64));
      strings.push({
        identifier: sanitize(s.identifier, 64),
        va: run.va + BigInt(s.offset - run.offset),
        length: s.length,
        excerpt: sanitize(bytes.toString('latin1'), 80) + (s.length > 64 ? '…' : ''),
        region: run.region,
      });
    }
    hits.push({
      rule: sanitize(m.ruleIdentifier, 128),
      namespace: sanitize(m.namespace, 128),
      tags: m.tags.slice(0, 16).map((t) => sanitize(t, 64)),
      meta: cleanMeta(m.meta),
      strings,
      matchCount: count,
    });
  }
  return hits;
}

// ------------------------------------------------------------------------------- which maps to scan

/** Why a map is scanned, or undefined when it is not. */
export function scanReason(
  m: MemoryMap,
  opts: Pick<SignatureOptions, 'scanFileMappings'>,
): string | undefined {
  if (!(m.flags & VM_READ) || m.flags & (VM_IO | VM_PFNMAP)) return undefined;
  if (m.start >= USER_LIMIT || m.end <= m.start) return undefined;
  if (m.file === undefined) return m.label ?? 'anonymous';
  if (m.deleted) return 'deleted file';
  if (m.flags & VM_WRITE) return m.flags & VM_SHARED ? 'shared writable file' : 'file data';
  return opts.scanFileMappings ? (m.flags & VM_EXEC ? 'file text' : 'file') : undefined;
}

// ---------------------------------------------------------------------------------------- processes

export interface UserProcess {
  /** The thread group leader when found, else the first task seen with this mm. */
  task: Task;
  mm: bigint;
}

/**
 * Every user address space once: tasks from the PID table (what /proc sees) and from the task list (what
 * a PID-hiding rootkit leaves), one per mm (threads and CLONE_VM children share it), leaders preferred.
 */
export function userProcesses(k: Kernel): UserProcess[] {
  const byMm = new Map<bigint, Task>();
  const consider = (t: Task): void => {
    if (t.mm === null || t.kthread) return;
    const had = byMm.get(t.mm);
    if (!had || (had.pid !== had.tgid && t.pid === t.tgid)) byMm.set(t.mm, t);
  };
  for (const p of listPidTasks(k).tasks) consider(p.task);
  for (const t of listTasks(k, { threads: false })) consider(t);
  return [...byMm].map(([mm, task]) => ({ task, mm })).sort((a, b) => a.task.tgid - b.task.tgid);
}

/** The process's page tables, from mm->pgd. */
export function processSpace(k: Kernel, mm: bigint): AddressSpace {
  const pgd = k.space.tryRead(mm + BigInt(k.types.offsetof('mm_struct', 'pgd')), 8);
  if (!pgd) throw new VigilError('os', 'unmapped', `mm 0x${mm.toString(16)} is not readable`);
  return k.userSpace(pgd.readBigUInt64LE(0));
}

/** Does the task still own this mm (it did not exit or exec while we read)? */
export function stillOwns(k: Kernel, t: Task, mm: bigint): boolean {
  const b = k.space.tryRead(t.address + BigInt(k.types.offsetof('task_struct', 'mm')), 8);
  return b !== undefined && b.readBigUInt64LE(0) === mm;
}

export interface ProcessView {
  maps: MemoryMap[];
  space: AddressSpace;
  /** False when the maps were read while the process was changing them (they may be half-updated). */
  settled: boolean;
}

/** kernel/locking/rwsem.c: bit 0 of rw_semaphore.count is set while a writer holds it. */
const RWSEM_WRITER_LOCKED = 1n;

/**
 * Whether the process is changing its memory map right now: mm->mmap_lock (mmap_sem before 5.8) held
 * for writing. Maps read meanwhile can be half-updated (a VMA resized before the tree is).
 */
export function mapsBeingChanged(k: Kernel, mm: bigint): boolean {
  let off: number | undefined;
  for (const path of ['mmap_lock.count', 'mmap_sem.count']) {
    try {
      off = k.types.offsetof('mm_struct', path);
      break;
    } catch (e) {
      if (!isVigilError(e)) throw e;
    }
  }
  if (off === undefined) return false;
  const b = k.space.tryRead(mm + BigInt(off), 8);
  return b !== undefined && (b.readBigUInt64LE(0) & RWSEM_WRITER_LOCKED) !== 0n;
}

const pause = new Int32Array(new SharedArrayBuffer(4));
/** Let a live guest run on for a moment (synchronously: the sweep is a synchronous walk). */
const letGuestRun = (ms: number): void => void Atomics.wait(pause, 0, 0, ms);

/**
 * A process's maps and page tables. On a live guest a process changes its maps under the walk (mmap,
 * mprotect, exec: the kernel updates VMA and maple tree under mmap_lock, which we cannot take), and
 * cached pages can mix two versions: when the walk reports problems, the cache is dropped and the
 * process read again after a moment, up to three times. What remains is noted, unless the task no longer
 * owns the mm (it exited or exec'd) or is still changing its maps (mmap_lock held for writing): the
 * guest's normal life, not a gap. A dump is read once and everything is noted.
 */
export function readProcess(
  k: Kernel,
  p: UserProcess,
  note: (kind: string, detail: string) => void,
): ProcessView | undefined {
  const pid = p.task.tgid;
  for (let attempt = 0; ; attempt++) {
    const before = k.issues.items.length;
    let view: ProcessView | undefined;
    let failure: VigilError | undefined;
    try {
      view = { maps: memoryMaps(k, p.mm), space: processSpace(k, p.mm), settled: true };
    } catch (e) {
      if (!isVigilError(e)) throw e;
      failure = e;
    }
    const issues = k.issues.items.slice(before);
    if (!failure && issues.length === 0) return view;
    const live = !k.epoch.frozen;
    if (live) {
      k.epoch.bump();
      if (!stillOwns(k, p.task, p.mm)) return undefined;
      if (attempt < 3) {
        letGuestRun(5 << attempt);
        continue;
      }
      if (mapsBeingChanged(k, p.mm)) return view && { ...view, settled: false };
    }
    for (const i of issues) note(i.kind, `pid ${pid} ${i.walker}: ${i.detail}`);
    if (failure) note(failure.kind, `pid ${pid}: ${failure.message}`);
    return view;
  }
}

/** The key start time: boot-based when the kernel has it (what /proc shows), else monotonic. */
export const startTime = (t: Task): number | null => t.startBoottimeNs ?? t.startTimeNs;

export const hex = (v: bigint): string => '0x' + v.toString(16);

export function vmaEvidence(m: MemoryMap): Record<string, unknown> {
  return {
    start: hex(m.start),
    end: hex(m.end),
    perms: m.perms,
    offset: hex(m.offset),
    path: m.path,
    ...(m.deleted ? { deleted: true } : {}),
  };
}

// ------------------------------------------------------------------------------------------- sweeps

export interface SweepStats {
  processes: number;
  processesScanned: number;
  /** Processes the sweep budget left for the next sweep. */
  processesDeferred: number;
  /** Processes whose gathering hit maxBytesPerProcess. */
  processesTruncated: number;
  modules: number;
  bytesScanned: number;
  sharedPagesSkipped: number;
  gatherMs: number;
  scanMs: number;
  totalMs: number;
}

interface SweepState {
  /** The tgid to start with: the first one a previous sweep's budget left out. */
  resumeAt: number;
}

const sweepStates = new WeakMap<Kernel, SweepState>();
let scratch: Buffer | undefined;

function scanBuffer(size: number): Buffer {
  if (!scratch || scratch.length < size) scratch = Buffer.allocUnsafe(size);
  return scratch;
}

const TECHNIQUE_RE = /^T\d{4}(\.\d{3})?$/;

/** Severity a rule asks for in its meta, when it is one vigil knows. */
function ruleSeverity(h: RuleHit, fallback: Severity): Severity {
  const s = h.meta.severity;
  return typeof s === 'string' && isSeverity(s.toLowerCase()) ? (s.toLowerCase() as Severity) : fallback;
}

function ruleName(h: RuleHit): string {
  return h.namespace && h.namespace !== 'default' ? `${h.namespace}:${h.rule}` : h.rule;
}

function stringEvidence(
  h: RuleHit,
  regionOf: (i: number) => Record<string, unknown>,
): Record<string, unknown>[] {
  return h.strings.map((s) => ({
    identifier: s.identifier,
    va: hex(s.va),
    length: s.length,
    excerpt: s.excerpt,
    vma: regionOf(s.region),
  }));
}

function hitFinding(
  h: RuleHit,
  key: string,
  where: string,
  evidence: Record<string, unknown>,
  regionOf: (i: number) => Record<string, unknown>,
): Finding {
  const technique =
    typeof h.meta.technique === 'string' && TECHNIQUE_RE.test(h.meta.technique)
      ? h.meta.technique
      : undefined;
  const description = typeof h.meta.description === 'string' ? h.meta.description : undefined;
  return {
    key,
    severity: ruleSeverity(h, 'high'),
    summary: `YARA rule ${ruleName(h)} matched ${where}${description ? `: ${description}` : ''}`,
    ...(technique ? { technique } : {}),
    evidence: {
      ...evidence,
      rule: h.rule,
      ...(h.namespace !== 'default' ? { namespace: h.namespace } : {}),
      ...(h.tags.length ? { tags: h.tags } : {}),
      meta: h.meta,
      matches: h.matchCount,
      strings: stringEvidence(h, regionOf),
    },
  };
}

export interface SignatureSweep {
  findings: Finding[];
  stats: SweepStats;
}

/**
 * One sweep: the kernel modules, then every user process (from the sweep's resume point, within the
 * byte budgets). `note` receives partial views (hostile page tables, unreadable maps of live processes).
 */
export function signatureSweep(
  k: Kernel,
  rules: CompiledRules,
  opts: SignatureOptions,
  note: (kind: string, detail: string) => void,
  signal?: AbortSignal,
): SignatureSweep {
  const t0 = performance.now();
  const stats: SweepStats = {
    processes: 0,
    processesScanned: 0,
    processesDeferred: 0,
    processesTruncated: 0,
    modules: 0,
    bytesScanned: 0,
    sharedPagesSkipped: 0,
    gatherMs: 0,
    scanMs: 0,
    totalMs: 0,
  };
  const findings: Finding[] = [];
  const seen = new Set<number>();
  const state = sweepStates.get(k) ?? { resumeAt: 0 };
  sweepStates.set(k, state);
  const buf = scanBuffer(Math.max(opts.maxBytesPerProcess, PAGE));
  let budget = opts.maxBytesPerSweep;

  // Modules first: they are small, and a sweep whose budget the processes use up still covers them.
  if (opts.scanKernelModules) {
    findings.push(...scanModules(k, rules, opts, buf, seen, budget, stats, note));
    budget -= stats.bytesScanned;
  }

  const issuesBefore = k.issues.items.length;
  const procs = userProcesses(k);
  for (const i of k.issues.items.slice(issuesBefore)) note(i.kind, `${i.walker}: ${i.detail}`);
  stats.processes = procs.length;
  // Round robin under the sweep budget: start at the first process the last sweep did not reach.
  const first = procs.findIndex((p) => p.task.tgid >= state.resumeAt);
  const order = first <= 0 ? procs : [...procs.slice(first), ...procs.slice(0, first)];
  let deferredFrom: number | undefined;

  for (const p of order) {
    if (signal?.aborted) break;
    if (budget < PAGE) {
      deferredFrom ??= p.task.tgid;
      stats.processesDeferred++;
      continue;
    }
    const tg = performance.now();
    const view = readProcess(k, p, note);
    if (!view) continue;
    const regions = view.maps.filter((m) => scanReason(m, opts) !== undefined);
    const g = new MemoryGatherer(k.memory, buf, seen, Math.min(opts.maxBytesPerProcess, budget));
    for (let i = 0; i < regions.length && !g.full; i++) g.add(view.space, regions[i]!, i);
    const data = g.data;
    // Page-table walks stop at their bounds only on hostile tables (an exiting process has none left).
    if (g.stats.walkErrors.length > 0 && stillOwns(k, p.task, p.mm)) {
      for (const w of g.stats.walkErrors) note('bound', `pid ${p.task.tgid} page tables: ${w}`);
    }
    const ts = performance.now();
    stats.gatherMs += ts - tg;
    const hits = scanGathered(rules, data, g.runs, opts.maxStringsPerRule);
    stats.scanMs += performance.now() - ts;
    stats.processesScanned++;
    stats.bytesScanned += data.length;
    stats.sharedPagesSkipped += g.stats.sharedPages;
    budget -= data.length;
    if (g.stats.truncated) {
      if (budget < PAGE) deferredFrom ??= p.task.tgid + 1;
      else stats.processesTruncated++;
    }
    if (hits.length === 0) continue;
    const details = readProcessDetails(k, p.task);
    const st = startTime(p.task);
    for (const h of hits) {
      findings.push(
        hitFinding(
          h,
          `${ruleName(h)}:${p.task.tgid}:${st ?? 'unknown'}`,
          `in the memory of process ${p.task.tgid} (${p.task.comm})`,
          {
            pid: p.task.tgid,
            comm: p.task.comm,
            exe: details.exe,
            startTimeNs: st,
            bytesScanned: data.length,
            ...(g.stats.truncated ? { truncated: true } : {}),
          },
          (i) => vmaEvidence(regions[i]!),
        ),
      );
    }
  }
  state.resumeAt = deferredFrom ?? 0;
  stats.totalMs = performance.now() - t0;
  return { findings, stats };
}

function scanModules(
  k: Kernel,
  rules: CompiledRules,
  opts: SignatureOptions,
  buf: Buffer,
  seen: Set<number>,
  budget: number,
  stats: SweepStats,
  note: (kind: string, detail: string) => void,
): Finding[] {
  const out: Finding[] = [];
  const before = k.issues.items.length;
  let modules;
  try {
    modules = listModules(k);
  } catch (e) {
    if (!isVigilError(e)) throw e;
    note(e.kind, `modules: ${e.message}`);
    return out;
  }
  for (const i of k.issues.items.slice(before)) note(i.kind, `${i.walker}: ${i.detail}`);
  for (const m of modules) {
    if (budget < PAGE) break;
    stats.modules++;
    const tg = performance.now();
    const g = new MemoryGatherer(k.memory, buf, seen, Math.min(opts.maxBytesPerProcess, budget));
    m.regions.forEach((r, i) => g.add(k.space, { start: r.base, end: r.base + r.size }, i));
    for (const w of g.stats.walkErrors) note('bound', `module ${m.name}: ${w}`);
    const data = g.data;
    const ts = performance.now();
    stats.gatherMs += ts - tg;
    const hits = scanGathered(rules, data, g.runs, opts.maxStringsPerRule);
    stats.scanMs += performance.now() - ts;
    stats.bytesScanned += data.length;
    budget -= data.length;
    for (const h of hits) {
      out.push(
        hitFinding(
          h,
          `${ruleName(h)}:module:${m.name}:${hex(m.base)}`,
          `in the memory of kernel module ${m.name}`,
          { module: m.name, base: hex(m.base), size: hex(m.size) },
          (i) => {
            const r = m.regions[i]!;
            return { kind: r.kind, start: hex(r.base), end: hex(r.base + r.size) };
          },
        ),
      );
    }
  }
  return out;
}

export const signaturePolicy = definePolicy<Kernel>({
  id: 'signature',
  title: 'Signatures (YARA) in process and module memory',
  description:
    'Scans the private memory of every user process (anonymous maps, heap, stack, writable and deleted ' +
    'file maps) and of kernel modules with YARA-X rules: the shipped rules/default.yar plus your own.',
  severity: 'high',
  requires: ['kernel'],
  defaultIntervalMs: 60_000,
  parseOptions: (raw) => ({ ...parseSignatureOptions(raw) }),
  poll(ctx: SweepContext<Kernel>) {
    const k = ctx.requireKernel();
    const opts = parseSignatureOptions(ctx.options);
    const rules = loadRules(opts);
    return signatureSweep(k, rules, opts, (kind, detail) => ctx.note(kind, detail), ctx.signal).findings;
  },
});
