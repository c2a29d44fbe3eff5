// `vigil ps`: the guest's processes (or threads) as its kernel keeps them, read from memory: the task list
// by default (the view a rootkit tampers with), or the PID table with --source pids (the view /proc uses).
// Human table by default; --json prints one array of objects (field list in PsRow).
import type { Command } from 'commander';
import {
  listProcesses,
  type Credentials,
  type Process,
  type Task,
  type TaskSource,
} from '../../os/linux/tasks/index.js';
import type { WalkIssue } from '../../os/linux/walk.js';
import { VigilError } from '../../util/errors.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type Target, type TargetOptions } from '../target.js';

export interface PsOptions extends TargetOptions {
  json?: boolean;
  threads?: boolean;
  source?: string;
  env?: boolean;
  max?: string;
  pause?: boolean;
}

/** One process (or, with --threads, one thread) as JSON. Ids are null when the task's cred was unreadable. */
export interface PsRow {
  /** Process id (the thread group id). */
  pid: number;
  /** Thread id: equals pid for the group leader. */
  tid: number;
  tgid: number;
  ppid: number | null;
  /** task->comm, at most 15 bytes. */
  comm: string;
  /** The name /proc/PID/stat and ps show (kernel threads' full names, workqueue workers' "+desc"). */
  name: string;
  uid: number | null;
  euid: number | null;
  suid: number | null;
  fsuid: number | null;
  gid: number | null;
  egid: number | null;
  sgid: number | null;
  fsgid: number | null;
  /** One letter as in /proc/PID/stat: R S D T t X Z P I. */
  state: string;
  kthread: boolean;
  /** /proc/PID/exe; null for kernel threads (and when unreadable). */
  exe: string | null;
  /** argv as an array of strings ([] for kernel threads), from the process's own memory. */
  cmdline: string[];
  /** False when part of the command line could not be read (see notes). */
  cmdlineComplete: boolean;
  /** With --env only. */
  environ?: string[];
  /** Nanoseconds since boot: monotonic (start_time) and boot-time clock (start_boottime, what ps uses). */
  startTimeNs: number | null;
  startBoottimeNs: number | null;
  /** Capability masks as hex strings, e.g. "0x1ffffffffff"; null when the cred was unreadable. */
  caps: Partial<Record<string, bigint>> | null;
  /** Subjective credentials (task->cred), only when they differ from the objective ones. */
  subjective?: Omit<Credentials, 'caps'> | null;
  /** Number of threads in the process. */
  threads: number;
  /** Address of the task_struct (hex string). */
  task: bigint;
  /** Address of the mm_struct (hex string), null for kernel threads. */
  mm: bigint | null;
  flags: bigint;
  notes: string[];
}

export const SOURCES: readonly TaskSource[] = ['tasks', 'pids'];

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('ps')
      .description(
        'processes (or threads) from guest kernel memory: ids, state, credentials, exe, command line',
      )
      .option('--threads', 'one row per thread')
      .option(
        '--source <view>',
        'tasks: the task list (default); pids: the PID table, as /proc uses',
        'tasks',
      )
      .option('--env', 'read each process environment too (JSON: environ)')
      .option('--max <n>', 'stop after this many tasks')
      .option('--pause', 'pause a live VM while reading, for a consistent snapshot')
      .option('--json', 'print JSON'),
  ).action(async (opts: PsOptions) => {
    const { rows, issues } = await readPs(opts);
    print(opts.json ? toJson(rows) : table(rows, opts.threads === true));
    reportIssues(issues);
  });
}

export function parseSource(s: string | undefined): TaskSource {
  const v = (s ?? 'tasks') as TaskSource;
  if (!SOURCES.includes(v)) throw new VigilError('cli', 'usage', `--source is one of ${SOURCES.join(', ')}`);
  return v;
}

export function parseMax(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new VigilError('cli', 'usage', `--max needs a positive number`);
  return n;
}

/** Open the target, optionally paused, and read its processes. */
export async function readProcesses(
  opts: PsOptions,
  details: boolean,
): Promise<{ processes: Process[]; issues: WalkIssue[] }> {
  const source = parseSource(opts.source);
  const max = parseMax(opts.max);
  return withTarget(opts, (t) =>
    paused(t, opts.pause === true, async () => {
      const k = await t.kernel();
      const processes = listProcesses(k, {
        source,
        ...(max !== undefined ? { max } : {}),
        details: details ? { environ: opts.env === true } : false,
      });
      return { processes, issues: k.issues.items };
    }),
  );
}

