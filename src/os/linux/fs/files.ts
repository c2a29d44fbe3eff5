// A process's open files, the way /proc/PID/fd lists them: task->files->fdt (struct fdtable: max_fds
// and the fd array), every non-NULL slot is an open file (the kernel's task_lookup_next_fd_rcu). The
// open_fds bitmap is read beside it: a file installed in the array with its bit clear is an anomaly
// worth a note. max_fds comes from the guest, so it is capped before anything is read or allocated.
import { resolveFilePath, fsTypeName } from './path.js';
import type { TypeRegistry } from '../btf/registry.js';
import {
  hex,
  layout,
  offset,
  readPtr,
  readStruct,
  symbolAddress,
  u16,
  u32,
  u64,
  type KernelReader,
} from './reader.js';

/** Upper bound on fd slots examined per process (the kernel's default nr_open is 1 Mi; sysadmins rarely go past 64 Ki). */
export const MAX_FDS = 65536;

export type FileKind =
  | 'regular'
  | 'directory'
  | 'symlink'
  | 'char'
  | 'block'
  | 'fifo'
  | 'pipe'
  | 'socket'
  | 'anon_inode'
  | 'memfd'
  | 'unknown';

export interface OpenFile {
  readonly fd: number;
  /** struct file address. */
  readonly file: bigint;
  readonly kind: FileKind;
  /** anon_inode: what it is ("eventfd", "eventpoll", "timerfd"…); memfd: its name. */
  readonly detail?: string;
  /** What readlink(/proc/PID/fd/N) shows (sanitised). */
  readonly path: string;
  readonly deleted: boolean;
  /** Inode number (i_ino), undefined when the inode is unreadable. */
  readonly inode?: bigint;
  /** i_mode (file type and permission bits). */
  readonly imode?: number;
  /** Device of the file system ("MAJ:MIN" of sb->s_dev, like /proc/PID/maps). */
  readonly dev?: string;
  /** Device number a char/block device node refers to (i_rdev, "MAJ:MIN"). */
  readonly rdev?: string;
  /** File system type name ("ext4", "sockfs", "pipefs"…). */
  readonly fsType?: string;
  /** f_flags (O_* bits, as /proc/PID/fdinfo prints in octal). */
  readonly flags: number;
  /** f_mode (FMODE_* bits: 1 read, 2 write). */
  readonly mode: number;
  /** f_pos. */
  readonly pos: bigint;
  /** struct socket and its struct sock, for sockets. */
  readonly socket?: bigint;
  readonly sock?: bigint;
  /** The fd is in the array but its open_fds bit is clear. */
  readonly notInBitmap?: boolean;
}

const WALKER = 'files';

const fileLayout = (types: TypeRegistry) =>
  layout(types, 'files.file', (t) => ({
    flags: offset(t, 'file', 'f_flags'),
    mode: offset(t, 'file', 'f_mode'),
    pos: offset(t, 'file', 'f_pos'),
    inode: offset(t, 'file', 'f_inode'),
    imode: offset(t, 'inode', 'i_mode'),
    ino: offset(t, 'inode', 'i_ino'),
    rdev: offset(t, 'inode', 'i_rdev'),
    sb: offset(t, 'inode', 'i_sb'),
    sDev: offset(t, 'super_block', 's_dev'),
  }));
const S_IFMT = 0o170000;
const TYPE_KIND: Readonly<Record<number, FileKind>> = {
  0o140000: 'socket',
  0o120000: 'symlink',
  0o100000: 'regular',
  0o060000: 'block',
  0o040000: 'directory',
  0o020000: 'char',
  0o010000: 'fifo',
};

