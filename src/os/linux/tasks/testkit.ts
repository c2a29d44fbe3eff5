// Test support: a small synthetic kernel for the task walkers — BTF written with BtfWriter (field names as
// the kernel has them, layout of our own choosing: walkers must find everything by name), sparse virtual
// memory, and builders that link tasks, threads, credentials, PIDs and an IDR the way the kernel does, so
// tests can then corrupt exactly one pointer.
import { VigilError } from '../../../util/errors.js';
import { BtfWriter } from '../btf/testkit.js';
import { TypeRegistry } from '../btf/registry.js';
import { WalkIssues } from '../walk.js';
import type { TaskKernel, TryReader } from './access.js';
import { SparseMemory as FakeSpace } from '../sparse-memory.js';
export { SparseMemory as FakeSpace } from '../sparse-memory.js';

export interface FakeKernelOptions {
  /** kernel_cap_t as a u64 `val` (6.3+) instead of `cap[2]` u32 words. */
  capsAsU64?: boolean;
  /** Name of the state field: `__state` (5.14+, default) or `state` (older, a long). */
  stateField?: '__state' | 'state';
  /** Threads linked only through task->thread_group (no signal->thread_head). */
  threadGroupOnly?: boolean;
}

type Member = [name: string, type: number, size: number];

/** Lay members out 8-byte aligned; returns BtfWriter members and the struct size. */
function lay(members: Member[]): { members: [string, number, number][]; size: number } {
  let off = 0;
  const out: [string, number, number][] = [];
  for (const [name, type, size] of members) {
    out.push([name, type, off * 8]);
    off += Math.ceil(size / 8) * 8;
  }
  return { members: out, size: off };
}

