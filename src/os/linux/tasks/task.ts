// One task_struct read from guest memory: identity, state, credentials, times, the pointers the other
// walkers follow. The struct is read once (up to the last field used) and fields are picked at BTF offsets.
// Everything here is guest data: a garbage pointer costs that field (null plus a note on the task), never
// the walk, and never throws anything but VigilError.
import { guestString } from '../../../util/sanitize.js';
import { hex, readPointer, tryReadAt, type TaskKernel } from './access.js';
import {
  CAP_NAMES,
  ID_NAMES,
  taskLayout,
  type CapName,
  type Field,
  type IdName,
  type TaskLayout,
} from './layout.js';
import { taskStateLetter, type TaskStateLetter } from './state.js';

/** PF_KTHREAD: the task is a kernel thread (include/linux/sched.h; a macro, stable since 2.6). */
export const PF_KTHREAD = 0x0020_0000;
/** PF_WQ_WORKER: a workqueue worker; /proc appends what it last worked on to its name. */
export const PF_WQ_WORKER = 0x0000_0020;
/** /proc formats a task's name into 64 bytes (fs/proc/array.c proc_task_name). */
const PROC_NAME_MAX = 63;

export interface Credentials {
  uid: number;
  gid: number;
  suid: number;
  sgid: number;
  euid: number;
  egid: number;
  fsuid: number;
  fsgid: number;
  /** Capability sets as 64-bit masks (bit n = capability n); a set this kernel lacks is absent. */
  caps: Partial<Record<CapName, bigint>>;
}

export interface Task {
  /** Address of the task_struct. */
  address: bigint;
  /** The task's own id (the thread id, for a thread). */
  pid: number;
  /** Thread group id: the process id. */
  tgid: number;
  /** real_parent->tgid, as /proc shows it; null when real_parent is unreadable. */
  ppid: number | null;
  /** task->comm (at most 15 bytes), sanitised. */
  comm: string;
  /**
   * The name /proc/PID/stat and ps show: comm, except that a kernel thread shows its full name (5.17+) and
   * a workqueue worker appends "+desc" or "-desc" (working / idle, and on what).
   */
  name: string;
  state: TaskStateLetter;
  /** __state (state on older kernels) and exit_state, raw. */
  stateValue: number;
  exitState: number;
  flags: number;
  kthread: boolean;
  /** The objective credentials (real_cred): what /proc shows and what others see. Null when unreadable. */
  cred: Credentials | null;
  /** The subjective credentials (cred) when they differ from real_cred: an override in progress. */
  subjectiveCred?: Credentials | null;
  /** Monotonic nanoseconds since boot at fork (start_time). */
  startTimeNs: number | null;
  /** Boot-time nanoseconds since boot at fork (start_boottime): what /proc's starttime counts. */
  startBoottimeNs: number | null;
  /** mm_struct, or null (kernel threads, zombies). */
  mm: bigint | null;
  realParent: bigint;
  groupLeader: bigint;
  signal: bigint;
  /** Why some field is missing or partial. */
  notes: string[];
}

const readInt = (b: Buffer, f: Field): number => {
  if (f.offset + f.size > b.length) return 0;
  switch (f.size) {
    case 1:
      return f.signed ? b.readInt8(f.offset) : b.readUInt8(f.offset);
    case 2:
      return f.signed ? b.readInt16LE(f.offset) : b.readUInt16LE(f.offset);
    case 4:
      return f.signed ? b.readInt32LE(f.offset) : b.readUInt32LE(f.offset);
    default:
      // An 8-byte `long state` (older kernels): the reported bits all live in the low word.
      return b.readUInt32LE(f.offset);
  }
};
const ptrAt = (b: Buffer, off: number | undefined): bigint =>
  off !== undefined && off + 8 <= b.length ? b.readBigUInt64LE(off) : 0n;
const nsAt = (b: Buffer, off: number | undefined): number | null =>
  off === undefined || off + 8 > b.length ? null : Number(b.readBigUInt64LE(off));

