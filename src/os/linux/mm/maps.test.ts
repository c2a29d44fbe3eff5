import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import { FakeKernel, MAPLE_ARANGE_64, MAPLE_LEAF_64, mapleNode, rootOf } from '../fs/testkit.js';
import { formatMapsLine, memoryMaps, taskMaps, vmPerms, type MemoryMap } from './maps.js';

const MAX = (1n << 64n) - 1n;
const R = 0x1n;
const W = 0x2n;
const X = 0x4n;
const MAYSHARE = 0x80n;
const SHARED = 0x8n;

interface VmaSpec {
  start: bigint;
  end: bigint;
  flags: bigint;
  file?: bigint;
  pgoff?: bigint;
  ops?: bigint;
  priv?: bigint;
  anonName?: string;
}

/** The fake kernel with symbols declared up front (walkers cache symbols for the boot). */
function kernel(opts: { linkedVmas?: boolean } = {}) {
  const k = new FakeKernel(opts);
  const special = k.symbol('special_mapping_vmops');
  const gateOps = k.symbol('gate_vma_ops');
  const gate = k.symbol('gate_vma', 256);
  const mode = k.symbol('vsyscall_mode', 8);
  k.set(gate, 'vm_area_struct', 'vm_start', 0xffffffffff600000n);
  k.set(gate, 'vm_area_struct', 'vm_end', 0xffffffffff601000n);
  k.set(gate, 'vm_area_struct', 'vm_flags', X);
  k.set(gate, 'vm_area_struct', 'vm_ops', gateOps);
  k.space.write(mode, Buffer.from([1, 0, 0, 0])); // XONLY
  return { k, special, mode };
}

function vma(k: FakeKernel, s: VmaSpec): bigint {
  const v = k.alloc('vm_area_struct');
  k.set(v, 'vm_area_struct', 'vm_start', s.start);
  k.set(v, 'vm_area_struct', 'vm_end', s.end);
  k.set(v, 'vm_area_struct', 'vm_flags', s.flags);
  if (s.file) k.set(v, 'vm_area_struct', 'vm_file', s.file);
  if (s.pgoff) k.set(v, 'vm_area_struct', 'vm_pgoff', s.pgoff);
  if (s.ops) k.set(v, 'vm_area_struct', 'vm_ops', s.ops);
  if (s.priv) k.set(v, 'vm_area_struct', 'vm_private_data', s.priv);
  if (s.anonName) {
    const n = k.alloc(4 + s.anonName.length + 1);
    k.space.write(n + 4n, Buffer.from(s.anonName + '\0'));
    k.set(v, 'vm_area_struct', 'anon_name', n);
  }
  return v;
}

/** A busybox-like process: two file maps, bss, heap, a named anon map, a shared file map, stack, vvar, vdso. */
function process(opts: { linkedVmas?: boolean } = {}) {
  const { k, special, mode } = kernel(opts);
  const sb = k.superBlock('rootfs', 2);
  const root = k.dentry('/', undefined, { sb });
  const rootMnt = k.mount(root);
  const bin = k.dentry('bin', root, { sb });
  const bbInode = k.inode(sb, 6, 0o100755);
  const bb = k.dentry('busybox', bin, { sb, inode: bbInode });
  const bbFile = k.file(bb, rootMnt, bbInode);
  const shmInode = k.inode(sb, 77, 0o100644);
  const shmFile = k.file(k.dentry('shared', root, { sb, inode: shmInode, hashed: false }), rootMnt, shmInode);
  const sm = (name: string): bigint => {
    const m = k.alloc('vm_special_mapping');
    k.set(m, 'vm_special_mapping', 'name', k.string(name));
    return m;
  };
  const specs: VmaSpec[] = [
    { start: 0x400000n, end: 0x401000n, flags: R, file: bbFile },
    { start: 0x401000n, end: 0x585000n, flags: R | X, file: bbFile, pgoff: 1n },
    { start: 0x585000n, end: 0x58c000n, flags: R | W },
    { start: 0x2be13000n, end: 0x2be35000n, flags: R | W },
    { start: 0x7f0000000000n, end: 0x7f0000001000n, flags: R | W, anonName: 'buf' },
    { start: 0x7f0000002000n, end: 0x7f0000003000n, flags: R | MAYSHARE, file: shmFile, pgoff: 3n },
    { start: 0x7ffcba571000n, end: 0x7ffcba592000n, flags: R | W },
    { start: 0x7ffcba5de000n, end: 0x7ffcba5e2000n, flags: R, ops: special, priv: sm('[vvar]') },
    { start: 0x7ffcba5e2000n, end: 0x7ffcba5e4000n, flags: R | X, ops: special, priv: sm('[vdso]') },
  ];
  const vmas = specs.map((s) => vma(k, s));
  const mm = k.alloc('mm_struct');
  k.set(mm, 'mm_struct', 'start_brk', 0x2be13000n);
  k.set(mm, 'mm_struct', 'brk', 0x2be35000n);
  k.set(mm, 'mm_struct', 'start_stack', 0x7ffcba590e40n);
  k.set(mm, 'mm_struct', 'context.flags', 2); // MM_CONTEXT_HAS_VSYSCALL
  if (opts.linkedVmas) {
    k.set(mm, 'mm_struct', 'mmap', vmas[0]!);
    vmas.forEach((v, i) => i + 1 < vmas.length && k.set(v, 'vm_area_struct', 'vm_next', vmas[i + 1]!));
  } else {
    // The tree as the kernel keeps it: VMAs and the NULL gaps between them, split over two leaves.
    const slots: [bigint, bigint][] = [];
    let at = 0n;
    specs.forEach((s, i) => {
      if (s.start > at) slots.push([s.start - 1n, 0n]);
      slots.push([s.end - 1n, vmas[i]!]);
      at = s.end;
    });
    slots.push([MAX, 0n]);
    const cut = 8;
    const left = mapleNode(k, MAPLE_LEAF_64, slots.slice(0, cut), slots[cut - 1]![0]);
    const right = mapleNode(k, MAPLE_LEAF_64, slots.slice(cut));
    const rootNode = mapleNode(k, MAPLE_ARANGE_64, [
      [slots[cut - 1]![0], left],
      [MAX, right],
    ]);
    k.set(mm, 'mm_struct', 'mm_mt.ma_root', rootOf(rootNode));
  }
  const task = k.alloc('task_struct');
  k.set(task, 'task_struct', 'mm', mm);
  return { k, mm, task, vmas, mode };
}

