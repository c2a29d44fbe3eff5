// Fileless execution (T1620) and executables deleted after start (T1070.004): a process whose executable
// (mm->exe_file) is a memfd — code that never touched a file system (memfd_create + fexecve) — or a file
// unlinked since it started (a dropper that removed itself), and executable mappings of memfd files in any
// process (a payload loaded from a memfd into a normal process).
// The exe check is cheap per process (is the exe's dentry unhashed?); only unlinked ones are described.
// Mappings are found from the memfds' side: every inode of the kernel's internal shmem mount (shm_mnt,
// where memfd_create puts its files) and the VMAs mapping it (its address_space's i_mmap tree), so the
// cost follows the number of shmem objects, not processes × mappings. memfds made with MFD_HUGETLB live
// on hugetlbfs and are not covered; a deleted ordinary file mapped executable (a removed .so) neither.
// A deleted exe outside temporary directories is reported at medium severity: a package upgrade leaves
// running daemons in that state until they restart.
import type { Kernel } from '../../os/linux/kernel.js';
import { describeFile } from '../../os/linux/fs/files.js';
import { offset, readPtr, readStruct, tryOffset, u64, type KernelReader } from '../../os/linux/fs/reader.js';
import { VM_EXEC, vmPerms } from '../../os/linux/mm/maps.js';
import type { Task } from '../../os/linux/tasks/index.js';
import { listHeadEntries, rbTreeNodes } from '../../os/linux/walk.js';
import { definePolicy, stringListOption } from '../policy.js';
import type { Finding } from '../types.js';
import {
  collectFresh,
  exeFacts,
  exeFileOf,
  hex,
  leadersOf,
  sweepTasks,
  type ExeFacts,
  type ProcessKernel,
  type SweepKernel,
} from './process-facts.js';

export type FilelessKernel = ProcessKernel & SweepKernel;

/** Inodes of the shmem mount visited at most (memfds, SysV segments, shared anonymous mappings). */
export const MAX_SHMEM_INODES = 200_000;
/** Mappings of shmem inodes examined at most, over all inodes. */
export const MAX_SHMEM_VMAS = 100_000;
/** Where droppers put what they run before deleting it. */
export const TEMP_DIRS: readonly string[] = ['/tmp/', '/var/tmp/', '/dev/shm/', '/run/shm/', '/run/user/'];

export interface ExecMapping {
  vma: bigint;
  mm: bigint;
  start: bigint;
  end: bigint;
  perms: string;
  /** The memfd's name (after "memfd:"). */
  memfd: string;
  path: string;
}

export interface FilelessProcess {
  task: Task;
  exe: ExeFacts;
}

export interface FilelessFacts {
  /** Processes whose executable is unlinked (memfds included). */
  unlinkedExe: FilelessProcess[];
  /** Executable mappings of memfd files, with the process owning the mm (null when none is on the task list). */
  memfdMappings: { mapping: ExecMapping; task: Task | null }[];
}

/**
 * The exe's dentry is unhashed: deleted, or never linked (memfds: a pseudo dentry that d_path names
 * "/memfd:NAME (deleted)"). Hashed dentries are live files and need no further look.
 */
function exeUnhashed(k: KernelReader, file: bigint): boolean | undefined {
  const t = k.types;
  const dentry = readPtr(k, file + BigInt(offset(t, 'file', 'f_path') + offset(t, 'path', 'dentry')));
  if (!dentry) return undefined;
  const d = readStruct(k, 'dentry', dentry);
  if (!d) return undefined;
  return u64(d, offset(t, 'dentry', 'd_hash') + offset(t, 'hlist_bl_node', 'pprev')) === 0n;
}

