// Livewire's lie detector, across the VM boundary: what the guest says about itself through
// qemu-guest-agent — its own `ps`, /proc/modules and /proc/net/{tcp,tcp6,udp,udp6} — against what vigil
// reads from its memory. A rootkit that hooks the kernel (getdents64 for ps, the seq_file show functions
// for /proc/modules and /proc/net) makes the guest's tools lie while the kernel's structures still hold the
// truth: a process on the task list or in the PID table that the guest's ps does not show, a module any of
// vigil's views finds (the module list, /sys/module, mod_tree, carved module memory) that /proc/modules
// omits, a socket in the kernel's TCP/UDP tables that /proc/net omits.
//
// The guest is read while it runs, so each side is read twice around the other: vigil, the guest, and —
// only when something seems missing — the guest again and vigil again from fresh memory. A thing counts
// as hidden only when both of vigil's readings have it (same task_struct, PID and start time; same struct
// module and sysfs node; same struct sock and inode: it existed the whole time) and both of the guest's
// listings lack it. A process forked or a socket opened after a listing, ps itself and the agent's
// helpers, are in one reading only. Exiting tasks and modules not (yet or any more) live are left out. The guest's view is never believed
// blindly: an answer that failed, was cut at its size bound, did not parse, or disagrees with vigil on
// most of what it lists (ps in another PID namespace, an agent in a container) becomes a health note, not
// alerts. Sockets are compared for vigil's initial network namespace only: /proc/net shows the reader's.
//
// The policy needs qemu-guest-agent (the engine skips it, saying so, when the VM has none); the in-kernel
// cross views (task list, PID table, run queues) are the lie-detector policy's and run without it.
import type { Kernel } from '../../os/linux/kernel.js';
import { listNetNamespaces } from '../../os/linux/net/netns.js';
import { socketOwners } from '../../os/linux/net/owners.js';
import { listSockets } from '../../os/linux/net/sockets.js';
import type { NetKernel } from '../../os/linux/net/context.js';
import type { NetId, Socket } from '../../os/linux/net/sock.js';
import { listPidTasks, type Task, type TaskKernel } from '../../os/linux/tasks/index.js';
import type { KernelAccess } from '../../os/linux/modules/access.js';
import type { WalkIssue } from '../../os/linux/walk.js';
import { isVigilError, VigilError } from '../../util/errors.js';
import type { GuestAgent } from '../../vmm/types.js';
import { definePolicy } from '../policy.js';
import type { Finding } from '../types.js';
import {
  agentDown,
  askModules,
  askNet,
  askPs,
  type Answer,
  type AskOptions,
  type AskState,
} from './guest-ask.js';
import {
  entryLocal,
  PROC_NET_TABLES,
  type ProcModule,
  type ProcNetListing,
  type ProcNetTable,
  type PsListing,
} from './guest-views.js';
import { crossViewModules, type ModuleSighting, type ModuleView } from './hidden-module.js';
import { isExiting } from './lie-detector.js';
import {
  collecting,
  hex,
  noteIssues,
  persistentIssues,
  sweepTasks,
  vmState,
  type ProcessKernel,
  type SweepKernel,
} from './process-facts.js';

const POLICY_ID = 'lie-detector-guest';
const TECHNIQUE = 'T1014';
export const GUEST_AREAS = ['processes', 'modules', 'sockets'] as const;
export type GuestArea = (typeof GUEST_AREAS)[number];
const DEFAULT_TIMEOUT_MS = 10_000;

// ------------------------------------------------------------------------------------ vigil's views

/** A process (thread group leader) vigil sees, and where. */
export interface ProcessSighting {
  task: Task;
  taskList: boolean;
  pidTable: boolean;
}

