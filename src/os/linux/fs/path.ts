// The kernel's d_path (fs/d_path.c) over guest memory: the path /proc/PID/fd and /proc/PID/maps show.
// Walk dentry->d_parent up to the mount's root, cross to the parent mount (struct mount: mnt_parent,
// mnt_mountpoint) and go on up to the global root; unlinked dentries get " (deleted)"; synthetic
// filesystems (pipes, sockets, anon inodes, namespaces) are named the way their d_op->d_dname names
// them. The walk is bounded by PATH_MAX bytes and mount crossings and detects dentry and mount loops:
// an early stop is recorded in kernel.issues and marks the path with a leading '…'.
import { sanitize } from '../../../util/sanitize.js';
import type { WalkIssueKind } from '../walk.js';
import type { TypeRegistry } from '../btf/registry.js';
import {
  hex,
  layout,
  offset,
  readCBytes,
  readPtr,
  readStruct,
  tryOffset,
  u32,
  u64,
  type KernelReader,
} from './reader.js';

/** The kernel's PATH_MAX: /proc readlink fails with ENAMETOOLONG past a page. */
export const MAX_PATH_BYTES = 4096;
/** Mount crossings on one walk; real namespaces nest a handful deep. */
export const MAX_MOUNT_CROSSINGS = 256;
/** Marks a path whose walk stopped early (not a character a path walk itself produces). */
export const TRUNCATED_MARK = '…';

export interface ResolvedPath {
  /** Sanitised, as /proc/PID/fd readlink shows it. */
  readonly path: string;
  /** The dentry is unlinked (" (deleted)" was appended). */
  readonly deleted: boolean;
  /** The d_dname that named a synthetic file: 'pipefs', 'sockfs', 'anon_inodefs', 'nsfs', 'simple', 'dmabuf'. */
  readonly pseudo?: string;
  /** Why the walk stopped early; the path then starts with TRUNCATED_MARK. */
  readonly truncated?: WalkIssueKind;
}

const WALKER = 'd_path';

/** Path of a dentry, crossing mounts when `vfsmountVa` (a struct vfsmount *, as in struct path) is given. */
export function dentryPath(k: KernelReader, dentryVa: bigint, vfsmountVa?: bigint): string {
  return resolvePath(k, dentryVa, vfsmountVa).path;
}

/** Path of an open struct file (its f_path), as /proc/PID/fd shows it. */
export function filePath(k: KernelReader, fileVa: bigint): string {
  return resolveFilePath(k, fileVa).path;
}

export function resolveFilePath(k: KernelReader, fileVa: bigint): ResolvedPath {
  const t = k.types;
  const pathOff = offset(t, 'file', 'f_path');
  const b = k.space.tryRead(fileVa + BigInt(pathOff), 16);
  if (!b) return unreadable(k, `struct file ${hex(fileVa)}`);
  const mnt = b.readBigUInt64LE(offset(t, 'path', 'mnt'));
  const dentry = b.readBigUInt64LE(offset(t, 'path', 'dentry'));
  return resolvePath(k, dentry, mnt === 0n ? undefined : mnt);
}

interface DentryRec {
  readonly va: bigint;
  readonly parent: bigint;
  readonly hashed: boolean;
  readonly nameLen: number;
  readonly namePtr: bigint;
  readonly inode: bigint;
  readonly op: bigint;
  readonly sb: bigint;
  readonly fsdata: bigint;
}

interface DentryLayout {
  readonly parent: number;
  readonly pprev: number;
  readonly nameLen: number;
  readonly namePtr: number;
  readonly inode: number;
  readonly op: number;
  readonly sb: number;
  readonly fsdata: number | undefined;
}

