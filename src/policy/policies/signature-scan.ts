// What the `signature` policy scans and how: which maps of a process hold memory worth scanning, the
// modules' memory, each gathered through the page tables and scanned as one block, round robin over the
// processes under per-process and per-sweep byte budgets, a physical page once per sweep.
import type { Kernel } from '../../os/linux/kernel.js';
import { stillOwns, userProcesses } from '../../os/linux/mm/address-spaces.js';
import { MemoryGatherer } from '../../os/linux/mm/gather.js';
import {
  VM_EXEC,
  VM_IO,
  VM_PFNMAP,
  VM_READ,
  VM_SHARED,
  VM_WRITE,
  type MemoryMap,
} from '../../os/linux/mm/maps.js';
import { listModules } from '../../os/linux/modules/index.js';
import { readProcessDetails } from '../../os/linux/tasks/index.js';
import { isVigilError } from '../../util/errors.js';
import type { Finding } from '../types.js';
import { hex, startTime } from './process-facts.js';
import { readProcess, vmaEvidence } from './process-memory.js';
import { hitFinding, ruleName } from './signature-findings.js';
import type { CompiledRules } from './yara-rules.js';
import { scanGathered } from './yara-scan.js';

const PAGE = 4096;
/** User addresses end below 2^56 (5-level paging); the [vsyscall] gate VMA lies in the kernel half. */
const USER_LIMIT = 1n << 56n;

export interface ScanOptions {
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

/** Why a map is scanned, or undefined when it is not. */
export function scanReason(m: MemoryMap, opts: Pick<ScanOptions, 'scanFileMappings'>): string | undefined {
  if (!(m.flags & VM_READ) || m.flags & (VM_IO | VM_PFNMAP)) return undefined;
  if (m.start >= USER_LIMIT || m.end <= m.start) return undefined;
  if (m.file === undefined) return m.label ?? 'anonymous';
  if (m.deleted) return 'deleted file';
  if (m.flags & VM_WRITE) return m.flags & VM_SHARED ? 'shared writable file' : 'file data';
  return opts.scanFileMappings ? (m.flags & VM_EXEC ? 'file text' : 'file') : undefined;
}

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
  opts: ScanOptions,
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
  opts: ScanOptions,
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