function buildTypes(o: FakeKernelOptions): TypeRegistry {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const uint = w.int('unsigned int', 4);
  const ulong = w.int('long unsigned int', 8);
  const long = w.int('long int', 8, { signed: true });
  const char = w.int('char', 1, { signed: true, char: true });
  const u8 = w.int('unsigned char', 1);
  const u64 = w.typedef('u64', ulong);
  const u32 = w.typedef('__u32', uint);
  const pidT = w.typedef('pid_t', int);
  const uidT = w.typedef('uid_t', uint);
  const gidT = w.typedef('gid_t', uint);
  const vp = w.ptr(0);
  const struct = (name: string, members: Member[]) => {
    const l = lay(members);
    return w.struct(name, l.size, l.members);
  };
  const listHead = struct('list_head', [
    ['next', vp, 8],
    ['prev', vp, 8],
  ]);
  const hlistNode = struct('hlist_node', [
    ['next', vp, 8],
    ['pprev', vp, 8],
  ]);
  const hlistHead = struct('hlist_head', [['first', vp, 8]]);
  const hlistBl = w.struct('hlist_bl_node', 16, [
    ['next', vp, 0],
    ['pprev', vp, 64],
  ]);
  const kuid = w.typedef('kuid_t', w.struct('', 4, [['val', uidT, 0]]));
  const kgid = w.typedef('kgid_t', w.struct('', 4, [['val', gidT, 0]]));
  const cap = o.capsAsU64
    ? w.typedef('kernel_cap_t', w.struct('', 8, [['val', u64, 0]]))
    : w.typedef('kernel_cap_t', w.struct('kernel_cap_struct', 8, [['cap', w.array(u32, int, 2), 0]]));
  struct('cred', [
    ['usage', long, 8],
    ['uid', kuid, 4],
    ['gid', kgid, 4],
    ['suid', kuid, 4],
    ['sgid', kgid, 4],
    ['euid', kuid, 4],
    ['egid', kgid, 4],
    ['fsuid', kuid, 4],
    ['fsgid', kgid, 4],
    ['securebits', uint, 4],
    ['cap_inheritable', cap, 8],
    ['cap_permitted', cap, 8],
    ['cap_effective', cap, 8],
    ['cap_bset', cap, 8],
    ['cap_ambient', cap, 8],
  ]);
  struct('signal_struct', [
    ['nr_threads', int, 4],
    ...(o.threadGroupOnly ? [] : ([['thread_head', listHead, 16]] as Member[])),
  ]);
  // Enough of the VFS for d_path: file → path → dentry (qstr name) and mount/vfsmount.
  const path = struct('path', [
    ['mnt', vp, 8],
    ['dentry', vp, 8],
  ]);
  struct('file', [
    ['f_u', vp, 8],
    ['f_path', path, 16],
  ]);
  const qstr = w.struct('qstr', 16, [
    ['hash', uint, 0],
    ['len', uint, 32],
    ['name', vp, 64],
  ]);
  struct('dentry', [
    ['d_flags', uint, 4],
    ['d_hash', hlistBl, 16],
    ['d_parent', vp, 8],
    ['d_name', qstr, 16],
    ['d_inode', vp, 8],
    ['d_op', vp, 8],
    ['d_sb', vp, 8],
    ['d_fsdata', vp, 8],
  ]);
  const vfsmount = struct('vfsmount', [
    ['mnt_root', vp, 8],
    ['mnt_sb', vp, 8],
  ]);
  struct('mount', [
    ['mnt_hash', hlistNode, 16],
    ['mnt_parent', vp, 8],
    ['mnt_mountpoint', vp, 8],
    ['mnt', vfsmount, 16],
  ]);
  struct('mm_struct', [
    ['mmap_base', ulong, 8],
    ['pgd', vp, 8],
    ['arg_start', ulong, 8],
    ['arg_end', ulong, 8],
    ['env_start', ulong, 8],
    ['env_end', ulong, 8],
    ['exe_file', vp, 8],
  ]);
  struct('kthread', [
    ['flags', ulong, 8],
    ['data', vp, 8],
    ['full_name', vp, 8],
  ]);
  struct('worker', [
    ['current_work', vp, 8],
    ['pool', vp, 8],
    ['desc', w.array(char, int, 24), 24],
  ]);
  w.enum('pid_type', 4, [
    ['PIDTYPE_PID', 0],
    ['PIDTYPE_TGID', 1],
    ['PIDTYPE_PGID', 2],
    ['PIDTYPE_SID', 3],
    ['PIDTYPE_MAX', 4],
  ]);
  struct('task_struct', [
    ['thread_info', ulong, 8],
    [o.stateField ?? '__state', o.stateField === 'state' ? long : uint, o.stateField === 'state' ? 8 : 4],
    ['flags', uint, 4],
    ['tasks', listHead, 16],
    ['mm', vp, 8],
    ['exit_state', int, 4],
    ['pid', pidT, 4],
    ['tgid', pidT, 4],
    ['real_parent', vp, 8],
    ['group_leader', vp, 8],
    ['pid_links', w.array(hlistNode, int, 4), 64],
    ['thread_group', listHead, 16],
    ...(o.threadGroupOnly ? [] : ([['thread_node', listHead, 16]] as Member[])),
    ['worker_private', vp, 8],
    ['start_time', u64, 8],
    ['start_boottime', u64, 8],
    ['real_cred', vp, 8],
    ['cred', vp, 8],
    ['comm', w.array(char, int, 16), 16],
    ['signal', vp, 8],
  ]);
  const upid = struct('upid', [
    ['nr', int, 4],
    ['ns', vp, 8],
  ]);
  struct('pid', [
    ['count', uint, 4],
    ['level', uint, 4],
    ['tasks', w.array(hlistHead, int, 4), 32],
    ['numbers', w.array(upid, int, 1), 16],
  ]);
  const xarray = struct('xarray', [
    ['xa_lock', uint, 4],
    ['xa_head', vp, 8],
  ]);
  const idr = struct('idr', [
    ['idr_rt', xarray, 16],
    ['idr_base', uint, 4],
    ['idr_next', uint, 4],
  ]);
  struct('pid_namespace', [
    ['idr', idr, 24],
    ['level', uint, 4],
  ]);
  w.struct('xa_node', 8 * 4 + 64 * 8, [
    ['shift', u8, 0],
    ['offset', u8, 8],
    ['count', u8, 16],
    ['nr_values', u8, 24],
    ['parent', vp, 64],
    ['array', vp, 128],
    ['slots', w.array(vp, int, 64), 256],
  ]);
  return TypeRegistry.fromBlob(w.blob());
}