const dentryLayout = (types: TypeRegistry): DentryLayout =>
  layout(types, 'd_path.dentry', (t) => {
    const name = offset(t, 'dentry', 'd_name');
    return {
      parent: offset(t, 'dentry', 'd_parent'),
      // d_unhashed: hlist_bl_unhashed(&d_hash) is !d_hash.pprev.
      pprev: offset(t, 'dentry', 'd_hash') + offset(t, 'hlist_bl_node', 'pprev'),
      // qstr.len sits in an anonymous struct beside `hash` (the high half of hash_len): by name first.
      nameLen: name + (tryOffset(t, 'qstr', 'len') ?? offset(t, 'qstr', 'hash_len') + 4),
      namePtr: name + offset(t, 'qstr', 'name'),
      inode: offset(t, 'dentry', 'd_inode'),
      op: offset(t, 'dentry', 'd_op'),
      sb: offset(t, 'dentry', 'd_sb'),
      fsdata: tryOffset(t, 'dentry', 'd_fsdata'),
    };
  });

function readDentry(k: KernelReader, va: bigint): DentryRec | undefined {
  const L = dentryLayout(k.types);
  const b = readStruct(k, 'dentry', va);
  if (!b) return undefined;
  return {
    va,
    parent: u64(b, L.parent),
    hashed: u64(b, L.pprev) !== 0n,
    nameLen: u32(b, L.nameLen),
    namePtr: u64(b, L.namePtr),
    inode: u64(b, L.inode),
    op: u64(b, L.op),
    sb: u64(b, L.sb),
    fsdata: L.fsdata === undefined ? 0n : u64(b, L.fsdata),
  };
}

interface MountRec {
  readonly va: bigint;
  readonly parent: bigint;
  readonly mountpoint: bigint;
  readonly root: bigint;
}

const mountLayout = (types: TypeRegistry) =>
  layout(types, 'd_path.mount', (t) => ({
    mnt: offset(t, 'mount', 'mnt'),
    parent: offset(t, 'mount', 'mnt_parent'),
    mountpoint: offset(t, 'mount', 'mnt_mountpoint'),
    root: offset(t, 'mount', 'mnt') + offset(t, 'vfsmount', 'mnt_root'),
  }));

/** struct mount from the struct vfsmount embedded in it (real_mount()). */
function readMount(k: KernelReader, vfsmountVa: bigint): MountRec | undefined {
  const L = mountLayout(k.types);
  const mntOff = BigInt(L.mnt);
  if (vfsmountVa < mntOff) return undefined;
  const va = vfsmountVa - mntOff;
  const b = readStruct(k, 'mount', va);
  if (!b) return undefined;
  return { va, parent: u64(b, L.parent), mountpoint: u64(b, L.mountpoint), root: u64(b, L.root) };
}

