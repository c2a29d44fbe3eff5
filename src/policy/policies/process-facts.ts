// What the process and network detectors (lie-detector, raw-socket, nic-access, privilege-escalation,
// fileless, reverse-shell; signature and program-integrity for keys) share: how a poll attributes walk
// issues to itself and re-reads a live guest once when a walk raced it, a per-sweep cache of the task list,
// per-VM memory across sweeps, and cheap facts about a process (its executable, its fd slots, its start
// time) read through the os walkers' own helpers.
import type { Kernel } from '../../os/linux/kernel.js';
import { describeFile, type OpenFile } from '../../os/linux/fs/files.js';
import {
  offset,
  readPtr,
  readStruct,
  tryOffset,
  u32,
  u64,
  type KernelReader,
} from '../../os/linux/fs/reader.js';
import { listTasks, taskLayout, type Task, type TaskKernel } from '../../os/linux/tasks/index.js';
import { WalkIssues, type WalkIssue } from '../../os/linux/walk.js';
import type { Machine } from '../../vmm/types.js';
import type { SweepContext } from '../policy.js';

export const hex = (v: bigint): string => '0x' + v.toString(16);

/** What a poll needs of the kernel beyond the walkers' interfaces: its issue collector and cache epoch. */
export interface SweepKernel {
  issues: WalkIssues;
  readonly epoch: { readonly frozen: boolean; readonly value: number; bump(): number };
}

/** The Kernel as the detectors' collectors use it (a Kernel fits; tests hand in fakes). */
export type ProcessKernel = TaskKernel & KernelReader;

/**
 * Run `fn` with a collector of its own on `k.issues`, so the issues it causes are known exactly; they are
 * also copied into the collector that was there (commands and other policies read it), unless `forward`
 * is false (an attempt that will be repeated).
 */
export function collecting<T>(
  k: Pick<SweepKernel, 'issues'>,
  fn: () => T,
  forward = true,
): { value: T; issues: WalkIssue[] } {
  const outer = k.issues;
  const mine = new WalkIssues();
  k.issues = mine;
  try {
    return { value: fn(), issues: mine.items };
  } finally {
    k.issues = outer;
    if (forward) forwardIssues(k, mine.items);
  }
}

/** Add issues to the kernel's current collector. */
export function forwardIssues(k: Pick<SweepKernel, 'issues'>, issues: readonly WalkIssue[]): void {
  for (const i of issues) k.issues.add(i.walker, i.kind, i.detail);
}

/** A live guest changes under the walk; a dump never does. */
export const isLive = (k: SweepKernel): boolean => !k.epoch.frozen;

/** Report a walk's issues to the engine (they become one health alert per kind and hold alerts open). */
export function noteIssues(ctx: Pick<SweepContext, 'note'>, issues: readonly WalkIssue[]): void {
  for (const i of issues) ctx.note(i.kind, `${i.walker}: ${i.detail}`);
}

/** An issue's identity across readings: counts in the text ("after 12 entries") may move, addresses not. */
const issueId = (i: WalkIssue): string => `${i.walker}\0${i.kind}\0${i.detail.replace(/\b\d+\b/g, '#')}`;

/**
 * The issues two readings of a live guest agree on. A walk that races the guest (a task exiting or a tree
 * rebalancing under it) stumbles somewhere different each time; a structure that is really broken —
 * a loop a rootkit made, an unreadable table — breaks the same way twice.
 */
export function persistentIssues(first: readonly WalkIssue[], second: readonly WalkIssue[]): WalkIssue[] {
  const again = new Set(second.map(issueId));
  return first.filter((i) => again.has(issueId(i)));
}

/**
 * Collect with a re-read on a live guest: a process exiting while it is read leaves freed memory behind
 * (an unmapped page, a list pointing nowhere), which is the guest's normal life, not a gap worth a health
 * alert. When the first pass had issues, the epoch moves (nothing cached survives) and the collection runs
 * again; the second pass's result is used, and the issues both passes hit are noted. On a dump one pass is
 * the answer and all its issues are noted.
 */
export function collectFresh<T>(ctx: Pick<SweepContext, 'note'>, k: SweepKernel, fn: () => T): T {
  const first = collecting(k, fn);
  if (first.issues.length === 0 || !isLive(k)) {
    noteIssues(ctx, first.issues);
    return first.value;
  }
  k.epoch.bump();
  const second = collecting(k, fn);
  noteIssues(ctx, persistentIssues(first.issues, second.issues));
  return second.value;
}

interface TaskCache {
  sweep: number;
  epoch: number;
  tasks: Task[];
  issues: WalkIssue[];
}
const taskCache = new WeakMap<object, TaskCache>();

/**
 * The task list (threads included) for this sweep: walked once and shared by the detectors that run in
 * the same sweep while the guest state they read is current (same sweep, same cache epoch). The issues of
 * the walk are replayed into the caller's collector so each policy accounts for the gaps it relied on.
 */
export function sweepTasks(k: ProcessKernel & SweepKernel, sweep: number): Task[] {
  const epoch = k.epoch.value;
  const hit = taskCache.get(k);
  if (hit && hit.sweep === sweep && hit.epoch === epoch) {
    forwardIssues(k, hit.issues);
    return hit.tasks;
  }
  // collecting() hands the walk's issues on to the caller's collector as well.
  const { value, issues } = collecting(k, () => listTasks(k));
  taskCache.set(k, { sweep, epoch, tasks: value, issues });
  return value;
}

/** Thread group leaders only (one per process). */
export const leadersOf = (tasks: readonly Task[]): Task[] => tasks.filter((t) => t.pid === t.tgid);

const vmMemory = new WeakMap<Machine, Map<string, unknown>>();