export type FieldValue = bigint | number | string | Buffer;

export interface ProcessSpec {
  pid: number;
  comm: string;
  /** Parent task address (default init_task). */
  parent?: bigint;
  uid?: number;
  euid?: number;
  gid?: number;
  caps?: bigint;
  /** Extra thread ids. */
  threads?: number[];
  kthread?: boolean;
  flags?: number;
  state?: number;
  exitState?: number;
  /** argv, written into a user address space of its own. */
  argv?: string[];
  environ?: string[];
  /** A different subjective cred (task->cred) with this euid. */
  overrideEuid?: number;
}

/** A fake kernel with an init_task, init_pid_ns and builders. */
export class FakeKernel implements TaskKernel {
  readonly types: TypeRegistry;
  readonly space = new FakeSpace();
  issues = new WalkIssues();
  readonly userSpaces = new Map<bigint, FakeSpace>();
  private readonly syms = new Map<string, bigint>();
  readonly symbols = { address: (name: string) => this.syms.get(name) };
  private next = 0xffff_8880_0100_0000n;
  readonly initTask: bigint;
  /** pid number → struct pid address. */
  readonly pids = new Map<number, bigint>();
  /** task address → pid number, for the IDR. */
  private readonly taskPids: [number, bigint][] = [];

  constructor(readonly options: FakeKernelOptions = {}) {
    this.types = buildTypes(options);
    this.syms.set('init_pid_ns', this.alloc(this.types.sizeof('pid_namespace')));
    this.initTask = this.newTask({ pid: 0, comm: 'swapper/0', kthread: true }, 0n);
    this.syms.set('init_task', this.initTask);
    const tasks = this.initTask + this.off('task_struct', 'tasks');
    this.space.writeU64(tasks, tasks);
    this.space.writeU64(tasks + 8n, tasks);
  }

  userSpace(pgd: bigint): TryReader {
    const s = this.userSpaces.get(pgd);
    if (!s) throw new VigilError('os', 'unmapped', `pgd 0x${pgd.toString(16)} is not mapped`);
    return s;
  }

  /** Fresh zeroed memory, 64-byte aligned, never reused. */
  alloc(size: number): bigint {
    const va = this.next;
    this.next += BigInt(Math.ceil(Math.max(size, 1) / 64) * 64);
    this.space.write(va, Buffer.alloc(size));
    return va;
  }

  off(type: string, path: string): bigint {
    return BigInt(this.types.offsetof(type, path));
  }

  /** Write fields of `type` at `va` by path: numbers by the field's size, strings as C strings. */
  put(type: string, va: bigint, values: Record<string, FieldValue>): void {
    for (const [path, v] of Object.entries(values)) {
      const f = this.types.field(type, path);
      const at = va + BigInt(f.offset);
      if (Buffer.isBuffer(v)) this.space.write(at, v);
      else if (typeof v === 'string')
        this.space.write(at, Buffer.from(v + '\0', 'latin1').subarray(0, f.size));
      else {
        const b = Buffer.alloc(f.size);
        if (f.size === 8) b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
        else if (f.size === 4) b.writeUInt32LE(Number(BigInt.asUintN(32, BigInt(v))));
        else b.writeUIntLE(Number(v), 0, f.size);
        this.space.write(at, b);
      }
    }
  }

  private newCred(uid: number, euid: number, gid: number, caps: bigint): bigint {
    const va = this.alloc(this.types.sizeof('cred'));
    const ids = { uid, gid, suid: uid, sgid: gid, euid, egid: gid, fsuid: euid, fsgid: gid };
    this.put('cred', va, Object.fromEntries(Object.entries(ids).map(([k, v]) => [`${k}.val`, v])));
    for (const set of ['cap_permitted', 'cap_effective', 'cap_bset']) {
      if (this.options.capsAsU64) this.put('cred', va, { [`${set}.val`]: caps });
      else this.put('cred', va, { [`${set}.cap[0]`]: caps & 0xffffffffn, [`${set}.cap[1]`]: caps >> 32n });
    }
    return va;
  }

