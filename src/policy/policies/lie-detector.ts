// Livewire's lie detector, inside the kernel: three views of the same tasks that a rootkit has to keep in
// agreement to hide one — the task list (init_task.tasks and each group's threads: what sysrq-t, many
// tools and forensic walkers use), the PID table (init_pid_ns.idr: what /proc lists) and the run queues (what
// the scheduler runs). A task in the PID table or on a run queue but not on the task list was unlinked by
// DKOM; a live task on the task list with no PID-table entry was hidden from /proc.
// Benign differences: tasks that are exiting (they leave both lists under one lock, but run until
// do_task_dead), per-CPU idle tasks, and — on a live guest, whose views are read one after the other —
// tasks created or reaped between the walks. On a live guest a mismatch is therefore read again from
// scratch (new cache epoch) and only what both readings agree on is reported — mismatches and walk issues
// alike (a walk racing an exiting task stumbles somewhere new each time). A dump is consistent.
// What the guest itself says — its ps, /proc/modules and /proc/net through qemu-guest-agent — is compared
// with these views by the lie-detector-guest policy (lie-detector-guest.ts): it needs the agent, which the
// engine checks, so that this policy runs the same with or without one (and on dumps).
import { listPidTasks, listTasks, readTask, type Task, type TaskKernel } from '../../os/linux/tasks/index.js';
import type { Kernel } from '../../os/linux/kernel.js';
import { definePolicy, type SweepContext } from '../policy.js';
import type { Finding } from '../types.js';
import {
  collecting,
  forwardIssues,
  hex,
  isLive,
  noteIssues,
  persistentIssues,
  sweepTasks,
  type SweepKernel,
} from './process-facts.js';
import { runQueueTasks, type RunQueueKernel, type RunQueuePlace } from './runqueues.js';

/** PF_EXITING: set at the start of do_exit (include/linux/sched.h, a macro). */
export const PF_EXITING = 0x4;

export type LieKernel = TaskKernel & RunQueueKernel & SweepKernel;

/** What the three views say about one task. */
export interface TaskViews {
  task: Task;
  onTaskList: boolean;
  inPidTable: boolean;
  /** "cpu0:cfs" when queued or running, else null. */
  runQueue: string | null;
}

export interface CrossView {
  /** Tasks missing from at least one view, exiting tasks and idle tasks left out. */
  mismatches: TaskViews[];
  counts: { taskList: number; pidTable: number; runQueue: number };
}

/** True for tasks on their way out: they may already be off one list and not yet off another. */
export function isExiting(t: Task): boolean {
  return t.exitState !== 0 || (t.flags & PF_EXITING) !== 0 || t.state === 'X' || t.state === 'Z';
}

/** Attempts at the run-queue walk on a live guest: its trees rebalance at every context switch. */
const RUNQUEUE_ATTEMPTS = 3;

/**
 * The run-queue view. On a live guest the scheduler rotates its trees under the walk all the time, so a
 * walk that stumbled is simply repeated (it costs well under a millisecond); what still fails is kept.
 */
function runQueues(k: LieKernel): ReturnType<typeof runQueueTasks> {
  let r = collecting(k, () => runQueueTasks(k), false);
  for (let i = 1; i < RUNQUEUE_ATTEMPTS && r.issues.length > 0 && isLive(k); i++) {
    r = collecting(k, () => runQueueTasks(k), false);
  }
  forwardIssues(k, r.issues);
  return r.value;
}

/**
 * Read the three views once and compare them. With `sweep`, the task list is the sweep's shared one
 * (sweepTasks: the lie detector runs first and walks it for the detectors after it).
 */
export function crossView(k: LieKernel, sweep?: number): CrossView {
  // The views back to back, so that a live guest has as little time as possible to change in between.
  const list = sweep === undefined ? listTasks(k) : sweepTasks(k, sweep);
  const pids = listPidTasks(k).tasks;
  const rq = runQueues(k);
  const onList = new Map(list.map((t) => [t.address, t]));
  const inPids = new Map(pids.map((p) => [p.task.address, p.task]));
  const all = new Map<bigint, Task>([...onList, ...inPids]);
  const place = (va: bigint): string | null => {
    const e = rq.tasks.get(va);
    return e ? `cpu${e.cpu}:${e.where satisfies RunQueuePlace}` : null;
  };
  for (const va of rq.tasks.keys()) {
    if (all.has(va)) continue;
    const t = readTask(k, va);
    if (t) all.set(va, t);
    else k.issues.add('runqueue', 'unmapped', `queued task_struct ${hex(va)} is not readable`);
  }
  const mismatches: TaskViews[] = [];
  for (const [va, task] of all) {
    if (task.pid === 0 || rq.idle.has(va) || isExiting(task)) continue;
    const v: TaskViews = {
      task,
      onTaskList: onList.has(va),
      inPidTable: inPids.has(va),
      runQueue: place(va),
    };
    if (!v.onTaskList || !v.inPidTable) mismatches.push(v);
  }
  return { mismatches, counts: { taskList: list.length, pidTable: pids.length, runQueue: rq.tasks.size } };
}

