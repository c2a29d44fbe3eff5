// Where the task walkers' fields are in this kernel, from its BTF by name, resolved once per type registry.
// Fields that moved or were renamed between kernel versions are tried by name in order (newest first);
// optional fields are undefined when this kernel has none. Walkers read a struct's bytes once and pick
// fields at these offsets: thousands of tasks per sweep make per-field lookups the dominant cost.
import { VigilError } from '../../../util/errors.js';
import type { FieldInfo, TypeRegistry } from '../btf/registry.js';

export interface Field {
  readonly offset: number;
  readonly size: number;
  readonly signed: boolean;
}

export interface TaskLayout {
  task: {
    /** Bytes read per task: up to the end of the last field used (not sizeof, ~10 KiB on 6.1). */
    readonly span: number;
    /** `__state` (5.14+) or `state` (older, a long). */
    readonly state: Field;
    readonly exitState: Field;
    readonly flags: Field;
    readonly tasks: number;
    readonly mm: number;
    readonly pid: Field;
    readonly tgid: Field;
    readonly realParent: number;
    readonly groupLeader: number;
    /** pid_links[PIDTYPE_PID]: the hlist_node on struct pid's tasks[PIDTYPE_PID]. */
    readonly pidLink: number;
    /** thread_node (3.14+): linked on signal->thread_head. */
    readonly threadNode?: number;
    /** thread_group (before 6.7): a circular list of the group's threads with no separate head. */
    readonly threadGroup?: number;
    readonly signal: number;
    readonly realCred: number;
    readonly cred: number;
    readonly comm: Field;
    readonly startTime?: number;
    /** start_boottime (5.5+) or real_start_time (older): what /proc/PID/stat's starttime counts. */
    readonly startBoottime?: number;
    /** Where a kernel thread keeps its struct kthread: worker_private (5.17+) or set_child_tid. */
    readonly kthreadPtr?: number;
  };
  signal: { readonly threadHead?: number };
  cred: {
    readonly span: number;
    readonly ids: Readonly<Record<IdName, number>>;
    /** Capability sets this kernel has (cap_ambient is 4.3+). */
    readonly caps: Readonly<Partial<Record<CapName, number>>>;
    /** kernel_cap_t: a u64 `val` (6.3+) or `cap[2]` u32 words (older). */
    readonly capWords: 1 | 2;
  };
  mm: {
    readonly span: number;
    readonly pgd: number;
    readonly argStart: number;
    readonly argEnd: number;
    readonly envStart: number;
    readonly envEnd: number;
    readonly exeFile?: number;
  };
  kthread?: { readonly data: number; readonly fullName?: number };
  worker?: { readonly currentWork: number; readonly pool: number; readonly desc: Field };
  pid: { readonly tasksPid: number; readonly nr: number };
}

export const ID_NAMES = ['uid', 'gid', 'suid', 'sgid', 'euid', 'egid', 'fsuid', 'fsgid'] as const;
export type IdName = (typeof ID_NAMES)[number];
export const CAP_NAMES = ['inheritable', 'permitted', 'effective', 'bset', 'ambient'] as const;
export type CapName = (typeof CAP_NAMES)[number];

const cache = new WeakMap<TypeRegistry, TaskLayout>();

/** The layout for this kernel; VigilError 'unsupported' naming the first field it lacks. */
export function taskLayout(types: TypeRegistry): TaskLayout {
  let l = cache.get(types);
  if (!l) {
    l = resolve(types);
    cache.set(types, l);
  }
  return l;
}

function tryField(types: TypeRegistry, type: string, path: string): FieldInfo | undefined {
  try {
    return types.field(type, path);
  } catch (e) {
    if (e instanceof VigilError) return undefined;
    throw e;
  }
}

function field(types: TypeRegistry, type: string, ...paths: string[]): Field {
  for (const p of paths) {
    const f = tryField(types, type, p);
    if (f) {
      if (f.bitfieldSize) break;
      const t = types.resolved(f.type);
      const signed = (t.kind === 'int' || t.kind === 'enum' || t.kind === 'enum64') && t.signed;
      return { offset: f.offset, size: f.size, signed };
    }
  }
  throw new VigilError('os', 'unsupported', `this kernel's BTF has no ${type}.${paths.join(' or ')}`);
}

function offsetOf(types: TypeRegistry, type: string, ...paths: string[]): number {
  return field(types, type, ...paths).offset;
}

function optional(types: TypeRegistry, type: string, ...paths: string[]): number | undefined {
  for (const p of paths) {
    const f = tryField(types, type, p);
    if (f) return f.offset;
  }
  return undefined;
}