  private newTask(spec: ProcessSpec, parent: bigint, leader?: bigint): bigint {
    const va = this.alloc(this.types.sizeof('task_struct'));
    const cred = this.newCred(spec.uid ?? 0, spec.euid ?? spec.uid ?? 0, spec.gid ?? 0, spec.caps ?? 0n);
    const flags = (spec.flags ?? 0) | (spec.kthread ? 0x0020_0000 : 0);
    this.put('task_struct', va, {
      [this.options.stateField ?? '__state']: spec.state ?? 1,
      exit_state: spec.exitState ?? 0,
      flags,
      pid: spec.pid,
      tgid: leader === undefined ? spec.pid : this.readInt(leader, 'tgid'),
      real_parent: parent === 0n ? va : parent,
      group_leader: leader ?? va,
      real_cred: cred,
      cred:
        spec.overrideEuid !== undefined
          ? this.newCred(spec.uid ?? 0, spec.overrideEuid, spec.gid ?? 0, spec.caps ?? 0n)
          : cred,
      comm: spec.comm,
      start_time: BigInt(spec.pid) * 1_000_000n,
      start_boottime: BigInt(spec.pid) * 1_000_000n + 5n,
    });
    const tg = va + this.off('task_struct', 'thread_group');
    this.space.writeU64(tg, tg);
    this.space.writeU64(tg + 8n, tg);
    if (leader === undefined) {
      const signal = this.alloc(this.types.sizeof('signal_struct'));
      this.put('task_struct', va, { signal });
      if (!this.options.threadGroupOnly) {
        const head = signal + this.off('signal_struct', 'thread_head');
        this.space.writeU64(head, head);
        this.space.writeU64(head + 8n, head);
      }
    } else {
      this.put('task_struct', va, { signal: this.readPtr(leader + this.off('task_struct', 'signal')) });
    }
    this.linkThread(va, leader ?? va);
    if (spec.pid !== 0) this.taskPids.push([spec.pid, va]);
    return va;
  }

  readPtr(va: bigint): bigint {
    return this.space.read(va, 8).readBigUInt64LE(0);
  }

  readInt(task: bigint, field: string): number {
    return this.space.read(task + this.off('task_struct', field), 4).readInt32LE(0);
  }

  /** list_add_tail(node, head). */
  listAddTail(head: bigint, node: bigint): void {
    const prev = this.readPtr(head + 8n);
    this.space.writeU64(node, head);
    this.space.writeU64(node + 8n, prev);
    this.space.writeU64(prev, node);
    this.space.writeU64(head + 8n, node);
  }

  private linkThread(task: bigint, leader: bigint): void {
    const signal = this.readPtr(leader + this.off('task_struct', 'signal'));
    if (!this.options.threadGroupOnly) {
      this.listAddTail(
        signal + this.off('signal_struct', 'thread_head'),
        task + this.off('task_struct', 'thread_node'),
      );
    }
    if (task !== leader) {
      this.listAddTail(
        leader + this.off('task_struct', 'thread_group'),
        task + this.off('task_struct', 'thread_group'),
      );
    }
  }

  /** A process on the task list (its threads beside it); returns the leader's task_struct address. */
  addProcess(spec: ProcessSpec): bigint {
    const leader = this.newTask(spec, spec.parent ?? this.initTask);
    this.listAddTail(
      this.initTask + this.off('task_struct', 'tasks'),
      leader + this.off('task_struct', 'tasks'),
    );
    for (const tid of spec.threads ?? [])
      this.newTask({ ...spec, pid: tid }, spec.parent ?? this.initTask, leader);
    if (spec.argv || spec.environ) this.giveMm(leader, spec.argv ?? [], spec.environ ?? []);
    return leader;
  }

