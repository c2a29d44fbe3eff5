// Opt-in: the real guest kernel's BTF, found in a raw RAM image (file offset = guest-physical address).
// Runs when the image exists: VIGIL_GUEST_RAW, or the development dump /tmp/dev/a.raw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import type { PhysicalMemory, PhysRange } from '../../../vmm/types.js';
import { findVmlinuxBtf, type FoundBtf } from './find.js';
import { TypeRegistry } from './registry.js';
import { StructView, type ByteReader } from './view.js';

const RAW = process.env.VIGIL_GUEST_RAW ?? '/tmp/dev/a.raw';
const skip = existsSync(RAW) ? false : `no guest RAM image at ${RAW}`;

/** Minimal raw-file PhysicalMemory for this test only (the real sources live in src/vmm/memory). */
class RawFileMemory implements PhysicalMemory {
  readonly description: string;
  readonly ranges: readonly PhysRange[];
  private readonly fd: number;
  constructor(path: string) {
    this.fd = openSync(path, 'r');
    this.description = `raw file ${path}`;
    this.ranges = [{ start: 0n, size: BigInt(fstatSync(this.fd).size) }];
  }
  read(paddr: bigint, length: number, into?: Buffer): Buffer {
    const out = into && into.length >= length ? into.subarray(0, length) : Buffer.alloc(length);
    const n = readSync(this.fd, out, 0, length, Number(paddr));
    out.fill(0, n);
    return out;
  }
  readStrict(paddr: bigint, length: number): Buffer {
    return this.read(paddr, length);
  }
  close(): void {
    closeSync(this.fd);
  }
}

let found: FoundBtf | undefined;
function btf(): FoundBtf {
  if (!found) {
    const mem = new RawFileMemory(RAW);
    try {
      found = findVmlinuxBtf(mem);
    } finally {
      mem.close();
    }
  }
  return found;
}

test('the guest kernel BTF is found in RAM and parses', { skip }, (t) => {
  const mem = new RawFileMemory(RAW);
  const t0 = performance.now();
  const hit = findVmlinuxBtf(mem);
  const t1 = performance.now();
  mem.close();
  found = hit;
  const t2 = performance.now();
  const reg = TypeRegistry.fromBlob(hit.blob);
  const t3 = performance.now();
  reg.find('task_struct');
  const t4 = performance.now();
  t.diagnostic(
    `BTF at 0x${hit.paddr.toString(16)}: ${hit.blob.length} bytes, ${hit.types.count} types, ` +
      `${hit.candidates} headers; find ${(t1 - t0).toFixed(0)} ms, parse ${(t3 - t2).toFixed(0)} ms, ` +
      `name index ${(t4 - t3).toFixed(0)} ms`,
  );
  assert.ok(hit.blob.length > 1 << 20);
  assert.ok(hit.types.count > 50_000, `${hit.types.count} types`);
});

test('kernel types: task_struct, list_head, pid_type', { skip }, () => {
  const reg = btf().types;
  const size = reg.sizeof('struct task_struct');
  assert.ok(size > 1000 && size < 65536, `sizeof(struct task_struct) = ${size}`);
  const pid = reg.offsetof('task_struct', 'pid');
  assert.ok(pid > 0 && pid < size);
  assert.equal(reg.typeName(reg.field('task_struct', 'pid').type), 'pid_t');
  assert.equal(reg.typeName(reg.field('task_struct', 'comm').type), 'char [16]');
  assert.equal(reg.typeName(reg.field('task_struct', 'mm').type), 'struct mm_struct *');
  assert.deepEqual(
    reg.members('list_head').map((m) => [m.path, m.offset]),
    [
      ['next', 0],
      ['prev', 8],
    ],
  );
  assert.equal(reg.enumValue('PIDTYPE_PID'), 0n);
  assert.equal(reg.enumValue('PIDTYPE_TGID', 'enum pid_type'), 1n);
  assert.ok(reg.offsetof('task_struct', 'se.exec_start') > reg.offsetof('task_struct', 'se'));
  assert.ok(reg.offsetof('mm_struct', 'mmap_base') >= 0); // inside an anonymous struct on 6.1
  assert.equal(reg.offsetof('pid', 'numbers[0].nr'), reg.offsetof('pid', 'numbers'));
  // Bitfields exist in task_struct (in_execve and friends) and resolve with widths.
  assert.equal(reg.field('task_struct', 'in_execve').bitfieldSize, 1);
  const text = reg.format('task_struct');
  assert.match(text, /^struct task_struct \{\n/);
  assert.match(text, /\n {4}pid_t pid; +\/\* \d+ 4 \*\//);
});

test('init_task read through a typed view over physical memory', { skip }, () => {
  // init_task sits in the kernel image: find "swapper/0" where task_struct.comm would put it and check the
  // fields around it. Addresses here are physical (the reader is the raw image), so only in-struct reads.
  // Kernel pointers have 0xff in their top byte with 4- and 5-level paging alike.
  const reg = btf().types;
  const mem = new RawFileMemory(RAW);
  const reader: ByteReader = { read: (va, len) => mem.read(va, len) };
  const commOff = reg.offsetof('task_struct', 'comm');
  const views: StructView[] = [];
  const size = Number(mem.ranges[0]!.size);
  const CHUNK = 16 << 20;
  // Chunks overlap by the needle length so a match across a boundary is seen once.
  for (let at = 0; at < size && views.length === 0; at += CHUNK) {
    const chunk = mem.read(BigInt(at), Math.min(CHUNK + 10, size - at));
    for (let p = chunk.indexOf('swapper/0\0'); p >= 0; p = chunk.indexOf('swapper/0\0', p + 1)) {
      const base = at + p - commOff;
      if (base < 0 || p >= CHUNK) continue;
      const v = new StructView(reg, 'task_struct', BigInt(base), reader);
      if (v.int('pid') === 0n && v.ptr('tasks.next') >> 56n === 0xffn) views.push(v);
    }
  }
  mem.close();
  assert.ok(views.length >= 1, 'init_task not found');
  const init = views[0]!;
  assert.equal(init.cstring('comm'), 'swapper/0');
  assert.equal(init.int('tgid'), 0n);
  assert.equal(init.ptr('mm'), 0n); // kernel threads have no mm
  assert.ok((init.u32('flags') & 0x00200000) !== 0, 'PF_KTHREAD');
});
