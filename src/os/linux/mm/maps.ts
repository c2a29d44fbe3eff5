// A process's memory maps the way /proc/PID/maps shows them (fs/proc/task_mmu.c show_map_vma): every
// VMA of mm->mm_mt (the maple tree, 6.1+) or of the mm->mmap list (older kernels, chosen by BTF), then
// the x86 vsyscall gate VMA. Per VMA: range, rwx and s/p from vm_flags, file offset, device and inode of
// the mapped file, and the name: the file's d_path, a special mapping's name ([vdso], [vvar]), [heap],
// [stack] or [anon:NAME]. The tree's pivots and each VMA's own range must agree: a mismatch is noted.
import { resolveFilePath } from '../fs/path.js';
import { formatDev } from '../fs/files.js';
import {
  hex,
  layout,
  offset,
  readCBytes,
  readPtr,
  readStruct,
  symbolAddress,
  tryOffset,
  u64,
  type KernelReader,
} from '../fs/reader.js';
import { sanitize } from '../../../util/sanitize.js';
import type { TypeRegistry } from '../btf/registry.js';
import { mapleEntries } from './maple.js';

/** include/linux/mm.h: these VM_* bits are macros (not in BTF) and have not moved since 2.6. */
export const VM_READ = 0x1n;
export const VM_WRITE = 0x2n;
export const VM_EXEC = 0x4n;
export const VM_SHARED = 0x8n;
export const VM_MAYSHARE = 0x80n;
/** Set by mprotect when a private map becomes writable (it is never cleared). */
export const VM_ACCOUNT = 0x100000n;
/** I/O and raw-PFN maps ([vvar], device memory): not RAM. */
export const VM_IO = 0x4000n;
export const VM_PFNMAP = 0x400n;
/** vm.max_map_count defaults to 65530; a guest claiming more than this is truncated. */
export const MAX_VMAS = 1 << 17;
const PAGE_SHIFT = 12n;
/** arch/x86/include/asm/mmu.h: MM_CONTEXT_HAS_VSYSCALL is bit 1 of mm->context.flags. */
const MM_CONTEXT_HAS_VSYSCALL = 2n;
/** The vsyscall_mode enum (not in BTF) is { EMULATE, XONLY, NONE } (earlier { EMULATE, NATIVE, NONE }). */
const VSYSCALL_NONE = 2;

export interface MemoryMap {
  /** vm_area_struct address (the gate VMA's is the kernel's gate_vma). */
  readonly vma: bigint;
  readonly start: bigint;
  readonly end: bigint;
  readonly flags: bigint;
  /** "r-xp" as /proc/PID/maps prints it (s when VM_MAYSHARE). */
  readonly perms: string;
  /** File offset in bytes (vm_pgoff << 12; 0 for anonymous maps, like the kernel prints). */
  readonly offset: bigint;
  /** "MAJ:MIN" of the file's file system, "00:00" when anonymous. */
  readonly dev: string;
  readonly inode: bigint;
  /** The path or label shown in the last column ('' for plain anonymous memory). */
  readonly path: string;
  /** struct file mapped, if any. */
  readonly file?: bigint;
  readonly deleted?: boolean;
  /** [heap], [stack], [vdso], [vvar], [vsyscall], [anon:…]: why the path column is a label. */
  readonly label?: string;
}

const WALKER = 'maps';

const vmaLayout = (types: TypeRegistry) =>
  layout(types, 'maps.vma', (t) => ({
    start: offset(t, 'vm_area_struct', 'vm_start'),
    end: offset(t, 'vm_area_struct', 'vm_end'),
    flags: offset(t, 'vm_area_struct', 'vm_flags'),
    file: offset(t, 'vm_area_struct', 'vm_file'),
    pgoff: offset(t, 'vm_area_struct', 'vm_pgoff'),
    ops: offset(t, 'vm_area_struct', 'vm_ops'),
    priv: offset(t, 'vm_area_struct', 'vm_private_data'),
    anonName: tryOffset(t, 'vm_area_struct', 'anon_name'),
    anonNameName: tryOffset(t, 'anon_vma_name', 'name'),
  }));

/** vm_flags → "rwxp". */
export function vmPerms(flags: bigint): string {
  return (
    (flags & VM_READ ? 'r' : '-') +
    (flags & VM_WRITE ? 'w' : '-') +
    (flags & VM_EXEC ? 'x' : '-') +
    (flags & VM_MAYSHARE ? 's' : 'p')
  );
}

/** Memory maps of a task; [] for tasks without an mm (kernel threads, zombies). */
export function taskMaps(k: KernelReader, taskVa: bigint): MemoryMap[] {
  const mm = readPtr(k, taskVa + BigInt(offset(k.types, 'task_struct', 'mm')));
  if (mm === undefined) {
    k.issues.add(WALKER, 'unmapped', `task ${hex(taskVa)} is not readable`);
    return [];
  }
  return mm === 0n ? [] : memoryMaps(k, mm);
}