/** End of the furthest of some fields: the bytes to read so that one read covers them all. */
const spanOf = (parts: readonly (readonly [offset: number | undefined, size: number])[]): number =>
  Math.max(0, ...parts.map(([o, size]) => (o === undefined ? 0 : o + size)));

function resolve(types: TypeRegistry): TaskLayout {
  const T = 'task_struct';
  const pidType = Number(types.enumValue('PIDTYPE_PID'));
  const task = {
    state: field(types, T, '__state', 'state'),
    exitState: field(types, T, 'exit_state'),
    flags: field(types, T, 'flags'),
    tasks: offsetOf(types, T, 'tasks'),
    mm: offsetOf(types, T, 'mm'),
    pid: field(types, T, 'pid'),
    tgid: field(types, T, 'tgid'),
    realParent: offsetOf(types, T, 'real_parent'),
    groupLeader: offsetOf(types, T, 'group_leader'),
    pidLink: offsetOf(types, T, `pid_links[${pidType}]`),
    threadNode: optional(types, T, 'thread_node'),
    threadGroup: optional(types, T, 'thread_group'),
    signal: offsetOf(types, T, 'signal'),
    realCred: offsetOf(types, T, 'real_cred'),
    cred: offsetOf(types, T, 'cred'),
    comm: field(types, T, 'comm'),
    startTime: optional(types, T, 'start_time'),
    startBoottime: optional(types, T, 'start_boottime', 'real_start_time'),
    kthreadPtr: optional(types, T, 'worker_private', 'set_child_tid'),
  };
  // Offsets alone are list heads (16 bytes) or pointers; never read past the struct itself.
  const taskSpan = Math.min(
    types.sizeof(T),
    spanOf(Object.values(task).map((f) => (typeof f === 'object' ? [f.offset, f.size] : ([f, 16] as const)))),
  );

  const signal = { threadHead: optional(types, 'signal_struct', 'thread_head') };
  if (task.threadGroup === undefined && (task.threadNode === undefined || signal.threadHead === undefined)) {
    throw new VigilError('os', 'unsupported', `this kernel's BTF has no way to list threads`);
  }

  const ids = Object.fromEntries(ID_NAMES.map((n) => [n, offsetOf(types, 'cred', n)])) as Record<
    IdName,
    number
  >;
  const caps: Partial<Record<CapName, number>> = {};
  for (const n of CAP_NAMES) {
    const o = optional(types, 'cred', `cap_${n}`);
    if (o !== undefined) caps[n] = o;
  }
  const capWords = tryField(types, 'kernel_cap_t', 'val') ? 1 : 2;
  if (capWords === 2) {
    const words = types.arrayInfo(types.field('kernel_cap_t', 'cap').type);
    if (words.elementSize !== 4 || words.count < 2) {
      throw new VigilError('os', 'unsupported', 'kernel_cap_t is neither a u64 nor two u32 words');
    }
  }
  const cred = {
    ids,
    caps,
    capWords: capWords as 1 | 2,
    span: spanOf([
      ...Object.values(ids).map((o) => [o, 4] as const),
      ...Object.values(caps).map((o) => [o, 8] as const),
    ]),
  };

  const mmFields = {
    pgd: offsetOf(types, 'mm_struct', 'pgd'),
    argStart: offsetOf(types, 'mm_struct', 'arg_start'),
    argEnd: offsetOf(types, 'mm_struct', 'arg_end'),
    envStart: offsetOf(types, 'mm_struct', 'env_start'),
    envEnd: offsetOf(types, 'mm_struct', 'env_end'),
    exeFile: optional(types, 'mm_struct', 'exe_file'),
  };
  const mm = { ...mmFields, span: spanOf(Object.values(mmFields).map((o) => [o, 8] as const)) };

  const kdata = optional(types, 'kthread', 'data');
  const kthread =
    kdata === undefined ? undefined : { data: kdata, fullName: optional(types, 'kthread', 'full_name') };
  const wCur = optional(types, 'worker', 'current_work');
  const wPool = optional(types, 'worker', 'pool');
  const wDesc = tryField(types, 'worker', 'desc');
  const worker =
    wCur !== undefined && wPool !== undefined && wDesc
      ? { currentWork: wCur, pool: wPool, desc: field(types, 'worker', 'desc') }
      : undefined;

  const pid = {
    tasksPid: offsetOf(types, 'pid', `tasks[${pidType}]`),
    nr: offsetOf(types, 'pid', 'numbers[0].nr'),
  };

  return {
    task: { ...task, span: taskSpan },
    signal,
    cred,
    mm,
    ...(kthread ? { kthread } : {}),
    ...(worker ? { worker } : {}),
    pid,
  };
}
