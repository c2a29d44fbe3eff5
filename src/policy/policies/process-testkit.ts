// Test support for the detectors' own walks (run queues, the shmem mount's memfd mappings): a small kernel
// with BTF written by BtfWriter — field names as the kernel has them, a layout of our own, so the walkers
// must find everything by name — sparse memory, symbols, an issue collector, an epoch and per-CPU offsets,
// and builders that link run queues, red-black trees and inode lists the way the kernel does, so that a
// test can then corrupt exactly one pointer.
import { BtfWriter } from '../../os/linux/btf/testkit.js';
import { TypeRegistry } from '../../os/linux/btf/registry.js';
import { FakeSpace } from '../../os/linux/tasks/testkit.js';
import { WalkIssues } from '../../os/linux/walk.js';

type Member = [name: string, type: number, size: number];

/** Members laid out 8-byte aligned (offsets in bits for BtfWriter); returns them and the struct size. */
function lay(members: Member[]): { members: [string, number, number][]; size: number } {
  let off = 0;
  const out: [string, number, number][] = [];
  for (const [name, type, size] of members) {
    out.push([name, type, off * 8]);
    off += Math.ceil(size / 8) * 8;
  }
  return { members: out, size: off };
}

/** Priority levels in the fake rt_prio_array (the kernel has 100). */
export const RT_LEVELS = 4;

function buildTypes(): TypeRegistry {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const uint = w.int('unsigned int', 4);
  const ushort = w.int('short unsigned int', 2);
  const ulong = w.int('long unsigned int', 8);
  const vp = w.ptr(0);
  const struct = (name: string, members: Member[]) => {
    const l = lay(members);
    return w.struct(name, l.size, l.members);
  };
  const listHead = struct('list_head', [
    ['next', vp, 8],
    ['prev', vp, 8],
  ]);
  // rb_node's real order: parent+colour first, then right, then left.
  const rbNode = struct('rb_node', [
    ['__rb_parent_color', ulong, 8],
    ['rb_right', vp, 8],
    ['rb_left', vp, 8],
  ]);
  const rbRoot = struct('rb_root', [['rb_node', vp, 8]]);
  const rbCached = struct('rb_root_cached', [
    ['rb_root', rbRoot, 8],
    ['rb_leftmost', vp, 8],
  ]);
  const se = struct('sched_entity', [
    ['load', ulong, 16],
    ['run_node', rbNode, 24],
    ['on_rq', uint, 4],
    ['my_q', vp, 8],
  ]);
  const rtSe = struct('sched_rt_entity', [
    ['run_list', listHead, 16],
    ['timeout', ulong, 8],
  ]);
  const dlSe = struct('sched_dl_entity', [
    ['rb_node', rbNode, 24],
    ['dl_runtime', ulong, 8],
  ]);
  struct('task_struct', [
    ['__state', uint, 4],
    ['se', se, 64],
    ['rt', rtSe, 24],
    ['dl', dlSe, 32],
  ]);
  const cfsRq = struct('cfs_rq', [
    ['nr_running', uint, 4],
    ['tasks_timeline', rbCached, 16],
  ]);
  const prio = struct('rt_prio_array', [
    ['bitmap', w.array(ulong, int, 1), 8],
    ['queue', w.array(listHead, int, RT_LEVELS), 16 * RT_LEVELS],
  ]);
  const rtRq = struct('rt_rq', [['active', prio, 8 + 16 * RT_LEVELS]]);
  const dlRq = struct('dl_rq', [['root', rbCached, 16]]);
  struct('rq', [
    ['nr_running', uint, 4],
    ['cfs', cfsRq, 24],
    ['rt', rtRq, 8 + 16 * RT_LEVELS],
    ['dl', dlRq, 16],
    ['curr', vp, 8],
    ['idle', vp, 8],
  ]);
  // The VFS and mm pieces the memfd walk reads (describeFile is not reached: the test VMAs are not memfds).
  struct('vfsmount', [
    ['mnt_root', vp, 8],
    ['mnt_sb', vp, 8],
  ]);
  struct('super_block', [
    ['s_dev', uint, 4],
    ['s_inodes', listHead, 16],
  ]);
  const addressSpace = struct('address_space', [
    ['host', vp, 8],
    ['i_mmap', rbCached, 16],
  ]);
  struct('inode', [
    ['i_mode', ushort, 2],
    ['i_uid', uint, 4],
    ['i_sb', vp, 8],
    ['i_mapping', vp, 8],
    ['i_sb_list', listHead, 16],
    ['i_data', addressSpace, 24],
  ]);
  const shared = struct('', [
    ['rb', rbNode, 24],
    ['rb_subtree_last', ulong, 8],
  ]);
  struct('vm_area_struct', [
    ['vm_start', ulong, 8],
    ['vm_end', ulong, 8],
    ['vm_mm', vp, 8],
    ['vm_flags', ulong, 8],
    ['shared', shared, 32],
    ['vm_file', vp, 8],
  ]);
  return TypeRegistry.fromBlob(w.blob());
}

