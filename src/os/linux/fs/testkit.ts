// Test support for the fs and mm walkers: a synthetic kernel with BTF written by BtfWriter (field names as
// the kernel has them, offsets of our own choosing — walkers must find everything by name), sparse memory
// and builders for dentries, mounts, files, fd tables, maple trees and VMAs. Tests build a consistent
// structure, then corrupt exactly one pointer.
import { BtfWriter } from '../btf/testkit.js';
import { TypeRegistry } from '../btf/registry.js';
import { WalkIssues } from '../walk.js';
import type { KernelReader } from './reader.js';
import { SparseMemory } from '../sparse-memory.js';
export { SparseMemory } from '../sparse-memory.js';

type M = [string, number, number];

/**
 * BTF for the structs the fs and mm walkers read (a 6.1-like subset, rearranged). `linkedVmas` gives the
 * pre-6.1 shape instead: mm->mmap and vm_area_struct.vm_next, no maple tree in mm_struct.
 */
export function fsTypes(opts: { linkedVmas?: boolean } = {}): TypeRegistry {
  const w = new BtfWriter();
  const u8 = w.int('unsigned char', 1);
  const u16 = w.int('short unsigned int', 2);
  const u32 = w.int('unsigned int', 4);
  const ulong = w.int('long unsigned int', 8);
  const long = w.int('long long int', 8, { signed: true });
  const vp = w.ptr(0);
  const arr = (t: number, n: number): number => w.array(t, u32, n);
  const S = (name: string, size: number, members: M[]): number => w.struct(name, size, members);
  const at = (bytes: number): number => bytes * 8;

  // struct qstr: { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned char *name; }
  const hashLen = S('', 8, [
    ['hash', u32, 0],
    ['len', u32, 32],
  ]);
  const qUnion = w.union('', 8, [
    ['', hashLen, 0],
    ['hash_len', ulong, 0],
  ]);
  const qstr = S('qstr', 16, [
    ['', qUnion, 0],
    ['name', vp, at(8)],
  ]);
  const blNode = S('hlist_bl_node', 16, [
    ['next', vp, 0],
    ['pprev', vp, at(8)],
  ]);
  S('dentry', 200, [
    ['d_flags', u32, 0],
    ['d_parent', vp, at(8)],
    ['d_hash', blNode, at(16)],
    ['d_inode', vp, at(40)],
    ['d_name', qstr, at(56)],
    ['d_op', vp, at(72)],
    ['d_sb', vp, at(80)],
    ['d_fsdata', vp, at(96)],
  ]);
  S('dentry_operations', 96, [['d_dname', vp, at(40)]]);
  const vfsmount = S('vfsmount', 32, [
    ['mnt_root', vp, 0],
    ['mnt_sb', vp, at(8)],
  ]);
  S('mount', 120, [
    ['mnt_hash', blNode, 0],
    ['mnt_mountpoint', vp, at(16)],
    ['mnt_parent', vp, at(24)],
    ['mnt', vfsmount, at(40)],
    ['mnt_ns', vp, at(96)],
  ]);
  S('inode', 128, [
    ['i_mode', u16, 0],
    ['i_sb', vp, at(16)],
    ['i_ino', ulong, at(32)],
    ['i_rdev', u32, at(44)],
  ]);
  S('super_block', 64, [
    ['s_dev', u32, at(8)],
    ['s_type', vp, at(24)],
  ]);
  S('file_system_type', 16, [['name', vp, 0]]);
  const path = S('path', 16, [
    ['mnt', vp, 0],
    ['dentry', vp, at(8)],
  ]);
  S('file', 160, [
    ['f_op', vp, at(8)],
    ['f_path', path, at(16)],
    ['f_inode', vp, at(40)],
    ['f_flags', u32, at(56)],
    ['f_mode', u32, at(60)],
    ['f_pos', long, at(72)],
    ['private_data', vp, at(120)],
  ]);
  S('socket', 64, [['sk', vp, at(32)]]);
  S('fdtable', 56, [
    ['max_fds', u32, 0],
    ['fd', vp, at(8)],
    ['close_on_exec', vp, at(16)],
    ['open_fds', vp, at(24)],
  ]);
  S('files_struct', 64, [['fdt', vp, at(24)]]);

  // Maple tree nodes, laid out as in 6.1 (the walker takes slot counts and offsets from here).
  w.enum('maple_type', 4, [
    ['maple_dense', 0],
    ['maple_leaf_64', 1],
    ['maple_range_64', 2],
    ['maple_arange_64', 3],
  ]);
  const meta = S('maple_metadata', 2, [
    ['end', u8, 0],
    ['gap', u8, 8],
  ]);
  const metaPad = S('', 128, [
    ['pad', arr(vp, 15), 0],
    ['meta', meta, at(120)],
  ]);
  const slotUnion = w.union('', 128, [
    ['slot', arr(vp, 16), 0],
    ['', metaPad, 0],
  ]);
  const r64 = S('maple_range_64', 256, [
    ['parent', vp, 0],
    ['pivot', arr(ulong, 15), at(8)],
    ['', slotUnion, at(128)],
  ]);
  const a64 = S('maple_arange_64', 248, [
    ['parent', vp, 0],
    ['pivot', arr(ulong, 9), at(8)],
    ['slot', arr(vp, 10), at(80)],
    ['gap', arr(ulong, 10), at(160)],
    ['meta', meta, at(240)],
  ]);
  const dense = S('', 256, [
    ['parent', vp, 0],
    ['slot', arr(vp, 31), at(8)],
  ]);
  w.union('maple_node', 256, [
    ['', dense, 0],
    ['mr64', r64, 0],
    ['ma64', a64, 0],
  ]);
  const tree = S('maple_tree', 24, [
    ['ma_lock', u32, 0],
    ['ma_root', vp, at(8)],
    ['ma_flags', u32, at(16)],
  ]);
  const ctx = S('', 16, [
    ['flags', u16, 0],
    ['vdso', vp, at(8)],
  ]);
  const ctxT = w.typedef('mm_context_t', ctx);
  S('mm_struct', 128, [
    opts.linkedVmas ? ['mmap', vp, 0] : ['mm_mt', tree, 0],
    ['start_brk', ulong, at(32)],
    ['brk', ulong, at(40)],
    ['start_stack', ulong, at(48)],
    ['context', ctxT, at(64)],
  ]);
  S('vm_area_struct', 120, [
    ['vm_start', ulong, 0],
    ['vm_end', ulong, at(8)],
    ['vm_mm', vp, at(16)],
    ['vm_flags', ulong, at(24)],
    ['anon_name', vp, at(40)],
    ['vm_ops', vp, at(64)],
    ['vm_pgoff', ulong, at(72)],
    ['vm_file', vp, at(80)],
    ['vm_private_data', vp, at(88)],
    ...(opts.linkedVmas ? ([['vm_next', vp, at(96)]] as M[]) : []),
  ]);
  S('vm_special_mapping', 32, [['name', vp, 0]]);
  S('anon_vma_name', 4, [
    ['kref', u32, 0],
    ['name', arr(u8, 0), at(4)],
  ]);
  S('task_struct', 64, [
    ['mm', vp, at(16)],
    ['files', vp, at(32)],
  ]);
  return TypeRegistry.fromBlob(w.blob());
}