/** Processes from the task list and the PID table; idle and exiting tasks left out. */
export function readProcesses(k: TaskKernel, taskList: readonly Task[]): ProcessSighting[] {
  const out = new Map<bigint, ProcessSighting>();
  for (const t of taskList) {
    if (t.pid === t.tgid) out.set(t.address, { task: t, taskList: true, pidTable: false });
  }
  for (const { task } of listPidTasks(k).tasks) {
    if (task.pid !== task.tgid) continue;
    const s = out.get(task.address);
    if (s) s.pidTable = true;
    else out.set(task.address, { task, taskList: false, pidTable: true });
  }
  return [...out.values()].filter((s) => s.task.pid !== 0 && !isExiting(s.task));
}

/** A module vigil sees, with what tells one load of it from the next at the same address. */
export interface VigilModule extends ModuleSighting {
  /** kernfs node id of its /sys/module directory (ids are not reused soon); undefined without one. */
  sysfsId?: bigint;
}

/** The id of the module's sysfs directory node (module->mkobj.kobj.sd->id), when it has one. */
function sysfsId(k: KernelAccess, module: bigint): bigint | undefined {
  if (k.types.find('kernfs_node') === undefined) return undefined;
  try {
    const sd = k.view('module', module).ptr('mkobj.kobj.sd');
    return sd === 0n ? undefined : k.view('kernfs_node', sd).u64('id');
  } catch (e) {
    if (isVigilError(e)) return undefined;
    throw e;
  }
}

/**
 * Live modules any of vigil's views finds. A module loading or unloading (COMING, GOING, UNFORMED) is
 * left out: a rootkit stays loaded, and a module loaded and unloaded in a loop comes back at the same
 * address, which only its new sysfs node tells apart.
 */
export function readModules(k: KernelAccess): VigilModule[] {
  return crossViewModules(k).sightings.flatMap((s) => {
    if (s.name === '' || s.module?.state !== 'MODULE_STATE_LIVE') return [];
    const id = sysfsId(k, s.address);
    return [id !== undefined ? { ...s, sysfsId: id } : s];
  });
}

const COMPARED_NETIDS: readonly NetId[] = PROC_NET_TABLES;

/** Full TCP/UDP sockets of the initial network namespace (the one the agent's /proc/net shows). */
export function readSockets(k: NetKernel): Socket[] {
  const namespaces = listNetNamespaces(k);
  const init = k.symbols.address('init_net');
  const initNs = namespaces.find((n) => n.address === init) ?? namespaces[0];
  if (!initNs) return [];
  return listSockets(k, { namespaces }).filter(
    (s) => s.kind === 'full' && s.netns === initNs.inum && COMPARED_NETIDS.includes(s.netid),
  );
}

/** One reading of vigil's side; absent areas are not compared. */
export interface VigilReading {
  processes?: ProcessSighting[];
  modules?: VigilModule[];
  sockets?: Socket[];
  issues: readonly WalkIssue[];
}

// ----------------------------------------------------------------------------------- the guest's views

interface GuestReading {
  ps?: Answer<PsListing>;
  modules?: Answer<ProcModule[]>;
  net: Map<ProcNetTable, Answer<ProcNetListing>>;
}

async function askGuest(
  agent: GuestAgent,
  areas: ReadonlySet<GuestArea>,
  state: AskState,
  o: AskOptions,
): Promise<GuestReading> {
  const g: GuestReading = { net: new Map() };
  if (areas.has('processes')) {
    g.ps = await askPs(agent, state, o);
    if (agentDown(g.ps)) return g;
  }
  if (areas.has('modules')) {
    g.modules = await askModules(agent, o);
    if (agentDown(g.modules)) return g;
  }
  if (areas.has('sockets')) {
    for (const t of PROC_NET_TABLES) {
      const a = await askNet(agent, t, o);
      g.net.set(t, a);
      if (agentDown(a)) return g;
    }
  }
  return g;
}

// ------------------------------------------------------------------------------------- comparison

const processId = (s: ProcessSighting): string =>
  `${hex(s.task.address)}:${s.task.pid}:${s.task.startTimeNs ?? '?'}`;