  /** An mm with its own user address space holding argv and envp at 0x7ffe0000_0000. */
  giveMm(task: bigint, argv: string[], environ: string[]): bigint {
    const mm = this.alloc(this.types.sizeof('mm_struct'));
    const pgd = this.alloc(4096);
    const user = new FakeSpace();
    this.userSpaces.set(pgd, user);
    const args = Buffer.from(argv.map((a) => a + '\0').join(''), 'latin1');
    const env = Buffer.from(environ.map((a) => a + '\0').join(''), 'latin1');
    const argStart = 0x7ffe_0000_0000n;
    user.write(argStart, Buffer.concat([args, env]));
    const argEnd = argStart + BigInt(args.length);
    this.put('mm_struct', mm, {
      pgd,
      arg_start: argStart,
      arg_end: argEnd,
      env_start: argEnd,
      env_end: argEnd + BigInt(env.length),
    });
    this.put('task_struct', task, { mm });
    return mm;
  }

  /** A dentry chain for `/a/b/c` on one root mount; returns a struct file whose f_path names it. */
  fileAt(path: string): bigint {
    const dentry = (name: string, parent: bigint | undefined) => {
      const va = this.alloc(this.types.sizeof('dentry'));
      const nameVa = this.alloc(name.length + 1);
      this.space.write(nameVa, Buffer.from(name + '\0', 'latin1'));
      this.put('dentry', va, {
        d_parent: parent ?? va,
        'd_hash.pprev': 0xdead0000n,
        'd_name.len': name.length,
        'd_name.name': nameVa,
      });
      return va;
    };
    const root = dentry('/', undefined);
    let d = root;
    for (const part of path.split('/').filter(Boolean)) d = dentry(part, d);
    const mount = this.alloc(this.types.sizeof('mount'));
    this.put('mount', mount, { mnt_parent: mount, mnt_mountpoint: root, 'mnt.mnt_root': root });
    const file = this.alloc(this.types.sizeof('file'));
    this.put('file', file, { 'f_path.mnt': mount + this.off('mount', 'mnt'), 'f_path.dentry': d });
    return file;
  }

  /**
   * Build init_pid_ns.idr from every task made so far (one struct pid each) as an xarray: a single level
   * when all PIDs are below 64, else a two-level tree.
   */
  buildIdr(): void {
    const pidType = 0n;
    for (const [nr, task] of this.taskPids) {
      const pid = this.alloc(this.types.sizeof('pid'));
      this.put('pid', pid, { 'numbers[0].nr': nr });
      const head = pid + this.off('pid', `tasks[${pidType}]`);
      const link = task + this.off('task_struct', `pid_links[${pidType}]`);
      this.space.writeU64(head, link);
      this.space.writeU64(link + 8n, head);
      this.pids.set(nr, pid);
    }
    const maxPid = Math.max(0, ...this.pids.keys());
    const levels = maxPid < 64 ? 1 : maxPid < 64 * 64 ? 2 : 3;
    const build = (shift: number, base: number): bigint => {
      const node = this.alloc(this.types.sizeof('xa_node'));
      this.put('xa_node', node, { shift });
      for (let slot = 0; slot < 64; slot++) {
        const lo = base + (slot << shift);
        const hi = lo + (1 << shift);
        const inside = [...this.pids.keys()].some((p) => p >= lo && p < hi);
        if (!inside) continue;
        const entry = shift === 0 ? this.pids.get(lo)! : build(shift - 6, lo) + 2n;
        this.put('xa_node', node, { [`slots[${slot}]`]: entry });
      }
      return node;
    };
    const root = build((levels - 1) * 6, 0);
    this.put('pid_namespace', this.syms.get('init_pid_ns')!, { 'idr.idr_rt.xa_head': root + 2n });
  }

  /** The IDR node at `shift` on the way to `index` (0: the leaf holding it). */
  idrNode(index: number, shift = 0): bigint {
    let node = this.idrRoot();
    for (;;) {
      const s = this.space.read(node + this.off('xa_node', 'shift'), 1)[0]!;
      if (s <= shift) return node;
      node = this.readPtr(node + this.off('xa_node', `slots[${(index >> s) & 63}]`)) - 2n;
    }
  }

  /** Address of the xarray root node (after buildIdr). */
  idrRoot(): bigint {
    const ns = this.syms.get('init_pid_ns')!;
    return this.readPtr(ns + this.off('pid_namespace', 'idr.idr_rt.xa_head')) - 2n;
  }
}