export function resolvePath(k: KernelReader, dentryVa: bigint, vfsmountVa?: bigint): ResolvedPath {
  const start = readDentry(k, dentryVa);
  if (!start) return unreadable(k, `dentry ${hex(dentryVa)}`);
  let mount = vfsmountVa === undefined ? undefined : readMount(k, vfsmountVa);
  if (vfsmountVa !== undefined && !mount) {
    k.issues.add(WALKER, 'unmapped', `vfsmount ${hex(vfsmountVa)} is not readable`);
  }
  const isRoot = start.parent === start.va;

  // Synthetic filesystems name their files on demand, unless the dentry is a mounted root.
  if (start.op !== 0n && (!isRoot || !mount || start.va !== mount.root)) {
    const pseudo = pseudoName(k, start);
    if (pseudo) return pseudo;
  }

  const deleted = !start.hashed && !isRoot;
  const parts: string[] = [];
  let bytes = deleted ? 11 : 1;
  let truncated: WalkIssueKind | undefined;
  const seenDentries = new Set<bigint>();
  const seenMounts = new Set<bigint>();
  let crossings = 0;
  let d = start;
  for (;;) {
    if (mount && d.va === mount.root) {
      const parentVa = mount.parent;
      if (parentVa === mount.va || parentVa === 0n) break; // the global root (or a detached mount)
      if (seenMounts.has(mount.va) || ++crossings > MAX_MOUNT_CROSSINGS) {
        truncated = seenMounts.has(mount.va) ? 'cycle' : 'bound';
        k.issues.add(WALKER, truncated, `mount chain from ${hex(dentryVa)} loops or is too deep`);
        break;
      }
      seenMounts.add(mount.va);
      const mountpoint = mount.mountpoint;
      const parentMount = readMount(k, parentVa + BigInt(mountLayout(k.types).mnt));
      const next = parentMount && readDentry(k, mountpoint);
      if (!parentMount || !next) {
        truncated = 'unmapped';
        k.issues.add(WALKER, 'unmapped', `mount ${hex(parentVa)} or its mountpoint is not readable`);
        break;
      }
      mount = parentMount;
      d = next;
      // A dentry may legitimately be revisited in another mount (bind mounts): key loops by both.
      seenDentries.clear();
      continue;
    }
    if (d.parent === d.va) {
      // IS_ROOT short of the mount's root: the kernel's "escaped" case shows "/".
      if (mount) parts.length = 0;
      break;
    }
    if (seenDentries.has(d.va)) {
      truncated = 'cycle';
      k.issues.add(WALKER, 'cycle', `dentry parents loop back to ${hex(d.va)} (from ${hex(dentryVa)})`);
      break;
    }
    seenDentries.add(d.va);
    const room = MAX_PATH_BYTES - bytes - 1;
    if (d.nameLen > room) {
      truncated = 'bound';
      k.issues.add(WALKER, 'bound', `path of ${hex(dentryVa)} is longer than ${MAX_PATH_BYTES} bytes`);
      break;
    }
    parts.push(readName(k, d));
    bytes += d.nameLen + 1;
    const parent = readDentry(k, d.parent);
    if (!parent) {
      truncated = 'unmapped';
      k.issues.add(WALKER, 'unmapped', `parent dentry ${hex(d.parent)} is not readable`);
      break;
    }
    d = parent;
  }

  const joined = parts.length === 0 ? '/' : '/' + parts.reverse().join('/');
  const raw = (truncated ? TRUNCATED_MARK : '') + joined + (deleted ? ' (deleted)' : '');
  return { path: sanitize(raw, MAX_PATH_BYTES + 16), deleted, ...(truncated ? { truncated } : {}) };
}

/** A dentry's name as latin1 (any byte maps to a character); unreadable bytes read as 'x' like the kernel. */
function readName(k: KernelReader, d: DentryRec): string {
  if (d.nameLen === 0) return '';
  const b = k.space.tryRead(d.namePtr, d.nameLen);
  if (!b) {
    k.issues.add(WALKER, 'unmapped', `name of dentry ${hex(d.va)} is not readable`);
    return 'x'.repeat(d.nameLen);
  }
  return b.toString('latin1');
}

function unreadable(k: KernelReader, what: string): ResolvedPath {
  k.issues.add(WALKER, 'unmapped', `${what} is not readable`);
  return { path: `${TRUNCATED_MARK}[unreadable]`, deleted: false, truncated: 'unmapped' };
}

/** d_dname implementations vigil knows, by kernel symbol name. */
const DNAME_FUNCTIONS = [
  'pipefs_dname',
  'sockfs_dname',
  'anon_inodefs_dname',
  'simple_dname',
  'ns_dname',
  'dmabuffs_dname',
] as const;
type DnameKind = (typeof DNAME_FUNCTIONS)[number];

const dnameCache = new WeakMap<object, Map<bigint, DnameKind>>();

function dnameKinds(k: KernelReader): Map<bigint, DnameKind> {
  let m = dnameCache.get(k.symbols);
  if (!m) {
    m = new Map();
    for (const name of DNAME_FUNCTIONS) {
      const va = k.symbols.address(name);
      if (va !== undefined) m.set(va, name);
    }
    dnameCache.set(k.symbols, m);
  }
  return m;
}