const moduleId = (s: VigilModule): string => `${s.name}@${hex(s.address)}#${s.sysfsId ?? '-'}`;
const socketId = (s: Socket): string => `${s.netid}:${hex(s.address)}:${s.inode}`;
const protocolOf = (t: NetId): 'tcp' | 'udp' => (t.startsWith('tcp') ? 'tcp' : 'udp');
/** How an inode-less socket (orphaned TCP) is recognised in /proc/net: its two endpoints. */
const endpoints = (proto: string, local: string, remote: string): string => `${proto} ${local} ${remote}`;

/** What the guest lists, in the form each area is compared by. */
interface GuestIndex {
  pids?: ReadonlySet<number>;
  moduleNames?: ReadonlySet<string>;
  moduleBases?: ReadonlySet<bigint>;
  /** Per protocol: the inodes and endpoint pairs of the tables that answered; tables that did not, absent. */
  sockets: Map<NetId, { inodes: Set<number>; pairs: Set<string> }>;
}

function indexGuest(g: GuestReading): GuestIndex {
  const out: GuestIndex = { sockets: new Map() };
  if (g.ps?.ok) out.pids = new Set(g.ps.value.pids.keys());
  if (g.modules?.ok) {
    out.moduleNames = new Set(g.modules.value.map((m) => m.name));
    out.moduleBases = new Set(g.modules.value.flatMap((m) => (m.address !== undefined ? [m.address] : [])));
  }
  // v4 and v6 tables of a protocol are matched together: what counts is that the guest lists the socket.
  const byProto = new Map<'tcp' | 'udp', { inodes: Set<number>; pairs: Set<string> }>();
  for (const [table, a] of g.net) {
    if (!a.ok) continue;
    const p = protocolOf(table);
    let idx = byProto.get(p);
    if (!idx) byProto.set(p, (idx = { inodes: new Set(), pairs: new Set() }));
    for (const e of a.value.entries) {
      if (e.inode !== 0) idx.inodes.add(e.inode);
      else idx.pairs.add(endpoints(p, entryLocal(e), `${e.remoteAddress}:${e.remotePort}`));
    }
  }
  for (const [table, a] of g.net) {
    if (a.ok) out.sockets.set(table, byProto.get(protocolOf(table))!);
  }
  return out;
}

const remoteKey = (s: Socket): string => `${s.remoteAddress ?? '?'}:${s.remotePort ?? 0}`;

function socketListed(s: Socket, idx: { inodes: Set<number>; pairs: Set<string> }): boolean {
  if (s.inode !== 0) return idx.inodes.has(s.inode);
  return idx.pairs.has(endpoints(protocolOf(s.netid), s.local, remoteKey(s)));
}

/** What vigil has that the guest's listing lacks (areas the guest answered only). */
interface Missing {
  processes: ProcessSighting[];
  modules: VigilModule[];
  sockets: Socket[];
}

function missing(v: VigilReading, g: GuestReading): Missing {
  const idx = indexGuest(g);
  const pids = idx.pids;
  const names = idx.moduleNames;
  const bases = idx.moduleBases;
  return {
    processes: pids ? (v.processes ?? []).filter((p) => !pids.has(p.task.pid)) : [],
    modules:
      names && bases
        ? (v.modules ?? []).filter(
            (m) => !names.has(m.name) && !(m.module !== undefined && bases.has(m.module.base)),
          )
        : [],
    sockets: (v.sockets ?? []).filter((s) => {
      const t = idx.sockets.get(s.netid);
      return t !== undefined && !socketListed(s, t);
    }),
  };
}

/** Items of `first` that `second` has too (same identity), taken from `second`. */
function inBoth<T>(first: readonly T[], second: readonly T[], id: (x: T) => string): T[] {
  const again = new Map(second.map((x) => [id(x), x]));
  return first.flatMap((x) => {
    const y = again.get(id(x));
    return y ? [y] : [];
  });
}