/** A fake kernel: memory, types, symbols and a bump allocator for objects. */
export class FakeKernel implements KernelReader {
  readonly types: TypeRegistry;
  readonly space = new SparseMemory();
  readonly syms = new Map<string, bigint>();
  readonly symbols = { address: (name: string): bigint | undefined => this.syms.get(name) };
  issues = new WalkIssues();
  private next = 0xffff_8880_0010_0000n;

  constructor(opts: { linkedVmas?: boolean } = {}) {
    this.types = fsTypes(opts);
  }

  /** Zeroed memory for `size` bytes (or sizeof a type), 256-byte aligned (maple nodes need it). */
  alloc(what: string | number): bigint {
    const size = typeof what === 'number' ? what : this.types.sizeof(what);
    const va = this.next;
    this.space.write(va, Buffer.alloc(Math.max(size, 1)));
    this.next += (BigInt(size) + 255n) & ~255n;
    return va;
  }

  /** Write a field of the struct of `type` at `va` (by its BTF size). */
  set(va: bigint, type: string, path: string, value: bigint | number): void {
    const f = this.types.field(type, path);
    const b = Buffer.alloc(f.size);
    const v = BigInt.asUintN(f.size * 8, BigInt(value));
    for (let i = 0; i < f.size; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
    this.space.write(va + BigInt(f.offset), b);
  }

  writeU64(va: bigint, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    this.space.write(va, b);
  }

  /** A NUL-terminated string in memory. */
  string(s: string): bigint {
    const va = this.alloc(s.length + 1);
    this.space.write(va, Buffer.from(s + '\0', 'latin1'));
    return va;
  }

  /** A symbol at a fresh address (e.g. an ops table or a d_dname function). */
  symbol(name: string, size = 64): bigint {
    const va = this.alloc(size);
    this.syms.set(name, va);
    return va;
  }

  superBlock(fsType: string, dev = 0): bigint {
    const fst = this.alloc('file_system_type');
    this.set(fst, 'file_system_type', 'name', this.string(fsType));
    const sb = this.alloc('super_block');
    this.set(sb, 'super_block', 's_type', fst);
    this.set(sb, 'super_block', 's_dev', dev);
    return sb;
  }

  inode(sb: bigint, ino: number, mode: number, rdev = 0): bigint {
    const i = this.alloc('inode');
    this.set(i, 'inode', 'i_sb', sb);
    this.set(i, 'inode', 'i_ino', ino);
    this.set(i, 'inode', 'i_mode', mode);
    this.set(i, 'inode', 'i_rdev', rdev);
    return i;
  }

  /** A dentry named `name` under `parent` (itself when omitted: a root), hashed unless told otherwise. */
  dentry(
    name: string,
    parent?: bigint,
    opts: { inode?: bigint; sb?: bigint; op?: bigint; hashed?: boolean } = {},
  ): bigint {
    const d = this.alloc('dentry');
    this.set(d, 'dentry', 'd_parent', parent ?? d);
    this.set(d, 'dentry', 'd_name.len', name.length);
    this.set(d, 'dentry', 'd_name.name', this.string(name));
    if (opts.hashed ?? true) this.set(d, 'dentry', 'd_hash.pprev', 0x1234_0000n);
    if (opts.inode) this.set(d, 'dentry', 'd_inode', opts.inode);
    if (opts.sb) this.set(d, 'dentry', 'd_sb', opts.sb);
    if (opts.op) this.set(d, 'dentry', 'd_op', opts.op);
    return d;
  }

  /** A struct mount with root `root`, mounted on `mountpoint` in `parent` (itself when omitted); returns &mnt (a vfsmount). */
  mount(root: bigint, parent?: bigint, mountpoint?: bigint): bigint {
    const m = this.alloc('mount');
    const mntOff = BigInt(this.types.offsetof('mount', 'mnt'));
    this.set(m, 'mount', 'mnt.mnt_root', root);
    this.set(m, 'mount', 'mnt_parent', parent === undefined ? m : parent - mntOff);
    this.set(m, 'mount', 'mnt_mountpoint', mountpoint ?? root);
    return m + mntOff;
  }

  file(
    dentry: bigint,
    vfsmount: bigint,
    inode: bigint,
    opts: { flags?: number; mode?: number; pos?: number } = {},
  ): bigint {
    const f = this.alloc('file');
    this.set(f, 'file', 'f_path.dentry', dentry);
    this.set(f, 'file', 'f_path.mnt', vfsmount);
    this.set(f, 'file', 'f_inode', inode);
    this.set(f, 'file', 'f_flags', opts.flags ?? 0);
    this.set(f, 'file', 'f_mode', opts.mode ?? 1);
    this.set(f, 'file', 'f_pos', opts.pos ?? 0);
    return f;
  }
}

export const MAPLE_LEAF_64 = 1;
export const MAPLE_RANGE_64 = 2;
export const MAPLE_ARANGE_64 = 3;
const ULONG_MAX = (1n << 64n) - 1n;

/** An encoded child pointer, as mt_mk_node makes it: node | type << 3 | MAPLE_ENODE_NULL. */
export const enode = (node: bigint, type: number): bigint => node | (BigInt(type) << 3n) | 4n;
/** The root pointer stored in ma_root: an enode with bit 1 (MAPLE_ROOT_NODE). */
export const rootOf = (en: bigint): bigint => en | 2n;

/**
 * A maple node of `type` whose used slots are `slots` ([last index, slot value] in order) the way the
 * kernel fills one: pivots for all but an implicit last slot, metadata end when the last pivot is 0.
 * `nodeMax` is the max of the range the parent gives this node. Returns the enode.
 */
export function mapleNode(
  k: FakeKernel,
  type: number,
  slots: [bigint, bigint][],
  nodeMax = ULONG_MAX,
): bigint {
  const node = k.alloc('maple_node');
  const kind = type === MAPLE_ARANGE_64 ? 'maple_arange_64' : 'maple_range_64';
  const pivotOff = BigInt(k.types.offsetof(kind, 'pivot'));
  const slotOff = BigInt(k.types.member(kind, 'slot').offset);
  const pivots = k.types.member(kind, 'pivot').size / 8;
  slots.forEach(([last, value], i) => {
    // The slot past the last pivot ends at the node's max implicitly.
    if (i < pivots) k.writeU64(node + pivotOff + BigInt(i * 8), last);
    else if (last !== nodeMax) throw new Error('the implicit last slot must end at the node max');
    k.writeU64(node + slotOff + BigInt(i * 8), value);
  });
  // ma_data_end: when the last pivot is 0 the end comes from the metadata (arange_64: always).
  const lastPivot = k.space.tryRead(node + pivotOff + BigInt((pivots - 1) * 8), 8)!.readBigUInt64LE(0);
  if (type === MAPLE_ARANGE_64 || lastPivot === 0n) {
    k.set(node, `maple_node`, `${type === MAPLE_ARANGE_64 ? 'ma64' : 'mr64'}.meta.end`, slots.length - 1);
  }
  return enode(node, type);
}

/** A struct maple_tree holding `root` (already a root pointer, or a lone entry). */
export function mapleTree(k: FakeKernel, root: bigint): bigint {
  const t = k.alloc('maple_tree');
  k.set(t, 'maple_tree', 'ma_root', root);
  return t;
}