/** Executable VMAs of memfd files, from the shmem mount's inodes. */
export function memfdExecMappings(k: KernelReader): ExecMapping[] {
  const t = k.types;
  const shmMnt = k.symbols.address('shm_mnt');
  if (shmMnt === undefined) {
    k.issues.add('memfd', 'malformed', 'kernel symbol shm_mnt not found');
    return [];
  }
  const mnt = readPtr(k, shmMnt);
  const sb = mnt ? readPtr(k, mnt + BigInt(offset(t, 'vfsmount', 'mnt_sb'))) : undefined;
  if (!sb) {
    k.issues.add('memfd', 'unmapped', `shm_mnt ${hex(mnt ?? 0n)} or its super block is not readable`);
    return [];
  }
  const read = (va: bigint) => readPtr(k, va);
  const sbList = BigInt(offset(t, 'inode', 'i_sb_list'));
  const iMapping = BigInt(offset(t, 'inode', 'i_mapping'));
  const iMmap = BigInt(offset(t, 'address_space', 'i_mmap'));
  const sharedRb = BigInt(offset(t, 'vm_area_struct', 'shared.rb'));
  const rb = { left: offset(t, 'rb_node', 'rb_left'), right: offset(t, 'rb_node', 'rb_right') };
  const V = {
    start: offset(t, 'vm_area_struct', 'vm_start'),
    end: offset(t, 'vm_area_struct', 'vm_end'),
    flags: offset(t, 'vm_area_struct', 'vm_flags'),
    mm: offset(t, 'vm_area_struct', 'vm_mm'),
    file: offset(t, 'vm_area_struct', 'vm_file'),
  };
  const span = Math.max(...Object.values(V)) + 8;
  let vmaBudget = MAX_SHMEM_VMAS;
  const out: ExecMapping[] = [];
  const head = sb + BigInt(offset(t, 'super_block', 's_inodes'));
  for (const node of listHeadEntries(read, head, {
    walker: 'memfd',
    max: MAX_SHMEM_INODES,
    issues: k.issues,
  })) {
    const inode = node - sbList;
    const mapping = read(inode + iMapping);
    if (!mapping) continue;
    const root = read(mapping + iMmap);
    if (!root) continue; // nothing maps it
    for (const n of rbTreeNodes(read, mapping + iMmap, rb, {
      walker: 'memfd',
      max: vmaBudget,
      issues: k.issues,
    })) {
      vmaBudget--;
      const vma = n - sharedRb;
      const b = k.space.tryRead(vma, span);
      if (!b) {
        k.issues.add('memfd', 'unmapped', `VMA ${hex(vma)} mapping inode ${hex(inode)} is not readable`);
        continue;
      }
      const flags = b.readBigUInt64LE(V.flags);
      const file = b.readBigUInt64LE(V.file);
      if (!(flags & VM_EXEC) || file === 0n) continue;
      const d = describeFile(k, file);
      if (d.kind !== 'memfd') continue;
      out.push({
        vma,
        mm: b.readBigUInt64LE(V.mm),
        start: b.readBigUInt64LE(V.start),
        end: b.readBigUInt64LE(V.end),
        perms: vmPerms(flags),
        memfd: d.detail ?? '',
        path: d.path,
      });
    }
    if (vmaBudget <= 0) {
      k.issues.add('memfd', 'bound', `stopped at the bound of ${MAX_SHMEM_VMAS} shmem mappings`);
      break;
    }
  }
  return out;
}

export function collectFileless(k: FilelessKernel, sweep: number): FilelessFacts {
  const leaders = leadersOf(sweepTasks(k, sweep)).filter((t) => !t.kthread && t.mm !== null);
  const unlinkedExe: FilelessProcess[] = [];
  for (const t of leaders) {
    const file = exeFileOf(k, t);
    if (!file || exeUnhashed(k, file) === false) continue;
    const exe = exeFacts(k, t);
    if (exe?.deleted) unlinkedExe.push({ task: t, exe });
  }
  const byMm = new Map(leaders.map((t) => [t.mm!, t]));
  const memfdMappings =
    tryOffset(k.types, 'vm_area_struct', 'shared.rb') === undefined
      ? []
      : memfdExecMappings(k).map((mapping) => ({ mapping, task: byMm.get(mapping.mm) ?? null }));
  return { unlinkedExe, memfdMappings };
}

