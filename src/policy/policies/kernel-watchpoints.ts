// Event-driven memory-access: write watchpoints through a GDB stub on the kernel entries rootkits hook first,
// each hit a VmEvent (with who wrote, read while the VM is stopped there) that becomes a finding at once.
import type { Kernel } from '../../os/linux/kernel.js';
import { hex, type KernelAccess } from '../../os/linux/modules/access.js';
import { CodeAttributor, decodeGate, describeCode, GATE_SIZE } from '../../os/linux/tables/index.js';
import { readTask } from '../../os/linux/tasks/index.js';
import { isVigilError } from '../../util/errors.js';
import type { StopReply } from '../../vmm/gdb/stop-reply.js';
import { BoundedQueue } from '../../vmm/qmp/bounded-queue.js';
import type { DebugHandle, VmEvent } from '../../vmm/types.js';
import type { BaselineAccess } from '../baseline.js';
import type { Finding } from '../types.js';
import { idtBaseline, safeBig, tableBaseline } from './memory-access-baseline.js';

const TECHNIQUE = 'T1014';

/** VmEvent name for a GDB-stub write-watchpoint hit on one of the watched kernel entries. */
export const WATCH_EVENT = 'kernel-watchpoint';

export interface WatchTarget {
  /** "sys_call_table[62]" or "idt[0x80]". */
  label: string;
  va: bigint;
  len: number;
  table?: string;
  nr?: number;
  vector?: number;
}

/** x86-64 numbers of the system calls rootkits hook first: kill (magic signals), getdents/getdents64. */
export const WATCHED_SYSCALLS: readonly { nr: number; name: string }[] = [
  { nr: 62, name: 'kill' },
  { nr: 217, name: 'getdents64' },
  { nr: 78, name: 'getdents' },
];
export const WATCHED_VECTOR = 0x80;

/**
 * The entries worth a watchpoint: sys_call_table[kill/getdents64/getdents] and the first 8 bytes of IDT
 * gate 0x80 (they hold the handler's low 16 bits, type and DPL). Four watchpoints of 8 bytes each: what
 * x86 debug registers allow under KVM (DR0-3); QEMU's TCG has no such limit but this keeps one list.
 */
export function criticalWatchTargets(k: KernelAccess): WatchTarget[] {
  const out: WatchTarget[] = [];
  const table = k.symbols.address('sys_call_table');
  if (table !== undefined) {
    for (const s of WATCHED_SYSCALLS) {
      out.push({
        label: `sys_call_table[${s.nr}] (${s.name})`,
        va: table + BigInt(s.nr * 8),
        len: 8,
        table: 'sys_call_table',
        nr: s.nr,
      });
    }
  }
  const idt = k.symbols.address('idt_table');
  if (idt !== undefined) {
    out.push({
      label: `idt[${hex(BigInt(WATCHED_VECTOR))}]`,
      va: idt + BigInt(WATCHED_VECTOR * GATE_SIZE),
      len: 8,
      vector: WATCHED_VECTOR,
    });
  }
  return out;
}

/** What armWatchpoints needs of a GDB client (GdbClient fits). */
export interface WatchpointClient {
  watch(va: bigint, len: number, kind: 'w'): Promise<DebugHandle>;
  continue(): Promise<void>;
  onStop(listener: (s: StopReply) => void): () => void;
  /** Run `fn` with the target stopped (the stub takes no commands while it runs), resuming afterwards. */
  whileStopped<T>(fn: () => Promise<T>): Promise<T>;
  readonly running: boolean;
}

export interface WatchpointArm {
  armed: WatchTarget[];
  failed: { target: WatchTarget; reason: string }[];
  /** One VmEvent per watchpoint hit on an armed target (the VM has been continued, unless held). */
  events: AsyncIterable<VmEvent>;
  /** Remove the watchpoints and end `events`. */
  disarm(): Promise<void>;
}

export interface ArmOptions {
  now?: () => number;
  queueSize?: number;
  /**
   * Evidence gathered at a hit while the vCPUs are still stopped there (the writer's registers, the value
   * just written), merged into the event's data. Runs inside `client.whileStopped`. A failure is recorded
   * in the event (`inspectError`) rather than losing the hit.
   */
  inspect?(stop: StopReply, target: WatchTarget): Promise<Record<string, unknown>>;
  /** True: leave the VM stopped at this hit (a pause response will follow); whoever holds it continues it. */
  hold?(ev: VmEvent): boolean;
  /** Continue a stopped target once the watchpoints are in (default true). */
  resume?: boolean;
}