/**
 * A guest listing that lacks most of what vigil sees is not a rootkit hiding things one by one but a view
 * of something else (another namespace) or a broken listing: at most half, beyond a few, is believable.
 */
const plausible = (hidden: number, seen: number): boolean => hidden <= 3 || hidden * 2 <= seen;

// --------------------------------------------------------------------------------------- findings

function processFinding(s: ProcessSighting, source: string): Finding {
  const t = s.task;
  return {
    key: `guest-ps:pid=${t.pid}:start=${t.startTimeNs ?? '?'}`,
    severity: 'high',
    technique: TECHNIQUE,
    summary: `process ${t.pid} (${t.comm}) is hidden from the guest's own ps`,
    evidence: {
      pid: t.pid,
      comm: t.comm,
      ppid: t.ppid,
      uid: t.cred?.uid ?? null,
      state: t.state,
      kthread: t.kthread,
      task: hex(t.address),
      startTimeNs: t.startTimeNs,
      views: { taskList: s.taskList, pidTable: s.pidTable, guestPs: false },
      guestCommand: source,
    },
  };
}

const VIEW_NAMES: Record<ModuleView, string> = {
  list: 'the module list',
  sysfs: '/sys/module',
  modTree: 'mod_tree',
  memory: 'module memory',
};

function moduleFinding(s: ModuleSighting): Finding {
  const m = s.module;
  const seen = (Object.keys(VIEW_NAMES) as ModuleView[]).filter((v) => s.views[v]);
  return {
    key: `guest-modules:${s.name}:${hex(s.address)}`,
    severity: 'high',
    technique: TECHNIQUE,
    summary:
      `module ${s.name}${m ? ` at ${hex(m.base)}` : ''} is missing from the guest's /proc/modules ` +
      `(vigil sees it in ${seen.map((v) => VIEW_NAMES[v]).join(', ')})`,
    evidence: {
      module: s.name,
      address: hex(s.address),
      ...(m ? { base: hex(m.base), size: hex(m.size), state: m.state, taints: m.taintFlags } : {}),
      views: { ...s.views, guestProcModules: false },
    },
  };
}

function socketFinding(s: Socket): Finding {
  const owners = s.owners ?? [];
  const held =
    owners.length > 0 ? `, held by ${owners.map((o) => `pid ${o.pid} (${o.comm})`).join(', ')}` : '';
  return {
    key: `guest-net:${s.netid}:${s.local}:inode=${s.inode}`,
    severity: 'high',
    technique: TECHNIQUE,
    summary: `${s.netid} socket ${s.local} (${s.state}, inode ${s.inode}${held}) is missing from the guest's /proc/net/${s.netid}`,
    evidence: {
      protocol: s.netid,
      local: s.local,
      remote: s.remote,
      localPort: s.localPort ?? null,
      state: s.state,
      inode: s.inode,
      uid: s.uid ?? null,
      netns: s.netns ?? null,
      sock: hex(s.address),
      owners,
      views: { kernelTables: true, guestProcNet: false },
    },
  };
}

// -------------------------------------------------------------------------------------- the check