interface MmFacts {
  readonly startBrk: bigint;
  readonly brk: bigint;
  readonly startStack: bigint;
  readonly contextFlags: bigint;
}

/** VMA addresses of an mm in address order, from the maple tree or the older linked list. */
export function vmaAddresses(k: KernelReader, mmVa: bigint): bigint[] {
  const t = k.types;
  const out: bigint[] = [];
  const mt = tryOffset(t, 'mm_struct', 'mm_mt');
  if (mt !== undefined) {
    const { start: startOff, end: endOff } = vmaLayout(t);
    let prevEnd = 0n;
    for (const e of mapleEntries(k, mmVa + BigInt(mt), { walker: WALKER, maxEntries: MAX_VMAS })) {
      const b = k.space.tryRead(e.entry, Math.max(startOff, endOff) + 8);
      if (!b) {
        k.issues.add(WALKER, 'unmapped', `VMA ${hex(e.entry)} of mm ${hex(mmVa)} is not readable`);
        continue;
      }
      const start = b.readBigUInt64LE(startOff);
      const end = b.readBigUInt64LE(endOff);
      if (start !== e.first || end - 1n !== e.last || start < prevEnd) {
        k.issues.add(
          WALKER,
          'malformed',
          `VMA ${hex(e.entry)} spans ${hex(start)}-${hex(end)} but the tree files it at ${hex(e.first)}-${hex(e.last + 1n)}`,
        );
      }
      prevEnd = end;
      out.push(e.entry);
    }
    return out;
  }
  // Before 6.1: a NULL-terminated list from mm->mmap through vm_next.
  const next = offset(t, 'vm_area_struct', 'vm_next');
  const seen = new Set<bigint>();
  let vma = readPtr(k, mmVa + BigInt(offset(t, 'mm_struct', 'mmap')));
  while (vma) {
    if (seen.has(vma)) {
      k.issues.add(WALKER, 'cycle', `VMA list of mm ${hex(mmVa)} loops back to ${hex(vma)}`);
      break;
    }
    if (out.length >= MAX_VMAS) {
      k.issues.add(WALKER, 'bound', `mm ${hex(mmVa)} has more than ${MAX_VMAS} VMAs`);
      break;
    }
    seen.add(vma);
    out.push(vma);
    vma = readPtr(k, vma + BigInt(next));
  }
  if (vma === undefined) k.issues.add(WALKER, 'unmapped', `VMA list of mm ${hex(mmVa)} is not readable`);
  return out;
}

/** Memory maps of an mm_struct, like /proc/PID/maps. */
export function memoryMaps(k: KernelReader, mmVa: bigint): MemoryMap[] {
  const t = k.types;
  const mm = readStruct(k, 'mm_struct', mmVa);
  if (!mm) {
    k.issues.add(WALKER, 'unmapped', `mm ${hex(mmVa)} is not readable`);
    return [];
  }
  const ctxFlags = tryOffset(t, 'mm_struct', 'context.flags');
  const facts: MmFacts = {
    startBrk: u64(mm, offset(t, 'mm_struct', 'start_brk')),
    brk: u64(mm, offset(t, 'mm_struct', 'brk')),
    startStack: u64(mm, offset(t, 'mm_struct', 'start_stack')),
    contextFlags: ctxFlags === undefined ? 0n : BigInt(mm.readUInt16LE(ctxFlags)),
  };
  const files: FileCache = new Map();
  const out = vmaAddresses(k, mmVa).map((va) => describeVma(k, va, facts, files, true));
  const gate = gateVma(k, facts);
  if (gate !== undefined) out.push(describeVma(k, gate, facts, files, false));
  return out;
}

/** The vsyscall page's VMA, when this mm can see it (get_gate_vma). */
function gateVma(k: KernelReader, facts: MmFacts): bigint | undefined {
  const gate = symbolAddress(k, 'gate_vma');
  if (gate === undefined) return undefined;
  const modeVa = symbolAddress(k, 'vsyscall_mode');
  const mode = modeVa === undefined ? undefined : k.space.tryRead(modeVa, 4)?.readUInt32LE(0);
  if (mode === VSYSCALL_NONE) return undefined;
  if (tryOffset(k.types, 'mm_struct', 'context.flags') !== undefined) {
    if (!(facts.contextFlags & MM_CONTEXT_HAS_VSYSCALL)) return undefined;
  }
  return gate;
}

/** What a mapped struct file shows, per file: an ELF's segments all map the same struct file. */
type FileCache = Map<bigint, { dev: number; ino: bigint; path: string; deleted: boolean }>;

