// User address spaces: one per mm_struct (threads and CLONE_VM children share it) with the task standing
// for it, its page tables, and whether it is still in use or being changed while we read it.
import type { AddressSpace } from '../../../arch/types.js';
import { VigilError, isVigilError } from '../../../util/errors.js';
import type { Kernel } from '../kernel.js';
import { listPidTasks, listTasks, type Task } from '../tasks/index.js';

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
