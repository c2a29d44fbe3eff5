// A task's state as the one letter /proc/PID/stat and ps show. The TASK_* values are preprocessor macros
// (include/linux/sched.h), so BTF cannot name them; they have kept these bit values since 4.14, when the
// reported set was fixed for user space (fs/proc/array.c task_state_array), and the letters are the ABI:
//   TASK_RUNNING 0, TASK_INTERRUPTIBLE 0x1, TASK_UNINTERRUPTIBLE 0x2, __TASK_STOPPED 0x4,
//   __TASK_TRACED 0x8, EXIT_DEAD 0x10, EXIT_ZOMBIE 0x20, TASK_PARKED 0x40, TASK_DEAD 0x80,
//   TASK_WAKEKILL 0x100, TASK_WAKING 0x200, TASK_NOLOAD 0x400, TASK_NEW 0x800, TASK_RTLOCK_WAIT 0x1000.
// Older kernels numbered the high bits differently; the low five (R S D T t) are the same everywhere.

export type TaskStateLetter = 'R' | 'S' | 'D' | 'T' | 't' | 'X' | 'Z' | 'P' | 'I';

export const TASK_INTERRUPTIBLE = 0x1;
export const TASK_UNINTERRUPTIBLE = 0x2;
export const TASK_STOPPED = 0x4;
export const TASK_TRACED = 0x8;
export const EXIT_DEAD = 0x10;
export const EXIT_ZOMBIE = 0x20;
export const TASK_PARKED = 0x40;
export const TASK_NOLOAD = 0x400;
export const TASK_RTLOCK_WAIT = 0x1000;
/** The bits /proc reports (TASK_REPORT). */
const TASK_REPORT = 0x7f;
const TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD;
const LETTERS: readonly TaskStateLetter[] = ['R', 'S', 'D', 'T', 't', 'X', 'Z', 'P', 'I'];

/** The kernel's __task_state_index + task_index_to_char: `state` is __state (or state), `exitState` exit_state. */
export function taskStateLetter(state: number, exitState: number): TaskStateLetter {
  let report = (state | exitState) & TASK_REPORT;
  if ((state & TASK_IDLE) === TASK_IDLE) report = TASK_REPORT + 1;
  // A task blocked on an RT lock (PREEMPT_RT spinlocks) is shown as an ordinary uninterruptible sleep.
  if (state & TASK_RTLOCK_WAIT) report = TASK_UNINTERRUPTIBLE;
  return LETTERS[fls(report)]!;
}

/** Find last set: 1-based index of the highest set bit, 0 for 0. */
function fls(x: number): number {
  return x === 0 ? 0 : 32 - Math.clz32(x);
}
