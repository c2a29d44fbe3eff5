import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Task } from '../../os/linux/tasks/index.js';
import { isVigilError } from '../../util/errors.js';
import { filelessFindings, memfdExecMappings, type ExecMapping, type FilelessFacts } from './fileless.js';
import { WalkKernel } from './process-testkit.js';

const proc = (pid: number, comm: string, mm: bigint): Task => ({
  address: 0xffff888005000000n + BigInt(pid) * 0x4000n,
  pid,
  tgid: pid,
  ppid: 1,
  comm,
  name: comm,
  state: 'S',
  stateValue: 1,
  exitState: 0,
  flags: 0,
  kthread: false,
  cred: null,
  startTimeNs: pid * 10,
  startBoottimeNs: pid * 10,
  mm,
  realParent: 0n,
  groupLeader: 0n,
  signal: 0n,
  notes: [],
});

const mapping = (mm: bigint, memfd: string, start = 0x401000n): ExecMapping => ({
  vma: 0xffff888006000000n + start,
  mm,
  start,
  end: start + 0x7b000n,
  perms: 'r-xp',
  memfd,
  path: `/memfd:${memfd} (deleted)`,
});

const none = { allowMemfdNames: [] };

describe('fileless findings', () => {
  it('reports a process running from a memfd, with its executable mapping', () => {
    const mm = 0xffff888007000000n;
    const t = proc(122, 'fileless', mm);
    const facts: FilelessFacts = {
      unlinkedExe: [
        {
          task: t,
          exe: {
            file: 1n,
            path: '/memfd:vigil-payload (deleted)',
            deleted: true,
            memfd: 'vigil-payload',
            fsType: 'tmpfs',
          },
        },
      ],
      memfdMappings: [{ mapping: mapping(mm, 'vigil-payload'), task: t }],
    };
    const f = filelessFindings(facts, none);
    assert.equal(f.length, 1, 'the mapping is part of the exe finding, not another');
    assert.equal(f[0]!.key, 'memfd-exe:pid=122:start=1220');
    assert.equal(f[0]!.technique, 'T1620');
    assert.match(f[0]!.summary, /122 \(fileless\) runs from memfd "vigil-payload"/);
    assert.equal(f[0]!.evidence.exe, '/memfd:vigil-payload (deleted)');
    assert.deepEqual(
      (f[0]!.evidence.mappings as { start: string }[]).map((m) => m.start),
      ['0x401000'],
    );
  });

  it('rates a deleted executable by where it was', () => {
    const dropper = proc(124, 'deleted-exe', 1n);
    const upgraded = proc(125, 'sshd', 2n);
    const hidden = proc(126, 'x', 3n);
    const f = filelessFindings(
      {
        unlinkedExe: [
          { task: dropper, exe: { file: 1n, path: '/tmp/.vigil-dropper (deleted)', deleted: true } },
          { task: upgraded, exe: { file: 2n, path: '/usr/sbin/sshd (deleted)', deleted: true } },
          { task: hidden, exe: { file: 3n, path: '/home/u/.cache/.x (deleted)', deleted: true } },
        ],
        memfdMappings: [],
      },
      none,
    );
    assert.deepEqual(
      f.map((x) => [x.key, x.severity, x.technique]),
      [
        ['deleted-exe:pid=124:start=1240', 'high', 'T1070.004'],
        ['deleted-exe:pid=125:start=1250', 'medium', 'T1070.004'],
        ['deleted-exe:pid=126:start=1260', 'high', 'T1070.004'],
      ],
    );
    assert.match(f[1]!.summary, /package upgrade/);
  });

  it('reports memfd code mapped into an ordinary process, unless its name is allowed', () => {
    const t = proc(300, 'python3', 0xaa000n);
    const facts: FilelessFacts = {
      unlinkedExe: [],
      memfdMappings: [{ mapping: mapping(0xaa000n, 'payload', 0x7f0000000000n), task: t }],
    };
    const f = filelessFindings(facts, none);
    assert.equal(f.length, 1);
    assert.equal(f[0]!.key, 'memfd-map:pid=300:start=3000:0x7f0000000000');
    assert.equal(f[0]!.severity, 'high');
    assert.deepEqual(filelessFindings(facts, { allowMemfdNames: ['payload'] }), []);
    const orphan = filelessFindings(
      { unlinkedExe: [], memfdMappings: [{ mapping: mapping(0xbb000n, 'p'), task: null }] },
      none,
    );
    assert.equal(orphan[0]!.severity, 'critical');
    assert.match(orphan[0]!.summary, /no listed process owns/);
  });

  it('is quiet on a clean system', () => {
    assert.deepEqual(filelessFindings({ unlinkedExe: [], memfdMappings: [] }, none), []);
  });
});