function describeVma(k: KernelReader, va: bigint, mm: MmFacts, files: FileCache, inMm: boolean): MemoryMap {
  const L = vmaLayout(k.types);
  const b = readStruct(k, 'vm_area_struct', va);
  if (!b) {
    k.issues.add(WALKER, 'unmapped', `VMA ${hex(va)} is not readable`);
    return {
      vma: va,
      start: 0n,
      end: 0n,
      flags: 0n,
      perms: '----',
      offset: 0n,
      dev: '00:00',
      inode: 0n,
      path: '…[unreadable]',
    };
  }
  const start = u64(b, L.start);
  const end = u64(b, L.end);
  const flags = u64(b, L.flags);
  const file = u64(b, L.file);
  const base = { vma: va, start, end, flags, perms: vmPerms(flags) };

  if (file !== 0n) {
    const pgoff = u64(b, L.pgoff);
    let f = files.get(file);
    if (!f) {
      const resolved = resolveFilePath(k, file);
      f = { ...fileInode(k, file), path: resolved.path, deleted: resolved.deleted };
      files.set(file, f);
    }
    return {
      ...base,
      offset: (pgoff << PAGE_SHIFT) & ((1n << 64n) - 1n),
      dev: formatDev(f.dev),
      inode: f.ino,
      path: f.path,
      file,
      ...(f.deleted ? { deleted: true } : {}),
    };
  }
  const anon = { ...base, offset: 0n, dev: '00:00', inode: 0n };
  const label = vmaLabel(k, b, start, end, mm, inMm);
  return label ? { ...anon, path: label, label } : { ...anon, path: '' };
}

/** The name show_map_vma prints for a VMA without a file. */
function vmaLabel(
  k: KernelReader,
  b: Buffer,
  start: bigint,
  end: bigint,
  mm: MmFacts,
  inMm: boolean,
): string | undefined {
  const L = vmaLayout(k.types);
  const ops = u64(b, L.ops);
  if (ops !== 0n) {
    const name = opsName(k, ops, u64(b, L.priv));
    if (name !== undefined) return name;
  }
  if (!inMm) return undefined;
  if (start <= mm.brk && end >= mm.startBrk) return '[heap]';
  if (start <= mm.startStack && end >= mm.startStack) return '[stack]';
  const anonOff = L.anonName;
  const nameOff = L.anonNameName;
  if (anonOff !== undefined && nameOff !== undefined) {
    const an = u64(b, anonOff);
    const bytes = an ? readCBytes(k, an + BigInt(nameOff), 256) : undefined;
    if (bytes) return sanitize(`[anon:${bytes.toString('latin1')}]`, 300);
  }
  return undefined;
}

/** vm_ops->name() for the ops vigil knows: special mappings ([vdso], [vvar], [uprobes]) and the gate VMA. */
function opsName(k: KernelReader, ops: bigint, priv: bigint): string | undefined {
  if (ops === symbolAddress(k, 'special_mapping_vmops')) {
    const name = readPtr(k, priv + BigInt(offset(k.types, 'vm_special_mapping', 'name')));
    const bytes = name ? readCBytes(k, name, 64) : undefined;
    return bytes ? sanitize(bytes.toString('latin1'), 64) : undefined;
  }
  if (ops === symbolAddress(k, 'gate_vma_ops')) return '[vsyscall]';
  return undefined;
}

function fileInode(k: KernelReader, file: bigint): { dev: number; ino: bigint } {
  const t = k.types;
  const inode = readPtr(k, file + BigInt(offset(t, 'file', 'f_inode')));
  const b = inode
    ? k.space.tryRead(inode, Math.max(offset(t, 'inode', 'i_ino'), offset(t, 'inode', 'i_sb')) + 8)
    : undefined;
  if (!b) {
    k.issues.add(WALKER, 'unmapped', `inode of mapped file ${hex(file)} is not readable`);
    return { dev: 0, ino: 0n };
  }
  const ino = b.readBigUInt64LE(offset(t, 'inode', 'i_ino'));
  const sb = b.readBigUInt64LE(offset(t, 'inode', 'i_sb'));
  const d = k.space.tryRead(sb + BigInt(offset(t, 'super_block', 's_dev')), 4);
  return { dev: d ? d.readUInt32LE(0) : 0, ino };
}

/** One line of /proc/PID/maps. */
export function formatMapsLine(m: MemoryMap): string {
  const h = (v: bigint, w: number): string => v.toString(16).padStart(w, '0');
  const head = `${h(m.start, 8)}-${h(m.end, 8)} ${m.perms} ${h(m.offset, 8)} ${m.dev} ${m.inode}`;
  // seq_pad pads the header to 73 columns (25 + sizeof(void *) * 6 - 1) before a name.
  return m.path ? head.padEnd(72, ' ') + ' ' + m.path : head + ' ';
}