export interface FilelessOptions {
  /** memfd names whose executable mappings are expected (JIT double mapping, e.g. .NET's "doublemapper"). */
  allowMemfdNames: readonly string[];
}

const inTempDir = (path: string) => TEMP_DIRS.some((d) => path.startsWith(d)) || /\/\.[^/]*$/.test(path);

const mappingEvidence = (m: ExecMapping) => ({
  start: hex(m.start),
  end: hex(m.end),
  perms: m.perms,
  path: m.path,
  vma: hex(m.vma),
});

export function filelessFindings(f: FilelessFacts, o: FilelessOptions): Finding[] {
  const out: Finding[] = [];
  const mapsOf = (mm: bigint | null) =>
    f.memfdMappings.filter((m) => m.mapping.mm === mm).map((m) => m.mapping);
  const covered = new Set<bigint>();
  for (const { task: t, exe } of f.unlinkedExe) {
    const base = {
      pid: t.tgid,
      comm: t.comm,
      ppid: t.ppid,
      uid: t.cred?.uid ?? null,
      exe: exe.path,
      ...(exe.inode !== undefined ? { inode: exe.inode } : {}),
      ...(exe.fsType !== undefined ? { fsType: exe.fsType } : {}),
      task: hex(t.address),
    };
    if (exe.memfd !== undefined) {
      const maps = mapsOf(t.mm);
      for (const m of maps) covered.add(m.vma);
      out.push({
        key: `memfd-exe:pid=${t.tgid}:start=${t.startTimeNs ?? '?'}`,
        severity: 'high',
        technique: 'T1620',
        summary: `process ${t.tgid} (${t.comm}) runs from memfd "${exe.memfd}": no file on disk (fileless execution)`,
        evidence: { ...base, memfd: exe.memfd, mappings: maps.map(mappingEvidence) },
      });
      continue;
    }
    const temp = inTempDir(exe.path.replace(/ \(deleted\)$/, ''));
    out.push({
      key: `deleted-exe:pid=${t.tgid}:start=${t.startTimeNs ?? '?'}`,
      severity: temp ? 'high' : 'medium',
      technique: 'T1070.004',
      summary:
        `process ${t.tgid} (${t.comm}) runs from a deleted file ${exe.path}` +
        (temp ? '' : ' (a package upgrade also does this until the program restarts)'),
      evidence: base,
    });
  }
  for (const { mapping: m, task: t } of f.memfdMappings) {
    if (covered.has(m.vma) || o.allowMemfdNames.includes(m.memfd)) continue;
    out.push({
      key: `memfd-map:${t ? `pid=${t.tgid}:start=${t.startTimeNs ?? '?'}` : `mm=${hex(m.mm)}`}:${hex(m.start)}`,
      severity: t ? 'high' : 'critical',
      technique: 'T1620',
      summary: t
        ? `process ${t.tgid} (${t.comm}) has memfd "${m.memfd}" mapped executable at ${hex(m.start)}`
        : `memfd "${m.memfd}" is mapped executable by an mm no listed process owns (${hex(m.mm)})`,
      evidence: {
        ...(t
          ? { pid: t.tgid, comm: t.comm, ppid: t.ppid, uid: t.cred?.uid ?? null, task: hex(t.address) }
          : {}),
        mm: hex(m.mm),
        memfd: m.memfd,
        mapping: mappingEvidence(m),
      },
    });
  }
  return out;
}

export const filelessPolicy = definePolicy<Kernel>({
  id: 'fileless',
  title: 'Fileless and deleted executables',
  description:
    'A process running from a memfd (memfd_create + fexecve) or from a file deleted after it started, and ' +
    'executable memfd mappings in any process (option `allowMemfdNames` for JITs that double-map code).',
  technique: 'T1620',
  severity: 'high',
  requires: ['kernel'],
  poll(ctx) {
    const k = ctx.requireKernel();
    const o = { allowMemfdNames: stringListOption(ctx, 'allowMemfdNames', []) };
    return filelessFindings(
      collectFresh(ctx, k, () => collectFileless(k, ctx.sweep)),
      o,
    );
  },
});