/** Read a task_struct; undefined when its bytes are not mapped. */
export function readTask(k: TaskKernel, va: bigint): Task | undefined {
  const L = taskLayout(k.types);
  if (va === 0n) return undefined;
  const b = tryReadAt(k.space, va, L.task.span);
  if (!b) return undefined;
  const T = L.task;
  const notes: string[] = [];
  const flags = readInt(b, T.flags) >>> 0;
  const stateValue = readInt(b, T.state) >>> 0;
  const exitState = readInt(b, T.exitState) >>> 0;
  const comm = guestString(b.subarray(T.comm.offset, T.comm.offset + T.comm.size), 64);
  const realParent = ptrAt(b, T.realParent);
  const realCred = ptrAt(b, T.realCred);
  const credPtr = ptrAt(b, T.cred);
  const mm = ptrAt(b, T.mm);

  const cred = readCred(k, L, realCred);
  if (!cred) notes.push(`real_cred ${hex(realCred)} is not readable: ids unknown`);
  let subjective: Credentials | null | undefined;
  if (credPtr !== realCred) {
    subjective = readCred(k, L, credPtr);
    if (!subjective) notes.push(`cred ${hex(credPtr)} is not readable`);
  }

  const ppid = parentTgid(k, L, realParent);
  if (ppid === null) notes.push(`real_parent ${hex(realParent)} is not readable`);

  const task: Task = {
    address: va,
    pid: readInt(b, T.pid),
    tgid: readInt(b, T.tgid),
    ppid,
    comm,
    name: comm,
    state: taskStateLetter(stateValue, exitState),
    stateValue,
    exitState,
    flags,
    kthread: (flags & PF_KTHREAD) !== 0,
    cred,
    startTimeNs: nsAt(b, T.startTime),
    startBoottimeNs: nsAt(b, T.startBoottime),
    mm: mm === 0n ? null : mm,
    realParent,
    groupLeader: ptrAt(b, T.groupLeader),
    signal: ptrAt(b, T.signal),
    notes,
  };
  if (subjective !== undefined) task.subjectiveCred = subjective;
  if (task.kthread) task.name = kernelThreadName(k, L, b, task);
  return task;
}

function parentTgid(k: TaskKernel, L: TaskLayout, parent: bigint): number | null {
  if (parent === 0n) return null;
  const b = tryReadAt(k.space, parent + BigInt(L.task.tgid.offset), L.task.tgid.size);
  return b ? readInt(b, { ...L.task.tgid, offset: 0 }) : null;
}

/** Both credential sets of a struct cred; null when unreadable. */
export function readCred(k: TaskKernel, L: TaskLayout, va: bigint): Credentials | null {
  if (va === 0n) return null;
  const b = tryReadAt(k.space, va, L.cred.span);
  if (!b) return null;
  const ids = {} as Record<IdName, number>;
  for (const n of ID_NAMES) ids[n] = b.readUInt32LE(L.cred.ids[n]); // kuid_t/kgid_t: struct { u32 val }
  const caps: Partial<Record<CapName, bigint>> = {};
  for (const n of CAP_NAMES) {
    const off = L.cred.caps[n];
    if (off === undefined) continue;
    // kernel_cap_t is a u64 in 6.3+; before, cap[0] holds capabilities 0–31 and cap[1] 32–63.
    caps[n] =
      L.cred.capWords === 1
        ? b.readBigUInt64LE(off)
        : BigInt(b.readUInt32LE(off)) | (BigInt(b.readUInt32LE(off + 4)) << 32n);
  }
  return { ...ids, caps };
}

/** proc_task_name for kernel threads: workqueue workers say what they work on; others their full name. */
function kernelThreadName(k: TaskKernel, L: TaskLayout, b: Buffer, t: Task): string {
  const kthread = ptrAt(b, L.task.kthreadPtr);
  if (kthread === 0n || !L.kthread) return t.comm;
  if (t.flags & PF_WQ_WORKER) {
    if (!L.worker) return t.comm;
    const worker = readPointer(k, kthread + BigInt(L.kthread.data));
    if (!worker) return t.comm;
    const W = L.worker;
    const wb = tryReadAt(
      k.space,
      worker,
      Math.max(W.desc.offset + W.desc.size, W.pool + 8, W.currentWork + 8),
    );
    if (!wb || wb.readBigUInt64LE(W.pool) === 0n) return t.comm;
    const desc = guestString(wb.subarray(W.desc.offset, W.desc.offset + W.desc.size), 64);
    if (desc === '') return t.comm;
    const busy = wb.readBigUInt64LE(W.currentWork) !== 0n;
    return `${t.comm}${busy ? '+' : '-'}${desc}`.slice(0, PROC_NAME_MAX);
  }
  if (L.kthread.fullName === undefined) return t.comm;
  const full = readPointer(k, kthread + BigInt(L.kthread.fullName));
  if (!full) return t.comm;
  const nb = tryReadAt(k.space, full, 64);
  // full_name is a kstrdup'ed string: it may end near a page end, so fall back to a shorter read.
  const bytes = nb ?? tryReadAt(k.space, full, 4096 - Number(full & 0xfffn));
  return bytes ? guestString(bytes.subarray(0, PROC_NAME_MAX), PROC_NAME_MAX) : t.comm;
}