/** The VmEvent for a stop reply that is a write-watchpoint hit on one of `targets`, else undefined. */
export function watchpointEvent(
  stop: StopReply,
  targets: readonly WatchTarget[],
  now: number,
  extra: Record<string, unknown> = {},
): VmEvent | undefined {
  const w = stop.watch;
  if (!w) return undefined;
  const t = targets.find((x) => w.address >= x.va && w.address < x.va + BigInt(x.len));
  if (!t) return undefined;
  return {
    source: 'gdb',
    name: WATCH_EVENT,
    time: now,
    data: {
      target: t.label,
      va: hex(t.va),
      address: hex(w.address),
      kind: w.kind,
      ...(stop.thread !== undefined ? { thread: stop.thread } : {}),
      ...(t.table !== undefined ? { table: t.table, nr: t.nr } : {}),
      ...(t.vector !== undefined ? { vector: t.vector } : {}),
      ...extra,
    },
  };
}

/**
 * Set write watchpoints on `targets` through a GDB stub and turn hits into VmEvents. Attaching stops a
 * QEMU guest: the VM is continued once the watchpoints are in, and again after every hit of ours (other
 * stops — an interrupt by a reader of registers, a QMP `stop` — are left to whoever caused them). A
 * watchpoint matches virtual addresses: a write through another mapping of the same page (text_poke's
 * temporary alias, which vigilkit uses) does not trigger it; the sweeps still see the change. The stub keeps
 * the watchpoints until it is told otherwise: disarm() or detach (GdbClient.close) before going away, or the
 * next hit leaves the VM stopped with no debugger to continue it.
 */
export async function armWatchpoints(
  client: WatchpointClient,
  targets: readonly WatchTarget[],
  options: ArmOptions = {},
): Promise<WatchpointArm> {
  const now = options.now ?? Date.now;
  const armed: WatchTarget[] = [];
  const handles: DebugHandle[] = [];
  const failed: { target: WatchTarget; reason: string }[] = [];
  const insert = async (): Promise<void> => {
    for (const t of targets) {
      try {
        handles.push(await client.watch(t.va, t.len, 'w'));
        armed.push(t);
      } catch (e) {
        if (!isVigilError(e)) throw e;
        failed.push({ target: t, reason: e.message });
      }
    }
  };
  // The stub takes commands only while the target is stopped (it is, right after attaching).
  if (client.running) await client.whileStopped(insert);
  else await insert();
  const queue = new BoundedQueue<VmEvent>(options.queueSize ?? 64);
  const release = (ev: VmEvent): Promise<void> =>
    options.hold?.(ev) ? Promise.resolve() : client.continue();
  // Hits with an inspection are handled one after the other, so that their events keep their order.
  let hits: Promise<void> = Promise.resolve();
  const inspected = async (stop: StopReply, t: WatchTarget): Promise<void> => {
    let extra: Record<string, unknown>;
    try {
      extra = await client.whileStopped(() => options.inspect!(stop, t));
    } catch (e) {
      extra = { inspectError: e instanceof Error ? e.message : String(e) };
    }
    const ev = watchpointEvent(stop, armed, now(), extra)!;
    queue.push(ev);
    await release(ev);
  };
  const off = client.onStop((stop) => {
    const ev = watchpointEvent(stop, armed, now());
    if (!ev) return;
    if (!options.inspect) {
      queue.push(ev);
      release(ev).catch((e: unknown) => queue.fail(e));
      return;
    }
    const t = armed.find((x) => x.label === ev.data.target)!;
    hits = hits.then(() => inspected(stop, t)).catch((e: unknown) => queue.fail(e));
  });
  if (!client.running && (options.resume ?? true)) await client.continue();
  return {
    armed,
    failed,
    events: queue,
    async disarm() {
      off();
      await hits;
      await client
        .whileStopped(async () => {
          for (const h of handles) await h.remove().catch(() => undefined);
        })
        .catch(() => undefined);
      queue.end();
    },
  };
}

