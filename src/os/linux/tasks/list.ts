// The task-list view: every thread group leader on init_task.tasks, and each leader's threads on its
// signal->thread_head list (task->thread_node; kernels without it: the leader's thread_group ring). This is
// the list a rootkit unlinks a process from to hide it; the PID table (pid-table.ts) is the other view.
// Bounded and cycle-safe: a loop, a hole or a bound stops the walk with an issue in kernel.issues.
import { listHeadEntries, WalkIssues } from '../walk.js';
import { hex, readPointer, type TaskKernel } from './access.js';
import { taskLayout } from './layout.js';
import { readTask, type Task } from './task.js';

/** Default bound on tasks visited: above the default pid_max of large machines (4 M is the hard limit). */
export const DEFAULT_MAX_TASKS = 100_000;
/** Bound on one thread group (a process may have many threads; the total bound still applies). */
export const DEFAULT_MAX_THREADS = 65_536;

export interface ListOptions {
  /** Stop after this many tasks (threads included); a 'bound' issue says so. */
  max?: number;
  /** Include threads other than group leaders (default true). */
  threads?: boolean;
}

/**
 * All tasks on the task list and their threads, leaders first within each group, in list order.
 * init_task (PID 0, the boot CPU's idle task) is the list head: it is not a process and is not returned.
 */
export function listTasks(k: TaskKernel, opts: ListOptions = {}): Task[] {
  // A live guest changes while we read it: a task that exits mid-walk can make the list look like it
  // loops or points into freed memory. Such a walk is read again from fresh memory (up to twice) before
  // its truncation is reported; a dump, or a list that breaks the same way each time, is reported at once.
  for (let attempt = 0; ; attempt++) {
    const issues = new WalkIssues();
    const tasks = listTasksOnce({ ...k, issues } as TaskKernel, opts);
    const racy = issues.items.some((i) => i.kind === 'cycle' || i.kind === 'unmapped');
    if (!racy || attempt >= 2 || !k.rereadLive?.()) {
      for (const i of issues.items) k.issues.add(i.walker, i.kind, i.detail);
      return tasks;
    }
  }
}

function listTasksOnce(k: TaskKernel, opts: ListOptions): Task[] {
  const max = opts.max ?? DEFAULT_MAX_TASKS;
  const L = taskLayout(k.types).task;
  const initTask = k.symbols.address('init_task');
  if (initTask === undefined) {
    k.issues.add('tasks', 'malformed', 'kernel symbol init_task not found');
    return [];
  }
  const read = (va: bigint) => readPointer(k, va);
  const out: Task[] = [];
  const seen = new Set<bigint>([initTask]);
  const leaders = listHeadEntries(read, initTask + BigInt(L.tasks), {
    walker: 'tasks',
    max,
    issues: k.issues,
  });
  for (const node of leaders) {
    const va = node - BigInt(L.tasks);
    if (out.length >= max) {
      k.issues.add('tasks', 'bound', `stopped at the bound of ${max} tasks`);
      break;
    }
    const leader = readTask(k, va);
    if (!leader) {
      k.issues.add('tasks', 'unmapped', `task_struct ${hex(va)} on the task list is not readable`);
      continue;
    }
    seen.add(va);
    out.push(leader);
    if (opts.threads === false) continue;
    for (const tva of threadAddresses(k, leader, max - out.length)) {
      if (seen.has(tva)) continue;
      seen.add(tva);
      const t = readTask(k, tva);
      if (!t) {
        k.issues.add('threads', 'unmapped', `thread ${hex(tva)} of PID ${leader.pid} is not readable`);
        continue;
      }
      out.push(t);
    }
  }
  return out;
}

/** task_struct addresses of a group's threads (the leader among them), from the leader. */
export function* threadAddresses(k: TaskKernel, leader: Task, max = DEFAULT_MAX_THREADS): Generator<bigint> {
  const L = taskLayout(k.types);
  const read = (va: bigint) => readPointer(k, va);
  const opts = { walker: 'threads', max: Math.min(max + 1, DEFAULT_MAX_THREADS), issues: k.issues };
  if (L.task.threadNode !== undefined && L.signal.threadHead !== undefined) {
    if (leader.signal === 0n) return;
    const off = BigInt(L.task.threadNode);
    for (const node of listHeadEntries(read, leader.signal + BigInt(L.signal.threadHead), opts)) {
      if (node >= off) yield node - off;
    }
    return;
  }
  // thread_group is a ring through every thread with no separate head: start at the leader's own node.
  const off = BigInt(L.task.threadGroup!);
  for (const node of listHeadEntries(read, leader.address + off, opts)) {
    if (node >= off) yield node - off;
  }
}