export interface GuestCheck {
  agent: GuestAgent;
  /** Read vigil's side (areas not wanted may be left out). */
  readVigil(): VigilReading;
  /** Make the next readVigil read fresh guest memory (a new cache epoch). */
  refresh(): void;
  /** Fill in which processes hold the sockets (for evidence; may be left out). */
  owners?(sockets: Socket[]): void;
  note(kind: string, detail: string): void;
  state: AskState;
  areas?: ReadonlySet<GuestArea>;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * Note the answers that failed: the views they were for are not compared this time. A table vigil has
 * nothing in (no /proc/net/tcp6 on a kernel booted without IPv6, no /proc/modules without modules) left
 * nothing uncompared; an agent that stopped answering is noted whatever it was asked.
 */
function noteAnswers(env: GuestCheck, g: GuestReading, v: VigilReading): void {
  const note = (a: Answer<unknown> | undefined, relevant: boolean): void => {
    if (a && !a.ok && (relevant || agentDown(a))) env.note(a.kind, a.detail);
  };
  note(g.ps, true);
  note(g.modules, (v.modules ?? []).length > 0);
  for (const [table, a] of g.net)
    note(
      a,
      (v.sockets ?? []).some((s) => s.netid === table),
    );
}

/**
 * vigil, the guest, and — when the guest seems to lack something — the guest again and vigil again: what
 * both of vigil's readings have and both of the guest's listings lack is reported.
 */
export async function guestLies(env: GuestCheck): Promise<Finding[]> {
  const areas = env.areas ?? new Set(GUEST_AREAS);
  const o: AskOptions = {
    timeoutMs: env.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    ...(env.signal ? { signal: env.signal } : {}),
  };
  const v1 = env.readVigil();
  const g1 = await askGuest(env.agent, areas, env.state, o);
  noteAnswers(env, g1, v1);
  const first = missing(v1, g1);
  const suspects = first.processes.length + first.modules.length + first.sockets.length;
  if (suspects === 0) {
    if (v1.issues.length === 0) return [];
    env.refresh();
    noteIssuesOf(env, v1.issues, env.readVigil().issues);
    return [];
  }
  // Ask again what looked missing: a listing read in pieces can skip an entry the table moved under it.
  const again = new Set<GuestArea>([
    ...(first.processes.length > 0 ? (['processes'] as const) : []),
    ...(first.modules.length > 0 ? (['modules'] as const) : []),
    ...(first.sockets.length > 0 ? (['sockets'] as const) : []),
  ]);
  const g2 = await askGuest(env.agent, again, env.state, o);
  noteAnswers(env, g2, v1);
  env.refresh();
  const v2 = env.readVigil();
  noteIssuesOf(env, v1.issues, v2.issues);
  const second = missing(v2, g2);
  const hidden: Missing = {
    processes: inBoth(first.processes, second.processes, processId),
    modules: inBoth(first.modules, second.modules, moduleId),
    sockets: inBoth(first.sockets, second.sockets, socketId),
  };
  const findings: Finding[] = [];
  const stable = <T>(a: readonly T[] | undefined, b: readonly T[] | undefined, id: (x: T) => string) =>
    inBoth(a ?? [], b ?? [], id).length;
  const believe = (what: string, n: number, seen: number): boolean => {
    if (plausible(n, seen)) return true;
    env.note(
      'malformed',
      `${what} lacks ${n} of the ${seen} vigil sees: not the guest's own view (another namespace?) or a broken listing; not compared`,
    );
    return false;
  };
  if (hidden.processes.length > 0 && g1.ps?.ok) {
    const seen = stable(v1.processes, v2.processes, processId);
    if (believe(`the guest's ps (${g1.ps.source})`, hidden.processes.length, seen)) {
      const source = g1.ps.source;
      findings.push(...hidden.processes.map((p) => processFinding(p, source)));
    }
  }
  if (hidden.modules.length > 0) {
    const seen = stable(v1.modules, v2.modules, moduleId);
    if (believe("the guest's /proc/modules", hidden.modules.length, seen)) {
      findings.push(...hidden.modules.map(moduleFinding));
    }
  }
  if (hidden.sockets.length > 0) {
    const seen = stable(v1.sockets, v2.sockets, socketId);
    if (believe("the guest's /proc/net", hidden.sockets.length, seen)) {
      try {
        env.owners?.(hidden.sockets);
      } catch (e) {
        env.note('malformed', `socket owners: ${e instanceof Error ? e.message : String(e)}`);
      }
      findings.push(...hidden.sockets.map(socketFinding));
    }
  }
  return findings;
}

/** Walk issues both of vigil's readings hit (a walk racing the guest stumbles somewhere new each time). */
function noteIssuesOf(env: GuestCheck, first: readonly WalkIssue[], second: readonly WalkIssue[]): void {
  noteIssues(env, persistentIssues(first, second));
}

// ------------------------------------------------------------------------------------------ policy

export type GuestLieKernel = ProcessKernel & SweepKernel & KernelAccess & NetKernel;

/** vigil's side from the real kernel, the walks' issues collected per reading. */
export function kernelReader(
  k: GuestLieKernel,
  sweep: number,
  areas: ReadonlySet<GuestArea>,
): () => VigilReading {
  return () => {
    const r = collecting(
      k,
      () => ({
        ...(areas.has('processes') ? { processes: readProcesses(k, sweepTasks(k, sweep)) } : {}),
        ...(areas.has('modules') ? { modules: readModules(k) } : {}),
        ...(areas.has('sockets') ? { sockets: readSockets(k) } : {}),
      }),
      false,
    );
    return { ...r.value, issues: r.issues };
  };
}

// A type, not an interface: the engine keeps options as a plain record.
export type GuestLieOptions = {
  /** Which of the guest's views to compare (default all three). */
  views: GuestArea[];
  /** Time the agent gets per question, in ms. */
  timeoutMs: number;
};

const MAX_TIMEOUT_MS = 120_000;

/** Config options, checked when the config is loaded (not at the first sweep). */
export function parseGuestLieOptions(raw: Readonly<Record<string, unknown>>): GuestLieOptions {
  const known = Object.keys(raw).filter((k) => k !== 'views' && k !== 'timeoutMs');
  if (known.length > 0) {
    throw new VigilError('policy', 'usage', `unknown option "${known[0]}" (known: views, timeoutMs)`);
  }
  const views = raw.views ?? [...GUEST_AREAS];
  if (!Array.isArray(views) || !views.every((v) => (GUEST_AREAS as readonly unknown[]).includes(v))) {
    throw new VigilError('policy', 'usage', `option "views" must be a list of ${GUEST_AREAS.join(', ')}`);
  }
  const timeoutMs = raw.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0 && timeoutMs <= MAX_TIMEOUT_MS)) {
    throw new VigilError(
      'policy',
      'usage',
      `option "timeoutMs" must be a number of ms up to ${MAX_TIMEOUT_MS}`,
    );
  }
  return { views: [...new Set(views as GuestArea[])], timeoutMs };
}