async function readPs(opts: PsOptions): Promise<{ rows: PsRow[]; issues: WalkIssue[] }> {
  const { processes, issues } = await readProcesses(opts, true);
  const rows: PsRow[] = [];
  for (const p of processes) {
    for (const t of opts.threads ? p.threads : [p.leader]) rows.push(psRow(p, t));
  }
  return { rows, issues };
}

/** Run `fn` with a live VM paused when asked (and resume it only if it was running). */
async function paused<T>(t: Target, pause: boolean, fn: () => T | Promise<T>): Promise<T> {
  const control = t.machine.control;
  if (!pause || !control) return fn();
  const wasPaused = await control.isPaused();
  if (!wasPaused) await control.pause();
  try {
    // A paused guest's memory no longer changes: anything cached before is stale, nothing after will be.
    (await t.kernel()).refresh();
    return await fn();
  } finally {
    if (!wasPaused) await control.resume();
  }
}

const ids = (c: Credentials | null | undefined) => ({
  uid: c?.uid ?? null,
  euid: c?.euid ?? null,
  suid: c?.suid ?? null,
  fsuid: c?.fsuid ?? null,
  gid: c?.gid ?? null,
  egid: c?.egid ?? null,
  sgid: c?.sgid ?? null,
  fsgid: c?.fsgid ?? null,
});

const withoutCaps = ({ caps: _caps, ...rest }: Credentials): Omit<Credentials, 'caps'> => rest;

export function psRow(p: Process, t: Task): PsRow {
  const d = p.details;
  const row: PsRow = {
    pid: t.tgid,
    tid: t.pid,
    tgid: t.tgid,
    ppid: t.ppid,
    comm: t.comm,
    name: t.name,
    ...ids(t.cred),
    state: t.state,
    kthread: t.kthread,
    exe: d?.exe ?? null,
    cmdline: d?.cmdline.strings ?? [],
    cmdlineComplete: d?.cmdline.complete ?? true,
    startTimeNs: t.startTimeNs,
    startBoottimeNs: t.startBoottimeNs,
    caps: t.cred ? t.cred.caps : null,
    threads: p.threads.length,
    task: t.address,
    mm: t.mm,
    flags: BigInt(t.flags),
    notes: [...t.notes, ...(d?.notes ?? [])],
  };
  if (d?.cmdline.note) row.notes.push(`cmdline: ${d.cmdline.note}`);
  if (d?.environ) {
    row.environ = d.environ.strings;
    if (d.environ.note) row.notes.push(`environ: ${d.environ.note}`);
  }
  if (t.subjectiveCred !== undefined) row.subjective = t.subjectiveCred && withoutCaps(t.subjectiveCred);
  return row;
}

const id = (v: number | null) => (v === null ? '?' : v);

function table(rows: readonly PsRow[], threads: boolean): string {
  return renderTable(rows, [
    { header: 'PID', get: (r) => r.pid, align: 'right' },
    ...(threads ? [{ header: 'TID', get: (r: PsRow) => r.tid, align: 'right' as const }] : []),
    { header: 'PPID', get: (r) => id(r.ppid), align: 'right' },
    { header: 'UID', get: (r) => id(r.uid), align: 'right' },
    { header: 'EUID', get: (r) => id(r.euid), align: 'right' },
    { header: 'STATE', get: (r) => r.state },
    { header: 'COMM', get: (r) => r.name, max: 32 },
    { header: 'EXE', get: (r) => (r.kthread ? '[kthread]' : (r.exe ?? '?')), max: 40 },
    { header: 'CMDLINE', get: (r) => (r.kthread ? `[${r.name}]` : r.cmdline.join(' ')), max: 80 },
  ]);
}

/** Why a walk stopped early, on stderr: the list may be incomplete (a hostile guest can cause this). */
export function reportIssues(issues: readonly WalkIssue[]): void {
  for (const i of issues) process.stderr.write(`vigil: note: ${i.walker} ${i.kind}: ${i.detail}\n`);
}
