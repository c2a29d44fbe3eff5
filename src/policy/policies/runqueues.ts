// The scheduler's view of tasks: what each CPU runs and what waits to run on it (per-CPU `runqueues`:
// rq->curr, the CFS red-black tree rq->cfs.tasks_timeline of sched_entity — descending into group entities'
// own cfs_rq — the RT priority lists rq->rt.active.queue[] and the deadline tree rq->dl.root). A task that
// runs must be on a run queue, whatever list a rootkit unlinked it from: the third view the lie detector
// compares with the task list and the PID table. Bounded, cycle-safe, offsets from BTF by name; a walk
// that stops early leaves an issue in kernel.issues. (No os/ walker covers the run queues; this could move
// to os/linux/tasks/ as is.)
import { isVigilError } from '../../util/errors.js';
import { listHeadEntries, rbTreeNodes, type WalkIssues } from '../../os/linux/walk.js';
import type { TypeRegistry } from '../../os/linux/btf/registry.js';

export interface RunQueueKernel {
  readonly types: TypeRegistry;
  readonly space: { tryRead(va: bigint, length: number): Buffer | undefined };
  readonly symbols: { address(name: string): bigint | undefined };
  readonly issues: WalkIssues;
  readonly kaslr: { readonly perCpuOffsets: readonly bigint[] };
}

export type RunQueuePlace = 'curr' | 'cfs' | 'rt' | 'dl';

export interface RunQueueTask {
  /** task_struct address. */
  task: bigint;
  cpu: number;
  where: RunQueuePlace;
}

export interface RunQueueView {
  tasks: Map<bigint, RunQueueTask>;
  /** Each CPU's idle task (rq->idle): never on the task list, not a process. */
  idle: Set<bigint>;
  /** CPUs whose run queue was read. */
  cpus: number;
}

/** Bound on queued entities visited over all CPUs (a run queue holds at most the machine's tasks). */
export const MAX_RUNQUEUE_ENTITIES = 100_000;
/** Task-group nesting (cgroup depth) followed into group entities' run queues. */
export const MAX_GROUP_DEPTH = 16;
const WALKER = 'runqueue';
const U64_MAX = (1n << 64n) - 1n;

interface Offsets {
  curr: number;
  idle: number;
  cfs: number;
  rt?: {
    active: number;
    queues: number;
    count: number;
    stride: number;
    runList: number;
    taskRt: number;
    myQ?: number;
  };
  dl?: { root: number; rbNode: number; taskDl: number };
  rqSize: number;
  timeline: number;
  runNode: number;
  myQ?: number;
  taskSe: number;
  rbLeft: number;
  rbRight: number;
}

const layouts = new WeakMap<TypeRegistry, Offsets>();

function opt(t: TypeRegistry, type: string, path: string): number | undefined {
  try {
    return t.offsetof(type, path);
  } catch (e) {
    if (isVigilError(e)) return undefined;
    throw e;
  }
}

function layout(t: TypeRegistry): Offsets {
  const hit = layouts.get(t);
  if (hit) return hit;
  const rt = (() => {
    const active = opt(t, 'rq', 'rt.active.queue');
    const runList = opt(t, 'sched_rt_entity', 'run_list');
    const taskRt = opt(t, 'task_struct', 'rt');
    if (active === undefined || runList === undefined || taskRt === undefined) return undefined;
    const q = t.arrayInfo(t.field('rt_prio_array', 'queue').type);
    const myQ = opt(t, 'sched_rt_entity', 'my_q');
    return {
      active: opt(t, 'rt_rq', 'active.queue') ?? 0,
      queues: active,
      count: Math.min(q.count, 1024),
      stride: q.elementSize,
      runList,
      taskRt,
      ...(myQ !== undefined ? { myQ } : {}),
    };
  })();
  const dlRoot = opt(t, 'rq', 'dl.root');
  const dlNode = opt(t, 'sched_dl_entity', 'rb_node');
  const taskDl = opt(t, 'task_struct', 'dl');
  const myQ = opt(t, 'sched_entity', 'my_q');
  const l: Offsets = {
    curr: t.offsetof('rq', 'curr'),
    idle: t.offsetof('rq', 'idle'),
    cfs: t.offsetof('rq', 'cfs'),
    ...(rt ? { rt } : {}),
    ...(dlRoot !== undefined && dlNode !== undefined && taskDl !== undefined
      ? { dl: { root: dlRoot, rbNode: dlNode, taskDl } }
      : {}),
    rqSize: t.sizeof('rq'),
    timeline: t.offsetof('cfs_rq', 'tasks_timeline'),
    runNode: t.offsetof('sched_entity', 'run_node'),
    ...(myQ !== undefined ? { myQ } : {}),
    taskSe: t.offsetof('task_struct', 'se'),
    rbLeft: t.offsetof('rb_node', 'rb_left'),
    rbRight: t.offsetof('rb_node', 'rb_right'),
  };
  layouts.set(t, l);
  return l;
}

const hex = (v: bigint): string => '0x' + v.toString(16);

