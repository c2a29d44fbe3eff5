// Privilege escalation (T1068 exploitation, T1548 abuse of elevation control): root credentials that no
// exec of a set-uid binary explains. The kernel hands out uid 0 to an unprivileged process in two legitimate
// ways only: exec of a set-uid-root file, and setuid() by a process that still holds a root id (saved uid)
// or CAP_SETUID. A kernel exploit or a rootkit's commit_creds(prepare_kernel_cred(NULL)) skips both.
//   static rule (dumps too): a task with uid or euid 0 (objective or subjective credentials) whose parent
//     holds no root id at all (uid, euid, suid, fsuid all non-zero) and is not a child subreaper (an orphan
//     adopted by a user's `systemd --user` keeps its root), and whose executable is not set-uid root
//     (i_mode S_ISUID with i_uid 0);
//   cross-sweep rule (live): the same task (PID + start time, same exe file) seen with no root id before
//     and root now.
// Kernel threads are excluded. Not seen: executables given CAP_SETUID by file capabilities (an xattr on
// disk): allow them with option `allow` (executable paths, or names matched against comm and exe).
import type { Kernel } from '../../os/linux/kernel.js';
import type { NetKernel } from '../../os/linux/net/context.js';
import { readTask, type Credentials, type Task } from '../../os/linux/tasks/index.js';
import { isVigilError } from '../../util/errors.js';
import { definePolicy, stringListOption } from '../policy.js';
import type { Finding } from '../types.js';
import {
  baseName,
  collectFresh,
  exeFacts,
  exeFileOf,
  hex,
  isLive,
  sweepTasks,
  vmState,
  type ExeFacts,
  type ProcessKernel,
  type SweepKernel,
} from './process-facts.js';

export type PrivKernel = NetKernel & ProcessKernel & SweepKernel;

const S_ISUID = 0o4000;

/** Any id that makes a task root (objective or subjective credentials). */
export function isRootNow(t: Task): boolean {
  const r = (c: Credentials | null | undefined) => !!c && (c.uid === 0 || c.euid === 0);
  return r(t.cred) || r(t.subjectiveCred);
}

/** No id at all that is root: such a task cannot setuid(0) by itself. */
export function holdsNoRootId(c: Credentials | null | undefined): boolean {
  return !!c && c.uid !== 0 && c.euid !== 0 && c.suid !== 0 && c.fsuid !== 0;
}

export const isSetuidRoot = (exe: ExeFacts | null): boolean =>
  !!exe && exe.imode !== undefined && (exe.imode & S_ISUID) !== 0 && exe.iuid === 0;

export interface ParentFacts {
  task: Task;
  subreaper: boolean;
}

export interface RootCandidate {
  task: Task;
  parent: ParentFacts | null;
  exe: ExeFacts | null;
  /** Cross-sweep: this task's credentials when last seen with no root id. */
  before?: Credentials;
  rule: 'parent' | 'transition';
}

/** What the policy remembers of a VM between sweeps: each task's last credentials. */
export interface CredMemory {
  /** "pid:start" → exe file and whether the task held no root id. */
  tasks: Map<string, { exeFile: bigint; noRoot: boolean; cred: Credentials }>;
}

const taskId = (t: Task) => `${t.pid}:${t.startTimeNs ?? '?'}`;

/** What the rules need to know about a task beyond its task_struct (read lazily: most tasks need none). */
export interface TaskLookup {
  parent(t: Task): Task | null;
  /** The task is a child subreaper (PR_SET_CHILD_SUBREAPER): orphans below it are re-parented to it. */
  subreaper(t: Task): boolean;
  exe(t: Task): ExeFacts | null;
  /** mm->exe_file: which file the task runs (an exec changes it). */
  exeFile(t: Task): bigint;
}

/**
 * The rules over a set of tasks. `memory` (live guests) is read for the cross-sweep rule and refilled
 * with this sweep's credentials.
 */
export function findRootCandidates(
  tasks: readonly Task[],
  look: TaskLookup,
  memory?: CredMemory,
): RootCandidate[] {
  const out: RootCandidate[] = [];
  const seen = new Map<string, { exeFile: bigint; noRoot: boolean; cred: Credentials }>();
  for (const t of tasks) {
    if (t.kthread || !t.cred) continue;
    const root = isRootNow(t);
    if (memory) {
      const exeFile = look.exeFile(t);
      const prev = memory.tasks.get(taskId(t));
      const noRoot = holdsNoRootId(t.cred) && holdsNoRootId(t.subjectiveCred ?? t.cred);
      seen.set(taskId(t), { exeFile, noRoot, cred: t.cred });
      if (root && prev?.noRoot && prev.exeFile === exeFile && exeFile !== 0n) {
        const p = look.parent(t);
        out.push({
          task: t,
          parent: p ? { task: p, subreaper: look.subreaper(p) } : null,
          exe: look.exe(t),
          before: prev.cred,
          rule: 'transition',
        });
        continue;
      }
    }
    if (!root) continue;
    const p = look.parent(t);
    if (!p || p.kthread || !holdsNoRootId(p.cred)) continue;
    const subreaper = look.subreaper(p);
    if (subreaper) continue;
    const exe = look.exe(t);
    if (isSetuidRoot(exe)) continue;
    out.push({ task: t, parent: { task: p, subreaper }, exe, rule: 'parent' });
  }
  if (memory) {
    memory.tasks.clear();
    for (const [id, v] of seen) memory.tasks.set(id, v);
  }
  return out;
}