/** File system type name of a superblock ("sockfs", "tmpfs"…), raw; undefined when unreadable. */
export function fsTypeName(k: KernelReader, sbVa: bigint): string | undefined {
  const t = k.types;
  const type = readPtr(k, sbVa + BigInt(offset(t, 'super_block', 's_type')));
  if (type === undefined || type === 0n) return undefined;
  const name = readPtr(k, type + BigInt(offset(t, 'file_system_type', 'name')));
  const b = name === undefined ? undefined : readCBytes(k, name, 64);
  return b ? sanitize(b.toString('latin1'), 64) : undefined;
}

function inodeNumber(k: KernelReader, inodeVa: bigint): bigint | undefined {
  if (inodeVa === 0n) return undefined;
  return readPtr(k, inodeVa + BigInt(offset(k.types, 'inode', 'i_ino')));
}

/** The name a synthetic file system's d_dname would produce, or undefined to walk the path normally. */
function pseudoName(k: KernelReader, d: DentryRec): ResolvedPath | undefined {
  const dname = readPtr(k, d.op + BigInt(offset(k.types, 'dentry_operations', 'd_dname')));
  if (dname === undefined || dname === 0n) return undefined;
  let kind: string | undefined = dnameKinds(k).get(dname);
  if (!kind) {
    // A d_dname vigil does not know (or one moved): fall back on the file system type's name.
    const fs = fsTypeName(k, d.sb);
    kind = fs === 'pipefs' ? 'pipefs_dname' : fs === 'sockfs' ? 'sockfs_dname' : undefined;
    if (fs === 'anon_inodefs') kind = 'anon_inodefs_dname';
    if (!kind) {
      const ino = inodeNumber(k, d.inode);
      return pseudo(`${fs ?? '?'}:[${ino ?? '?'}]`, fs ?? 'unknown');
    }
  }
  const name = (): string => readName(k, d);
  switch (kind) {
    case 'pipefs_dname':
      return pseudo(`pipe:[${inodeNumber(k, d.inode) ?? '?'}]`, 'pipefs');
    case 'sockfs_dname':
      return pseudo(`socket:[${inodeNumber(k, d.inode) ?? '?'}]`, 'sockfs');
    case 'anon_inodefs_dname':
      return pseudo(`anon_inode:${name()}`, 'anon_inodefs');
    case 'simple_dname':
      return { ...pseudo(`/${name()} (deleted)`, 'simple'), deleted: true };
    case 'ns_dname':
      return pseudo(`${nsTypeName(k, d.fsdata) ?? '?'}:[${inodeNumber(k, d.inode) ?? '?'}]`, 'nsfs');
    case 'dmabuffs_dname':
      return pseudo(`/${name()}:${dmabufName(k, d.fsdata)}`, 'dmabuf');
    default:
      return undefined;
  }
}

function pseudo(raw: string, kind: string): ResolvedPath {
  return { path: sanitize(raw, MAX_PATH_BYTES), deleted: false, pseudo: kind };
}

/** ns_dname: the namespace type ("net", "mnt"…) from ns_common->ops->name (dentry->d_fsdata). */
function nsTypeName(k: KernelReader, nsCommon: bigint): string | undefined {
  const t = k.types;
  const opsOff = tryOffset(t, 'ns_common', 'ops');
  const nameOff = tryOffset(t, 'proc_ns_operations', 'name');
  if (nsCommon === 0n || opsOff === undefined || nameOff === undefined) return undefined;
  const ops = readPtr(k, nsCommon + BigInt(opsOff));
  const name = ops ? readPtr(k, ops + BigInt(nameOff)) : undefined;
  const b = name ? readCBytes(k, name, 32) : undefined;
  return b?.toString('latin1');
}

/** dmabuffs_dname: the buffer's optional name (struct dma_buf.name, at most DMA_BUF_NAME_LEN). */
function dmabufName(k: KernelReader, dmabuf: bigint): string {
  const off = tryOffset(k.types, 'dma_buf', 'name');
  if (dmabuf === 0n || off === undefined) return '';
  const p = readPtr(k, dmabuf + BigInt(off));
  const b = p ? readCBytes(k, p, 32) : undefined;
  return b?.toString('latin1') ?? '';
}