const EXPECTED = [
  '00400000-00401000 r--p 00000000 00:02 6                                  /bin/busybox',
  '00401000-00585000 r-xp 00001000 00:02 6                                  /bin/busybox',
  '00585000-0058c000 rw-p 00000000 00:00 0 ',
  '2be13000-2be35000 rw-p 00000000 00:00 0                                  [heap]',
  '7f0000000000-7f0000001000 rw-p 00000000 00:00 0                          [anon:buf]',
  '7f0000002000-7f0000003000 r--s 00003000 00:02 77                         /shared (deleted)',
  '7ffcba571000-7ffcba592000 rw-p 00000000 00:00 0                          [stack]',
  '7ffcba5de000-7ffcba5e2000 r--p 00000000 00:00 0                          [vvar]',
  '7ffcba5e2000-7ffcba5e4000 r-xp 00000000 00:00 0                          [vdso]',
  'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]',
];

function lines(maps: MemoryMap[]): string[] {
  return maps.map(formatMapsLine);
}

test('maps from the maple tree read like /proc/PID/maps', () => {
  const p = process();
  assert.deepEqual(lines(taskMaps(p.k, p.task)), EXPECTED);
  assert.deepEqual(p.k.issues.items, []);
  const maps = memoryMaps(p.k, p.mm);
  assert.equal(maps[1]!.offset, 0x1000n);
  assert.equal(maps[3]!.label, '[heap]');
  assert.equal(maps[5]!.deleted, true);
  assert.equal(maps[0]!.vma, p.vmas[0]);
});

test('maps from the VMA list of older kernels', () => {
  const p = process({ linkedVmas: true });
  assert.deepEqual(lines(taskMaps(p.k, p.task)), EXPECTED);
});

test('the vsyscall gate VMA only when vsyscall is on and the mm can see it', () => {
  const p = process();
  p.k.space.write(p.mode, Buffer.from([2, 0, 0, 0])); // NONE
  assert.equal(lines(memoryMaps(p.k, p.mm)).length, EXPECTED.length - 1);
  const q = process();
  q.k.set(q.mm, 'mm_struct', 'context.flags', 0); // a 32-bit mm
  assert.equal(lines(memoryMaps(q.k, q.mm)).at(-1), EXPECTED.at(-2));
});

test('permissions from vm_flags: s for VM_MAYSHARE, not VM_SHARED', () => {
  assert.equal(vmPerms(R | W | X | MAYSHARE | SHARED), 'rwxs');
  assert.equal(vmPerms(R | MAYSHARE), 'r--s');
  assert.equal(vmPerms(SHARED), '---p');
  assert.equal(vmPerms(0n), '---p');
});

test('kernel threads have no maps', () => {
  const p = process();
  assert.deepEqual(taskMaps(p.k, p.k.alloc('task_struct')), []);
});

test('corrupt: a VMA filed in the tree at another range is listed and noted', () => {
  const p = process();
  p.k.set(p.vmas[3]!, 'vm_area_struct', 'vm_start', 0x1000n);
  const maps = memoryMaps(p.k, p.mm);
  assert.equal(maps.length, EXPECTED.length);
  assert.equal(maps[3]!.start, 0x1000n);
  assert.ok(p.k.issues.items.some((i) => i.kind === 'malformed' && i.walker === 'maps'));
});

test('corrupt: a looping VMA list, an unreadable mm and VMA', () => {
  const p = process({ linkedVmas: true });
  p.k.set(p.vmas[4]!, 'vm_area_struct', 'vm_next', p.vmas[1]!);
  let maps: MemoryMap[] = [];
  try {
    maps = memoryMaps(p.k, p.mm);
  } catch (e) {
    assert.ok(e instanceof VigilError);
    throw e;
  }
  assert.equal(maps.length, 5 + 1, 'five VMAs before the loop, then the gate');
  assert.equal(p.k.issues.items[0]?.kind, 'cycle');

  const q = process({ linkedVmas: true });
  assert.deepEqual(memoryMaps(q.k, 0xdead_0000_0000n), []);
  assert.equal(q.k.issues.items[0]?.kind, 'unmapped');
  q.k.set(q.vmas[1]!, 'vm_area_struct', 'vm_next', 0xdead_0000_0000n);
  const cut = memoryMaps(q.k, q.mm);
  assert.equal(cut.length, 3 + 1);
  assert.equal(cut[2]!.path, '…[unreadable]');
});