/** The rules over the guest's task list. */
export function collectRootCandidates(k: PrivKernel, sweep: number, memory?: CredMemory): RootCandidate[] {
  const tasks = sweepTasks(k, sweep);
  const byAddress = new Map(tasks.map((t) => [t.address, t]));
  const look: TaskLookup = {
    parent: (t) => byAddress.get(t.realParent) ?? (t.realParent ? (readTask(k, t.realParent) ?? null) : null),
    subreaper(p) {
      try {
        // Orphans go to the nearest ancestor that is a subreaper (has_child_subreaper only says one exists).
        return k.view('signal_struct', p.signal).bool('is_child_subreaper');
      } catch (e) {
        if (!isVigilError(e)) throw e;
        return false;
      }
    },
    exe: (t) => exeFacts(k, t),
    exeFile: (t) => exeFileOf(k, t) ?? 0n,
  };
  return findRootCandidates(tasks, look, memory);
}

/** An allow-list entry covers a task by exe path, or by a name both its comm and exe carry. */
export function allowedRoot(c: RootCandidate, allow: readonly string[]): boolean {
  const exe = c.exe?.path;
  if (!exe || c.exe!.deleted) return false;
  return allow.some((a) => (a.startsWith('/') ? exe === a : c.task.comm === a && baseName(exe) === a));
}

const creds = (c: Credentials | null | undefined) =>
  c
    ? {
        uid: c.uid,
        euid: c.euid,
        suid: c.suid,
        fsuid: c.fsuid,
        gid: c.gid,
        egid: c.egid,
        ...(c.caps.effective !== undefined ? { capEffective: hex(c.caps.effective) } : {}),
      }
    : null;

export function privilegeFindings(cands: readonly RootCandidate[], allow: readonly string[]): Finding[] {
  // One finding per process and rule: its threads share the story.
  const groups = new Map<string, RootCandidate[]>();
  for (const c of cands) {
    if (allowedRoot(c, allow)) continue;
    const key = `${c.rule}:${c.task.tgid}`;
    groups.set(key, [...(groups.get(key) ?? []), c]);
  }
  const out: Finding[] = [];
  for (const group of groups.values()) {
    const c = group.find((x) => x.task.pid === x.task.tgid) ?? group[0]!;
    const t = c.task;
    const p = c.parent?.task;
    const exe = c.exe;
    const exeText = exe
      ? `${exe.path}${exe.imode !== undefined ? ` mode ${(exe.imode & 0o7777).toString(8)}` : ''}`
      : 'no executable';
    const summary =
      c.rule === 'transition'
        ? `process ${t.tgid} (${t.comm}) went from uid ${c.before?.uid}/euid ${c.before?.euid} to root without an exec (${exeText})`
        : `process ${t.tgid} (${t.comm}) runs as root under non-root parent ${p?.tgid} (${p?.comm}, uid ${p?.cred?.uid}) ` +
          `and its executable is not set-uid root (${exeText})`;
    out.push({
      key: `${c.rule === 'transition' ? 'became-root' : 'root-child'}:pid=${t.tgid}:start=${t.startTimeNs ?? '?'}`,
      severity: c.rule === 'transition' ? 'critical' : 'high',
      summary,
      evidence: {
        pid: t.tgid,
        comm: t.comm,
        ppid: t.ppid,
        task: hex(t.address),
        rule: c.rule,
        cred: creds(t.cred),
        ...(t.subjectiveCred ? { subjectiveCred: creds(t.subjectiveCred) } : {}),
        ...(c.before ? { before: creds(c.before) } : {}),
        parent: p ? { pid: p.tgid, comm: p.comm, cred: creds(p.cred) } : null,
        exe: exe?.path ?? null,
        exeMode: exe?.imode !== undefined ? (exe.imode & 0o7777).toString(8) : null,
        exeUid: exe?.iuid ?? null,
        ...(group.length > 1 ? { threads: group.map((g) => g.task.pid) } : {}),
      },
    });
  }
  return out;
}

export const privilegeEscalationPolicy = definePolicy<Kernel>({
  id: 'privilege-escalation',
  title: 'Root without set-uid (privilege escalation)',
  description:
    'A root process whose parent holds no root id and whose executable is not set-uid root, or a process ' +
    'seen unprivileged that is root now without an exec: credentials a kernel exploit or rootkit handed out.',
  technique: 'T1068',
  severity: 'high',
  requires: ['kernel'],
  poll(ctx) {
    const k = ctx.requireKernel();
    const allow = stringListOption(ctx, 'allow', []);
    const memory = isLive(k)
      ? vmState<CredMemory>(ctx.machine, 'privilege-escalation', () => ({ tasks: new Map() }))
      : undefined;
    // The memory is updated by the pass that counts: a re-read must not see its own first pass as "before".
    const candidates = collectFresh(ctx, k, () => {
      const scratch: CredMemory | undefined = memory ? { tasks: new Map(memory.tasks) } : undefined;
      const found = collectRootCandidates(k, ctx.sweep, scratch);
      return { found, scratch };
    });
    if (memory && candidates.scratch) memory.tasks = candidates.scratch.tasks;
    return privilegeFindings(candidates.found, allow);
  },
});