export const lieDetectorGuestPolicy = definePolicy<Kernel>({
  id: POLICY_ID,
  title: 'Hidden from the guest’s own tools (guest agent)',
  description:
    'Asks the guest through qemu-guest-agent — its ps, /proc/modules and /proc/net/{tcp,udp}[6] — and ' +
    'compares with vigil’s own views of memory: a process, module or socket the guest’s tools omit is ' +
    'hidden by a rootkit hooking the kernel. Options: `views` (processes, modules, sockets), `timeoutMs`.',
  technique: TECHNIQUE,
  severity: 'high',
  requires: ['kernel', 'guest-agent'],
  // Each run starts a ps in the guest and reads six files through the agent: every 30 s, not every sweep.
  defaultIntervalMs: 30_000,
  parseOptions: parseGuestLieOptions,
  async poll(ctx) {
    const agent = ctx.machine.agent;
    if (!agent) return [];
    const k = ctx.requireKernel();
    const o = parseGuestLieOptions(ctx.options);
    const areas = new Set(o.views);
    return guestLies({
      agent,
      readVigil: kernelReader(k, ctx.sweep, areas),
      refresh: () => void k.epoch.bump(),
      owners: (sockets) => void collecting(k, () => socketOwners(k, sockets), false),
      note: (kind, detail) => ctx.note(kind, detail),
      state: vmState<AskState>(ctx.machine, POLICY_ID, () => ({ psForm: 0 })),
      areas,
      timeoutMs: o.timeoutMs,
      signal: ctx.signal,
    });
  },
});