/**
 * Who wrote, from the registers at a watchpoint hit (QEMU stops after the writing instruction: RIP is the
 * next one): the code (kernel symbol or module and offset) and, when the per-CPU `current_task` can be
 * read through GS base, the task. Read while the VM is still stopped at the hit, so that a module's init
 * code (freed once init returns) can still be named.
 */
export function describeWriter(k: Kernel, regs: { rip: bigint; gsBase?: bigint }): Record<string, unknown> {
  const code = describeCode(new CodeAttributor(k), regs.rip);
  const out: Record<string, unknown> = { rip: hex(regs.rip), code: code.evidence, text: code.text };
  // x86-64 per-CPU symbols are offsets into each CPU's area; in kernel mode GS base is this CPU's area.
  const off = k.symbols.address('current_task');
  if (regs.gsBase !== undefined && regs.gsBase !== 0n && off !== undefined && off < 1n << 32n) {
    const ptr = k.readPointer(regs.gsBase + off);
    const task = ptr !== undefined ? readTask(k, ptr) : undefined;
    if (task) out.task = { pid: task.pid, tgid: task.tgid, comm: task.comm, address: hex(task.address) };
  }
  return out;
}
/** The finding for a watchpoint hit: the entry written, its value now (or as written) against the baseline. */
export function watchFindings(ev: VmEvent, k: KernelAccess, b: BaselineAccess): Finding[] {
  const d = ev.data;
  const label = typeof d.target === 'string' ? d.target : 'a watched kernel entry';
  const attr = new CodeAttributor(k);
  const { writer, ...watch } = d;
  const evidence: Record<string, unknown> = { watch };
  let changed: boolean | undefined;
  let now = '';
  let by = '';
  if (typeof writer === 'object' && writer !== null) {
    // Described at the hit, while the VM was stopped there (see describeWriter).
    const w = writer as { text?: unknown; task?: { pid?: unknown; comm?: unknown } };
    evidence.writer = writer;
    const task =
      w.task && typeof w.task.comm === 'string' ? ` by ${w.task.comm} (pid ${String(w.task.pid)})` : '';
    if (typeof w.text === 'string') by = `, written from ${w.text}${task}`;
  }
  // The value read at the hit (little-endian bytes) is what was written; memory may have moved on since.
  const written =
    typeof d.value === 'string' && /^[0-9a-f]{16}$/.test(d.value)
      ? Buffer.from(d.value, 'hex').readBigUInt64LE(0)
      : undefined;
  if (typeof d.table === 'string' && typeof d.nr === 'number') {
    const table = k.symbols.address(d.table);
    const cur = written ?? (table !== undefined ? k.readPointer(table + BigInt(d.nr * 8)) : undefined);
    if (cur !== undefined) {
      const desc = describeCode(attr, cur);
      evidence.now = desc.evidence;
      now = `: now ${desc.text}`;
      const was = safeBig(tableBaseline(b)?.[d.table]?.[d.nr]);
      if (was !== undefined) {
        changed = was !== cur;
        evidence.baseline = describeCode(attr, was).evidence;
      }
    }
  } else if (typeof d.vector === 'number') {
    const idt = k.symbols.address('idt_table');
    const raw =
      idt !== undefined ? k.space.tryRead(idt + BigInt(d.vector * GATE_SIZE), GATE_SIZE) : undefined;
    if (raw) {
      const desc = describeCode(attr, decodeGate(raw).handler);
      evidence.now = desc.evidence;
      now = `: handler now ${desc.text}`;
      const then = idtBaseline(b)?.gates[d.vector];
      if (then !== undefined) changed = then !== raw.toString('hex');
    }
  }
  const cpu = typeof d.thread === 'string' ? ` (vCPU thread ${d.thread})` : '';
  return [
    {
      key: `watch:${label}`,
      severity: changed === false ? 'high' : 'critical',
      technique: TECHNIQUE,
      summary: `write to ${label} caught by a watchpoint${cpu}${by}${now}${changed === false ? ' (same value as the baseline)' : ''}`,
      evidence: { ...evidence, ...(changed !== undefined ? { changed } : {}) },
    },
  ];
}