/** Every task on every CPU's run queue (running or runnable), and the CPUs' idle tasks. */
export function runQueueTasks(k: RunQueueKernel): RunQueueView {
  const view: RunQueueView = { tasks: new Map(), idle: new Set(), cpus: 0 };
  const base = k.symbols.address('runqueues');
  if (base === undefined) {
    k.issues.add(WALKER, 'malformed', 'kernel symbol runqueues not found');
    return view;
  }
  let L: Offsets;
  try {
    L = layout(k.types);
  } catch (e) {
    if (!isVigilError(e)) throw e;
    k.issues.add(WALKER, 'malformed', `run queues cannot be read on this kernel: ${e.message}`);
    return view;
  }
  const read = (va: bigint): bigint | undefined => {
    if (va < 0n || va + 7n > U64_MAX) return undefined;
    const b = k.space.tryRead(va, 8);
    return b ? b.readBigUInt64LE(0) : undefined;
  };
  let budget = MAX_RUNQUEUE_ENTITIES;
  const add = (task: bigint, cpu: number, where: RunQueuePlace) => {
    if (task === 0n || view.idle.has(task)) return;
    if (!view.tasks.has(task)) view.tasks.set(task, { task, cpu, where });
  };
  const offsets = k.kaslr.perCpuOffsets.length > 0 ? k.kaslr.perCpuOffsets : [0n];

  const walkCfs = (cfsRq: bigint, cpu: number, depth: number, seenRqs: Set<bigint>) => {
    if (depth > MAX_GROUP_DEPTH || seenRqs.has(cfsRq)) {
      k.issues.add(
        WALKER,
        depth > MAX_GROUP_DEPTH ? 'bound' : 'cycle',
        `cfs_rq ${hex(cfsRq)} nests too deep or repeats`,
      );
      return;
    }
    seenRqs.add(cfsRq);
    const nodes = rbTreeNodes(
      read,
      cfsRq + BigInt(L.timeline),
      { left: L.rbLeft, right: L.rbRight },
      { walker: WALKER, max: budget, issues: k.issues },
    );
    for (const node of nodes) {
      budget--;
      const se = node - BigInt(L.runNode);
      const myQ = L.myQ === undefined ? 0n : read(se + BigInt(L.myQ));
      if (myQ === undefined) {
        k.issues.add(WALKER, 'unmapped', `sched_entity ${hex(se)} is not readable`);
        continue;
      }
      // A group entity stands for a task group's own run queue: its tasks are queued there.
      if (myQ !== 0n) walkCfs(myQ, cpu, depth + 1, seenRqs);
      else add(se - BigInt(L.taskSe), cpu, 'cfs');
      if (budget <= 0) break;
    }
  };

  const walkRt = (queues: bigint, cpu: number, depth: number) => {
    const R = L.rt!;
    if (depth > MAX_GROUP_DEPTH) {
      k.issues.add(WALKER, 'bound', `rt_rq at ${hex(queues)} nests too deep`);
      return;
    }
    const heads = k.space.tryRead(queues, R.count * R.stride);
    if (!heads) {
      k.issues.add(WALKER, 'unmapped', `RT queues at ${hex(queues)} are not readable`);
      return;
    }
    for (let i = 0; i < R.count; i++) {
      const head = queues + BigInt(i * R.stride);
      if (heads.readBigUInt64LE(i * R.stride) === head) continue; // empty priority level
      for (const node of listHeadEntries(read, head, {
        walker: WALKER,
        max: Math.max(1, budget),
        issues: k.issues,
      })) {
        budget--;
        const rtSe = node - BigInt(R.runList);
        const myQ = R.myQ === undefined ? 0n : read(rtSe + BigInt(R.myQ));
        if (myQ !== undefined && myQ !== 0n) walkRt(myQ + BigInt(R.active), cpu, depth + 1);
        else add(rtSe - BigInt(R.taskRt), cpu, 'rt');
        if (budget <= 0) return;
      }
    }
  };

  for (let cpu = 0; cpu < offsets.length; cpu++) {
    const rq = (base + offsets[cpu]!) & U64_MAX;
    const curr = read(rq + BigInt(L.curr));
    const idle = read(rq + BigInt(L.idle));
    if (curr === undefined || idle === undefined) {
      k.issues.add(WALKER, 'unmapped', `run queue of CPU ${cpu} at ${hex(rq)} is not readable`);
      continue;
    }
    view.cpus++;
    if (idle !== 0n) view.idle.add(idle);
    add(curr, cpu, 'curr');
    walkCfs(rq + BigInt(L.cfs), cpu, 0, new Set());
    if (L.rt && budget > 0) walkRt(rq + BigInt(L.rt.queues), cpu, 0);
    if (L.dl && budget > 0) {
      const D = L.dl;
      for (const node of rbTreeNodes(
        read,
        rq + BigInt(D.root),
        { left: L.rbLeft, right: L.rbRight },
        { walker: WALKER, max: budget, issues: k.issues },
      )) {
        budget--;
        const dlSe = node - BigInt(D.rbNode);
        // 6.8+ queues deadline servers (rq->fair_server) that live inside the rq itself: not tasks.
        if (dlSe >= rq && dlSe < rq + BigInt(L.rqSize)) continue;
        add(dlSe - BigInt(D.taskDl), cpu, 'dl');
      }
    }
    if (budget <= 0) {
      k.issues.add(WALKER, 'bound', `stopped at the bound of ${MAX_RUNQUEUE_ENTITIES} queued entities`);
      break;
    }
  }
  // An idle task found as curr before its CPU's rq->idle was known is not a process either.
  for (const idle of view.idle) view.tasks.delete(idle);
  return view;
}
