// Processes for display: tasks grouped by thread group (tgid) with the group leader standing for the
// process, plus what ps shows beyond the task_struct (exe, command line). By default from the task list,
// the view a process-listing rootkit tampers with first, so `ps` and the cross-view check can disagree
// visibly; `source: 'pids'` lists from the PID table as /proc does.
import type { TaskKernel } from './access.js';
import { readProcessDetails, type DetailOptions, type ProcessDetails } from './details.js';
import { listTasks, type ListOptions } from './list.js';
import { listPidTasks } from './pid-table.js';
import type { Task } from './task.js';

export interface Process {
  /** The thread group leader (pid === tgid); if it was not found, the group's first task. */
  leader: Task;
  /** Every task of the group, the leader first, then by thread id. */
  threads: Task[];
  /** Present when details were asked for. */
  details?: ProcessDetails;
}

export type TaskSource = 'tasks' | 'pids';

export interface ProcessOptions extends Omit<ListOptions, 'threads'> {
  /** Where tasks come from: the task list (default) or the PID table. */
  source?: TaskSource;
  /** Read exe, command line (and environment if asked) for each process. */
  details?: boolean | DetailOptions;
}

/** Every process, by PID. */
export function listProcesses(k: TaskKernel, opts: ProcessOptions = {}): Process[] {
  const max = opts.max;
  const tasks =
    opts.source === 'pids'
      ? listPidTasks(k, max === undefined ? {} : { max }).tasks.map((p) => p.task)
      : listTasks(k, max === undefined ? {} : { max });
  const groups = new Map<number, Task[]>();
  for (const t of tasks) {
    const g = groups.get(t.tgid);
    if (g) g.push(t);
    else groups.set(t.tgid, [t]);
  }
  const detailOpts = opts.details === true ? {} : opts.details || undefined;
  const out: Process[] = [];
  for (const [tgid, group] of groups) {
    group.sort((a, b) => (a.pid === tgid ? -1 : b.pid === tgid ? 1 : a.pid - b.pid));
    const p: Process = { leader: group[0]!, threads: group };
    if (detailOpts) p.details = readProcessDetails(k, p.leader, detailOpts);
    out.push(p);
  }
  return out.sort((a, b) => a.leader.tgid - b.leader.tgid);
}