/**
 * State a policy keeps about one VM between sweeps (policies are shared objects: one per vigil process,
 * many VMs). Tied to the Machine object, so it goes with the connection.
 */
export function vmState<T>(machine: Machine, policy: string, init: () => T): T {
  let m = vmMemory.get(machine);
  if (!m) vmMemory.set(machine, (m = new Map()));
  if (!m.has(policy)) m.set(policy, init());
  return m.get(policy) as T;
}

/** mm->exe_file of a process (0 when it has none: kernel threads, zombies), undefined when unreadable. */
export function exeFileOf(k: ProcessKernel, task: Task): bigint | undefined {
  if (task.mm === null) return 0n;
  const off = taskLayout(k.types).mm.exeFile;
  if (off === undefined) return undefined;
  return readPtr(k, task.mm + BigInt(off));
}

export interface ExeFacts {
  /** The struct file of mm->exe_file. */
  file: bigint;
  /** As /proc/PID/exe shows it (" (deleted)" appended when unlinked). */
  path: string;
  deleted: boolean;
  /** The memfd's name when the executable is a memfd ("vigil-payload"). */
  memfd?: string;
  fsType?: string;
  inode?: bigint;
  /** i_mode (type and permission bits, S_ISUID 0o4000) and i_uid of the executable's inode. */
  imode?: number;
  iuid?: number;
}

/** Everything about a process's executable; null for processes without one. */
export function exeFacts(k: ProcessKernel, task: Task): ExeFacts | null {
  const file = exeFileOf(k, task);
  if (!file) return null;
  const d = describeFile(k, file);
  const facts: ExeFacts = { file, path: d.path, deleted: d.deleted };
  if (d.kind === 'memfd' && d.detail !== undefined) facts.memfd = d.detail;
  if (d.fsType !== undefined) facts.fsType = d.fsType;
  if (d.inode !== undefined) facts.inode = d.inode;
  if (d.imode !== undefined) facts.imode = d.imode;
  const inodeVa = readPtr(k, file + BigInt(offset(k.types, 'file', 'f_inode')));
  const uidOff = tryOffset(k.types, 'inode', 'i_uid');
  if (inodeVa && uidOff !== undefined) {
    const b = k.space.tryRead(inodeVa + BigInt(uidOff), 4);
    if (b) facts.iuid = b.readUInt32LE(0); // kuid_t: struct { u32 val }
  }
  return facts;
}

/** Last path component of an executable path, without " (deleted)". */
export function baseName(path: string): string {
  const p = path.endsWith(' (deleted)') ? path.slice(0, -' (deleted)'.length) : path;
  return p.slice(p.lastIndexOf('/') + 1);
}

/** Upper bound on fd slots read per process (as fs/files.ts MAX_FDS). */
export const MAX_FD_SLOTS = 65536;

/**
 * The struct file pointers in a process's fd array (index = fd, 0n = free), at most `limit` slots; undefined
 * when the task has no files (exited, kernel thread) or its table is unreadable. fs/files.ts's openFiles
 * describes every file (path, inode, super block), ~30 reads each: detectors that look for a few known
 * files among every process's fds only need the pointers, one read per table.
 */
export function fdSlots(k: ProcessKernel, taskVa: bigint, limit = MAX_FD_SLOTS): bigint[] | undefined {
  const t = k.types;
  const files = readPtr(k, taskVa + BigInt(offset(t, 'task_struct', 'files')));
  if (!files) return undefined;
  const fdtVa = readPtr(k, files + BigInt(offset(t, 'files_struct', 'fdt')));
  const fdt = fdtVa ? readStruct(k, 'fdtable', fdtVa) : undefined;
  if (!fdt) {
    k.issues.add('fds', 'unmapped', `fdtable of task ${hex(taskVa)} is not readable`);
    return undefined;
  }
  const max = Math.min(u32(fdt, offset(t, 'fdtable', 'max_fds')), limit, MAX_FD_SLOTS);
  const arr = u64(fdt, offset(t, 'fdtable', 'fd'));
  if (max === 0) return [];
  const b = arr ? k.space.tryRead(arr, max * 8) : undefined;
  if (!b) {
    k.issues.add('fds', 'unmapped', `fd array ${hex(arr)} of task ${hex(taskVa)} is not readable`);
    return undefined;
  }
  const out: bigint[] = [];
  for (let i = 0; i < max; i++) out.push(b.readBigUInt64LE(i * 8));
  return out;
}

/** The files at fds 0, 1 and 2 (stdin, stdout, stderr), described; missing fds are left out. */
export function stdioFiles(k: ProcessKernel, taskVa: bigint): OpenFile[] {
  const slots = fdSlots(k, taskVa, 3) ?? [];
  const out: OpenFile[] = [];
  slots.forEach((file, fd) => {
    if (file !== 0n) out.push({ ...describeFile(k, file), fd });
  });
  return out;
}

/** The key start time: boot-based when the kernel has it (what /proc shows), else monotonic. */
export const startTime = (t: Task): number | null => t.startBoottimeNs ?? t.startTimeNs;

/** Task facts for evidence: the identity a responder acts on. */
export function taskEvidence(t: Task): Record<string, unknown> {
  return {
    pid: t.tgid,
    ...(t.pid !== t.tgid ? { tid: t.pid } : {}),
    comm: t.comm,
    ppid: t.ppid,
    uid: t.cred?.uid ?? null,
    euid: t.cred?.euid ?? null,
    task: hex(t.address),
    ...(t.startTimeNs !== null ? { startTimeNs: t.startTimeNs } : {}),
  };
}

/** The kernel object as the detectors take it from a sweep context. */
export type PolicyKernel = Kernel;
