// The PID-table view: every PID allocated in the initial PID namespace (init_pid_ns.idr, an xarray of
// struct pid *) and the task using it (pid->tasks[PIDTYPE_PID], an hlist of task->pid_links[PIDTYPE_PID]).
// This is where /proc finds processes, and what a task-list rootkit forgets: comparing it with the task
// list (list.ts) exposes hidden tasks. PIDs without a task (a process group or session outliving its
// leader) are counted, not returned.
import { hlistEntries } from '../walk.js';
import { xarrayEntries } from '../xarray.js';
import { hex, readPointer, tryReadAt, type TaskKernel } from './access.js';
import { taskLayout } from './layout.js';
import { DEFAULT_MAX_TASKS } from './list.js';
import { readTask, type Task } from './task.js';

export interface PidTask {
  /** The PID number: the task's index in the IDR. */
  nr: number;
  /** The struct pid. */
  pid: bigint;
  /** pid->numbers[0].nr: should equal nr; a mismatch is worth a look. */
  pidNumber: number | null;
  task: Task;
}

export interface PidTableResult {
  tasks: PidTask[];
  /** Allocated PIDs with no task (process group or session IDs only). */
  withoutTask: number;
}

/** Tasks by PID number from init_pid_ns's IDR, in PID order. */
export function listPidTasks(k: TaskKernel, opts: { max?: number } = {}): PidTableResult {
  const max = opts.max ?? DEFAULT_MAX_TASKS;
  const ns = k.symbols.address('init_pid_ns');
  const out: PidTableResult = { tasks: [], withoutTask: 0 };
  if (ns === undefined) {
    k.issues.add('pids', 'malformed', 'kernel symbol init_pid_ns not found');
    return out;
  }
  const L = taskLayout(k.types);
  const idr = ns + BigInt(k.types.offsetof('pid_namespace', 'idr'));
  const xa = idr + BigInt(k.types.offsetof('idr', 'idr_rt'));
  const linkOff = BigInt(L.task.pidLink);
  const read = (va: bigint) => readPointer(k, va);
  for (const { index, entry } of xarrayEntries(k, xa, { walker: 'pids', max })) {
    if ((entry & 7n) !== 0n) {
      k.issues.add('pids', 'malformed', `IDR entry ${index} is not a struct pid pointer (${hex(entry)})`);
      continue;
    }
    const nrBytes = tryReadAt(k.space, entry + BigInt(L.pid.nr), 4);
    const pidNumber = nrBytes ? nrBytes.readInt32LE(0) : null;
    let found = false;
    // One task uses a PID as its own; more than one on this list would be corruption, so show them all.
    for (const node of hlistEntries(read, entry + BigInt(L.pid.tasksPid), {
      walker: 'pids',
      max: 8,
      issues: k.issues,
    })) {
      if (node < linkOff) continue;
      const task = readTask(k, node - linkOff);
      if (!task) {
        k.issues.add('pids', 'unmapped', `task ${hex(node - linkOff)} of PID ${index} is not readable`);
        continue;
      }
      found = true;
      if (out.tasks.length >= max) {
        k.issues.add('pids', 'bound', `stopped at the bound of ${max} tasks`);
        return out;
      }
      out.tasks.push({ nr: Number(index), pid: entry, pidNumber, task });
    }
    if (!found) out.withoutTask++;
  }
  return out;
}