/** "MAJ:MIN" of a kernel dev_t (MINORBITS 20), as /proc/PID/maps prints it (hex, two digits at least). */
export function formatDev(dev: number): string {
  const major = dev >>> 20;
  const minor = dev & 0xfffff;
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

/** The struct sock of a socket file (file->private_data is its struct socket when f_op is socket_file_ops). */
export function socketOfFile(k: KernelReader, fileVa: bigint): bigint | undefined {
  return socketPair(k, fileVa)?.sock;
}

function socketPair(k: KernelReader, fileVa: bigint): { socket: bigint; sock: bigint } | undefined {
  const ops = symbolAddress(k, 'socket_file_ops');
  if (ops === undefined) return undefined;
  const t = k.types;
  const fop = readPtr(k, fileVa + BigInt(offset(t, 'file', 'f_op')));
  if (fop !== ops) return undefined;
  const socket = readPtr(k, fileVa + BigInt(offset(t, 'file', 'private_data')));
  if (!socket) return undefined;
  const sock = readPtr(k, socket + BigInt(offset(t, 'socket', 'sk')));
  return sock ? { socket, sock } : undefined;
}

/** Open files of a task (task_struct address); [] for tasks without a files_struct (exited, kernel threads). */
export function openFiles(k: KernelReader, taskVa: bigint): OpenFile[] {
  const files = readPtr(k, taskVa + BigInt(offset(k.types, 'task_struct', 'files')));
  if (files === undefined) {
    k.issues.add(WALKER, 'unmapped', `task ${hex(taskVa)} is not readable`);
    return [];
  }
  return files === 0n ? [] : filesOf(k, files);
}

/** Open files of a files_struct. */
export function filesOf(k: KernelReader, filesVa: bigint): OpenFile[] {
  const t = k.types;
  const fdtVa = readPtr(k, filesVa + BigInt(offset(t, 'files_struct', 'fdt')));
  const fdt = fdtVa ? readStruct(k, 'fdtable', fdtVa) : undefined;
  if (!fdt) {
    k.issues.add(WALKER, 'unmapped', `fdtable of files_struct ${hex(filesVa)} is not readable`);
    return [];
  }
  let max = u32(fdt, offset(t, 'fdtable', 'max_fds'));
  if (max > MAX_FDS) {
    k.issues.add(WALKER, 'bound', `fdtable ${hex(fdtVa!)} claims ${max} fds: only ${MAX_FDS} read`);
    max = MAX_FDS;
  }
  const fdArray = u64(fdt, offset(t, 'fdtable', 'fd'));
  const openFds = u64(fdt, offset(t, 'fdtable', 'open_fds'));
  const slots = readSlots(k, fdArray, max);
  if (!slots) return [];
  const bitmap = openFds ? k.space.tryRead(openFds, Math.ceil(max / 64) * 8) : undefined;
  if (!bitmap) k.issues.add(WALKER, 'unmapped', `open_fds bitmap ${hex(openFds)} is not readable`);

  const sbCache = new Map<bigint, { fsType?: string; dev: number }>();
  const out: OpenFile[] = [];
  for (let fd = 0; fd < max; fd++) {
    const file = slots.readBigUInt64LE(fd * 8);
    if (file === 0n) continue;
    const inBitmap = !bitmap || ((bitmap[fd >> 3]! >> (fd & 7)) & 1) === 1;
    if (!inBitmap) k.issues.add(WALKER, 'malformed', `fd ${fd} is installed but not in open_fds`);
    out.push({ ...describeFile(k, file, sbCache), fd, ...(inBitmap ? {} : { notInBitmap: true }) });
  }
  return out;
}

/** The fd array, read at once (up to 512 KiB at the cap) or slot by slot when part of it is unmapped. */
function readSlots(k: KernelReader, fdArray: bigint, max: number): Buffer | undefined {
  if (max === 0) return Buffer.alloc(0);
  const whole = fdArray ? k.space.tryRead(fdArray, max * 8) : undefined;
  if (whole) return whole;
  k.issues.add(WALKER, 'unmapped', `fd array ${hex(fdArray)} (${max} slots) is not fully readable`);
  if (!fdArray) return undefined;
  const out = Buffer.alloc(max * 8);
  for (let i = 0; i < max; i++) {
    const p = readPtr(k, fdArray + BigInt(i * 8));
    if (p !== undefined) out.writeBigUInt64LE(p, i * 8);
  }
  return out;
}

type FileFacts = Omit<OpenFile, 'fd' | 'notInBitmap'>;

/** Everything about one struct file (without its fd number). */
export function describeFile(
  k: KernelReader,
  fileVa: bigint,
  sbCache = new Map<bigint, { fsType?: string; dev: number }>(),
): FileFacts {
  const L = fileLayout(k.types);
  const b = readStruct(k, 'file', fileVa);
  if (!b) {
    k.issues.add(WALKER, 'unmapped', `struct file ${hex(fileVa)} is not readable`);
    return {
      file: fileVa,
      kind: 'unknown',
      path: '…[unreadable]',
      deleted: false,
      flags: 0,
      mode: 0,
      pos: 0n,
    };
  }
  const flags = u32(b, L.flags);
  const mode = u32(b, L.mode);
  const pos = u64(b, L.pos);
  const inodeVa = u64(b, L.inode);
  const resolved = resolveFilePath(k, fileVa);
  const inode = inodeVa ? readStruct(k, 'inode', inodeVa) : undefined;
  if (!inode)
    k.issues.add(WALKER, 'unmapped', `inode ${hex(inodeVa)} of file ${hex(fileVa)} is not readable`);

  let imode: number | undefined;
  let ino: bigint | undefined;
  let rdev: number | undefined;
  let sbInfo: { fsType?: string; dev: number } | undefined;
  if (inode) {
    imode = u16(inode, L.imode);
    ino = u64(inode, L.ino);
    rdev = u32(inode, L.rdev);
    const sb = u64(inode, L.sb);
    sbInfo = sbCache.get(sb);
    if (!sbInfo && sb !== 0n) {
      const dev = k.space.tryRead(sb + BigInt(L.sDev), 4);
      const fsType = fsTypeName(k, sb);
      sbInfo = { dev: dev ? dev.readUInt32LE(0) : 0, ...(fsType ? { fsType } : {}) };
      sbCache.set(sb, sbInfo);
    }
  }
  const fsType = sbInfo?.fsType;
  const { kind, detail } = classify(imode, fsType, resolved.path, resolved.pseudo);
  const sockets = kind === 'socket' ? socketPair(k, fileVa) : undefined;
  return {
    file: fileVa,
    kind,
    ...(detail !== undefined ? { detail } : {}),
    path: resolved.path,
    deleted: resolved.deleted,
    ...(ino !== undefined ? { inode: ino } : {}),
    ...(imode !== undefined ? { imode } : {}),
    ...(sbInfo ? { dev: formatDev(sbInfo.dev) } : {}),
    ...((kind === 'char' || kind === 'block') && rdev !== undefined ? { rdev: formatDev(rdev) } : {}),
    ...(fsType ? { fsType } : {}),
    flags,
    mode,
    pos,
    ...(sockets ?? {}),
  };
}

const SHMEM_FS = new Set(['tmpfs', 'hugetlbfs', 'shmem', 'ramfs']);

function classify(
  imode: number | undefined,
  fsType: string | undefined,
  path: string,
  pseudo: string | undefined,
): { kind: FileKind; detail?: string } {
  if (fsType === 'anon_inodefs' || pseudo === 'anon_inodefs') {
    const m = /^anon_inode:\[?([^\]]*)\]?$/.exec(path);
    return { kind: 'anon_inode', ...(m ? { detail: m[1] } : {}) };
  }
  if (fsType === 'sockfs' || pseudo === 'sockfs') return { kind: 'socket' };
  if (fsType === 'pipefs' || pseudo === 'pipefs') return { kind: 'pipe' };
  const kind = imode === undefined ? 'unknown' : (TYPE_KIND[imode & S_IFMT] ?? 'unknown');
  if (kind === 'regular' && fsType && SHMEM_FS.has(fsType)) {
    // memfd_create: a shmem file named "memfd:NAME" on the kernel's internal mount (never linked).
    const m = /^\/memfd:(.*?)(?: \(deleted\))?$/.exec(path);
    if (m) return { kind: 'memfd', detail: m[1]! };
  }
  return { kind };
}

/** The l??x------ permissions ls -l shows on /proc/PID/fd/N (from f_mode: read → r-x, write → -wx). */
export function fdLinkPermissions(mode: number): string {
  const r = (mode & 1) !== 0;
  const w = (mode & 2) !== 0;
  return `l${r ? 'r' : '-'}${w ? 'w' : '-'}${r || w ? 'x' : '-'}------`;
}