/** A fake kernel for the run-queue and memfd walks. */
export class WalkKernel {
  readonly types = buildTypes();
  readonly space = new FakeSpace();
  issues = new WalkIssues();
  private readonly syms = new Map<string, bigint>();
  readonly symbols = { address: (name: string): bigint | undefined => this.syms.get(name) };
  readonly kaslr: { perCpuOffsets: bigint[] } = { perCpuOffsets: [] };
  readonly epoch = { frozen: true, value: 0, bump: () => 0 };
  private next = 0xffff_8880_0200_0000n;

  alloc(what: string | number): bigint {
    const size = typeof what === 'number' ? what : this.types.sizeof(what);
    const va = this.next;
    this.next += BigInt(Math.ceil(Math.max(size, 1) / 64) * 64);
    this.space.write(va, Buffer.alloc(Math.max(size, 1)));
    return va;
  }

  off(type: string, path: string): bigint {
    return BigInt(this.types.offsetof(type, path));
  }

  setSymbol(name: string, va: bigint): void {
    this.syms.set(name, va);
  }

  writeU64(va: bigint, v: bigint): void {
    this.space.writeU64(va, v);
  }

  readU64(va: bigint): bigint {
    return this.space.read(va, 8).readBigUInt64LE(0);
  }

  /** A list_head at `head` pointing to itself (empty). */
  listInit(head: bigint): void {
    this.writeU64(head, head);
    this.writeU64(head + 8n, head);
  }

  listAddTail(head: bigint, node: bigint): void {
    const prev = this.readU64(head + 8n);
    this.writeU64(node, head);
    this.writeU64(node + 8n, prev);
    this.writeU64(prev, node);
    this.writeU64(head + 8n, node);
  }

  /**
   * A balanced-enough binary tree of `nodes` (rb_node addresses) under the rb_root at `root`: the walk only
   * follows rb_left/rb_right, so colours do not matter.
   */
  rbTree(root: bigint, nodes: readonly bigint[]): void {
    const left = this.off('rb_node', 'rb_left');
    const right = this.off('rb_node', 'rb_right');
    const build = (lo: number, hi: number): bigint => {
      if (lo >= hi) return 0n;
      const mid = (lo + hi) >> 1;
      const n = nodes[mid]!;
      this.writeU64(n + left, build(lo, mid));
      this.writeU64(n + right, build(mid + 1, hi));
      return n;
    };
    this.writeU64(root, build(0, nodes.length));
  }

  /** `cpus` run queues in a per-CPU area, `runqueues` the symbol; returns each CPU's rq address. */
  runQueues(cpus: number): bigint[] {
    const size = this.types.sizeof('rq');
    const base = this.alloc(size * cpus + 64);
    this.setSymbol('runqueues', base);
    // Per-CPU offsets: CPU n's copy sits n * size after the symbol.
    this.kaslr.perCpuOffsets = Array.from({ length: cpus }, (_, i) => BigInt(i * size));
    const out: bigint[] = [];
    for (let i = 0; i < cpus; i++) {
      const rq = base + BigInt(i * size);
      for (let l = 0; l < RT_LEVELS; l++) this.listInit(rq + this.off('rq', `rt.active.queue[${l}]`));
      out.push(rq);
    }
    return out;
  }

  task(): bigint {
    return this.alloc('task_struct');
  }

  /** Queue tasks (or group entities) on a cfs_rq's timeline. */
  cfsQueue(cfsRq: bigint, entities: readonly bigint[]): void {
    const runNode = this.off('sched_entity', 'run_node');
    this.rbTree(
      cfsRq + this.off('cfs_rq', 'tasks_timeline'),
      entities.map((se) => se + runNode),
    );
  }

  seOf(task: bigint): bigint {
    return task + this.off('task_struct', 'se');
  }
}