/** Same task in two readings: same task_struct, same PID, same start time (a reused slot differs). */
const identity = (t: Task): string => `${hex(t.address)}:${t.pid}:${t.startTimeNs ?? '?'}`;

/** Mismatches present in both readings (a task created or reaped between walks is in one only). */
export function confirmed(first: readonly TaskViews[], second: readonly TaskViews[]): TaskViews[] {
  const again = new Map(second.map((v) => [identity(v.task), v]));
  return first.flatMap((v) => {
    const w = again.get(identity(v.task));
    return w && w.onTaskList === v.onTaskList && w.inPidTable === v.inPidTable ? [w] : [];
  });
}

/** One finding per process (its hidden threads listed together) and per kind of lie. */
export function lieFindings(mismatches: readonly TaskViews[]): Finding[] {
  const groups = new Map<string, TaskViews[]>();
  for (const v of mismatches) {
    const kind = v.onTaskList ? 'no-pid' : 'unlinked';
    const key = `${kind}:${v.task.tgid}`;
    groups.set(key, [...(groups.get(key) ?? []), v]);
  }
  const out: Finding[] = [];
  for (const [, views] of groups) {
    views.sort((a, b) =>
      a.task.pid === a.task.tgid ? -1 : b.task.pid === b.task.tgid ? 1 : a.task.pid - b.task.pid,
    );
    const lead = views[0]!;
    const t = lead.task;
    const unlinked = !lead.onTaskList;
    const threads = views.map((v) => ({
      tid: v.task.pid,
      comm: v.task.comm,
      task: hex(v.task.address),
      taskList: v.onTaskList,
      pidTable: v.inPidTable,
      runQueue: v.runQueue,
    }));
    const seenBy = [lead.inPidTable && 'the PID table', lead.runQueue && `the run queue (${lead.runQueue})`]
      .filter(Boolean)
      .join(' and ');
    out.push({
      key: `${unlinked ? 'unlinked' : 'no-pid'}:pid=${t.tgid}:start=${t.startTimeNs ?? '?'}`,
      severity: unlinked ? 'critical' : 'high',
      summary: unlinked
        ? `process ${t.tgid} (${t.comm}) is hidden from the kernel task list but present in ${seenBy || 'another view'} (DKOM)`
        : `process ${t.tgid} (${t.comm}) is on the task list but has no PID-table entry: invisible to /proc`,
      evidence: {
        pid: t.tgid,
        comm: t.comm,
        ppid: t.ppid,
        uid: t.cred?.uid ?? null,
        state: t.state,
        task: hex(t.address),
        startTimeNs: t.startTimeNs,
        views: { taskList: lead.onTaskList, pidTable: lead.inPidTable, runQueue: lead.runQueue },
        threads,
      },
    });
  }
  return out;
}

/** The whole check: read, and on a live guest read again before believing a mismatch. */
export function detectLies(
  ctx: Pick<SweepContext, 'note'>,
  k: LieKernel,
  sweep?: number,
): { findings: Finding[]; view: CrossView } {
  const first = collecting(k, () => crossView(k, sweep));
  if (first.value.mismatches.length === 0 && first.issues.length === 0) {
    return { findings: [], view: first.value };
  }
  if (!isLive(k)) {
    noteIssues(ctx, first.issues);
    return { findings: lieFindings(first.value.mismatches), view: first.value };
  }
  k.epoch.bump();
  const second = collecting(k, () => crossView(k, sweep));
  noteIssues(ctx, persistentIssues(first.issues, second.issues));
  return {
    findings: lieFindings(confirmed(first.value.mismatches, second.value.mismatches)),
    view: second.value,
  };
}

export const lieDetectorPolicy = definePolicy<Kernel>({
  id: 'lie-detector',
  title: 'Hidden processes (cross-view)',
  description:
    'Compares the kernel task list, the PID table and the CPUs’ run queues: a task in the PID table or on a ' +
    'run queue but not on the task list was unlinked by a rootkit (DKOM); one with no PID is hidden from /proc.',
  technique: 'T1014',
  severity: 'critical',
  requires: ['kernel'],
  poll(ctx) {
    return detectLies(ctx, ctx.requireKernel(), ctx.sweep).findings;
  },
});
