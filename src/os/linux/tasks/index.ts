// Processes and threads of a Linux guest, from two independent views: the task list (init_task.tasks and
// each group's thread list) and the PID table (init_pid_ns.idr), plus per-process details read from user
// memory (command line, environment) and the executable's path.
export type { TaskKernel, TryReader } from './access.js';
export { taskStateLetter, type TaskStateLetter } from './state.js';
export { readTask, readCred, PF_KTHREAD, PF_WQ_WORKER, type Task, type Credentials } from './task.js';
export { taskLayout, ID_NAMES, CAP_NAMES, type TaskLayout, type IdName, type CapName } from './layout.js';
export { listTasks, threadAddresses, DEFAULT_MAX_TASKS, type ListOptions } from './list.js';
export { listPidTasks, type PidTask, type PidTableResult } from './pid-table.js';
export {
  readProcessDetails,
  readUserStrings,
  MAX_USER_AREA,
  type ProcessDetails,
  type UserStrings,
  type DetailOptions,
} from './details.js';
export { listProcesses, type Process, type ProcessOptions, type TaskSource } from './processes.js';