/** shm_mnt → vfsmount → super_block whose s_inodes holds `n` inodes, each mapped by one (non-exec) VMA. */
function shmWorld(n: number, vmFlags = 0x3n) {
  const k = new WalkKernel();
  const sb = k.alloc('super_block');
  k.listInit(sb + k.off('super_block', 's_inodes'));
  const mnt = k.alloc('vfsmount');
  k.writeU64(mnt + k.off('vfsmount', 'mnt_sb'), sb);
  const shmMnt = k.alloc(8);
  k.writeU64(shmMnt, mnt);
  k.setSymbol('shm_mnt', shmMnt);
  const inodes: bigint[] = [];
  const vmas: bigint[] = [];
  for (let i = 0; i < n; i++) {
    const inode = k.alloc('inode');
    const mapping = inode + k.off('inode', 'i_data');
    k.writeU64(inode + k.off('inode', 'i_mapping'), mapping);
    k.listAddTail(sb + k.off('super_block', 's_inodes'), inode + k.off('inode', 'i_sb_list'));
    const vma = k.alloc('vm_area_struct');
    k.writeU64(vma + k.off('vm_area_struct', 'vm_flags'), vmFlags);
    k.writeU64(vma + k.off('vm_area_struct', 'vm_file'), 0xffff888009000000n);
    k.rbTree(mapping + k.off('address_space', 'i_mmap'), [vma + k.off('vm_area_struct', 'shared.rb')]);
    inodes.push(inode);
    vmas.push(vma);
  }
  return { k, sb, inodes, vmas };
}

describe('memfdExecMappings (the shmem mount walk)', () => {
  it('skips mappings that are not executable without describing their files', () => {
    const { k } = shmWorld(3);
    assert.deepEqual(memfdExecMappings(k), []);
    assert.deepEqual(k.issues.items, []);
  });

  it('stops at a looping inode list and records it', () => {
    const { k, inodes } = shmWorld(3);
    const node = inodes[1]! + k.off('inode', 'i_sb_list');
    k.writeU64(node, inodes[0]! + k.off('inode', 'i_sb_list'));
    memfdExecMappings(k);
    assert.ok(k.issues.items.some((i) => i.walker === 'memfd' && i.kind === 'cycle'));
  });

  it('stops at a looping mapping tree and at an unreadable VMA', () => {
    const { k, inodes, vmas } = shmWorld(2, 0x5n);
    const rb = vmas[0]! + k.off('vm_area_struct', 'shared.rb');
    k.writeU64(rb + k.off('rb_node', 'rb_left'), rb);
    const mapping = inodes[1]! + k.off('inode', 'i_data');
    k.rbTree(mapping + k.off('address_space', 'i_mmap'), [0xffff_8880_7700_0000n]);
    memfdExecMappings(k);
    assert.ok(k.issues.items.some((i) => i.kind === 'cycle'));
    assert.ok(k.issues.items.some((i) => i.kind === 'unmapped'));
  });

  it('reports a kernel without shm_mnt, and garbage never throws anything but VigilError', () => {
    const k = new WalkKernel();
    assert.deepEqual(memfdExecMappings(k), []);
    assert.ok(k.issues.items.some((i) => i.kind === 'malformed'));
    for (let seed = 1; seed <= 30; seed++) {
      const w = shmWorld(2, 0x5n);
      const target = seed % 2 ? w.inodes[0]! : w.vmas[1]!;
      const size = w.k.types.sizeof(seed % 2 ? 'inode' : 'vm_area_struct');
      w.k.writeU64(
        target + BigInt(((seed * 8) % size) & ~7),
        BigInt.asUintN(64, BigInt(seed) * 0x9e3779b97f4a7c15n),
      );
      try {
        memfdExecMappings(w.k);
      } catch (e) {
        assert.ok(isVigilError(e), `seed ${seed}: ${String(e)}`);
      }
    }
  });
});
