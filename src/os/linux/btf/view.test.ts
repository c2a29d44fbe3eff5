import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import { TypeRegistry } from './registry.js';
import { FakeMemory, sampleKernel } from './testkit.js';
import { StructView, containerOf } from './view.js';

const { blob } = sampleKernel();
const reg = TypeRegistry.fromBlob(blob);

const TASK = 0xffff888000100000n;
const MM = 0xffff888000200000n;
const PID = 0xffff888000300040n;
const NAME = 0xffff888000400ff8n; // 8 bytes before a page end: the string crosses into the next page

const vigil = (origin: string, kind: string, message?: RegExp) => (e: unknown) =>
  e instanceof VigilError && e.origin === origin && e.kind === kind && (!message || message.test(e.message));

/** Write `value` as `bits` bits at bit offset `at` (little-endian, as x86 lays out bitfields). */
function putBits(buf: Buffer, at: number, bits: number, value: bigint): void {
  const v = BigInt.asUintN(bits, value);
  for (let i = 0; i < bits; i++) {
    const bit = at + i;
    const byte = bit >> 3;
    if ((v >> BigInt(i)) & 1n) buf[byte]! |= 1 << (bit & 7);
    else buf[byte]! &= ~(1 << (bit & 7));
  }
}

function guest(): FakeMemory {
  const mem = new FakeMemory();
  const t = Buffer.alloc(128);
  t.writeBigInt64LE(-2n, 0); // state
  t.writeBigUInt64LE(0xffff888000500000n, 8); // tasks.next
  t.writeBigUInt64LE(0xffff888000600000n, 16); // tasks.prev
  t.writeInt32LE(5, 24); // inner_x, inside an anonymous struct inside an anonymous union
  t.writeInt32LE(7, 28); // inner_y
  t.writeInt32LE(1234, 32); // pid
  putBits(t, 288, 1, 1n); // in_execve
  putBits(t, 289, 1, 0n); // in_iowait
  putBits(t, 290, 3, -3n); // sbf (signed)
  putBits(t, 293, 40, 0xabcdef0123n); // wide
  t.write('bash\0junk', 48, 'latin1'); // comm
  t.writeBigUInt64LE(0x1122334455667788n, 64); // se.exec_start
  t.writeBigUInt64LE(99n, 72); // se.vruntime
  t.writeBigUInt64LE(MM, 80); // mm
  t.writeBigUInt64LE(PID, 88); // thread_pid
  t.writeBigUInt64LE(NAME, 96); // name
  t.writeBigUInt64LE(MM, 104); // private (void *)
  t.writeUInt32LE(1, 112); // type = PIDTYPE_TGID
  t[116] = 1; // flag
  t[117] = 0xfe; // small
  t.writeBigUInt64LE(0xffffffff81000000n, 120); // callback
  mem.put(TASK, t);

  const mm = Buffer.alloc(24);
  mm.writeBigUInt64LE(0x7fff00000000n, 0);
  mm.writeBigUInt64LE(0x800000000000n, 8);
  mem.put(MM, mm);

  const pid = Buffer.alloc(24);
  pid.writeUInt32LE(3, 0);
  pid.writeInt32LE(1234, 8); // numbers[0].nr; numbers[0].ns stays NULL
  mem.put(PID, pid);

  mem.put(NAME, Buffer.from('kthreadd'.slice(0, 8), 'latin1'));
  const next = Buffer.alloc(4096);
  next.write('\u001b[31mX\0', 0, 'latin1');
  mem.put(NAME + 8n, next);
  return mem;
}

test('a view reads its struct once and answers scalar fields from the snapshot', () => {
  const mem = guest();
  const v = new StructView(reg, 'task_struct', TASK, mem);
  assert.equal(mem.reads, 1);
  assert.equal(v.size, 128);
  assert.equal(v.int('state'), -2n);
  assert.equal(v.s64('state'), -2n);
  assert.equal(v.u64('state'), 0xfffffffffffffffen);
  assert.equal(v.ptr('tasks.next'), 0xffff888000500000n);
  assert.equal(v.u64('tasks.prev'), 0xffff888000600000n);
  assert.equal(v.s32('inner_x'), 5);
  assert.equal(v.u32('inner_y'), 7);
  assert.equal(v.int('pid'), 1234n);
  assert.equal(v.number('pid'), 1234);
  assert.equal(v.u64('se.exec_start'), 0x1122334455667788n);
  assert.equal(v.enumName('type'), 'PIDTYPE_TGID');
  assert.equal(v.bool('flag'), true);
  assert.equal(v.u8('small'), 0xfe);
  assert.equal(v.s8('small'), -2);
  assert.equal(v.ptr('callback'), 0xffffffff81000000n);
  assert.equal(v.addressOf('se.vruntime'), TASK + 72n);
  assert.equal(v.toString(), 'struct task_struct @ 0xffff888000100000');
  assert.equal(mem.reads, 1);
});

test('bitfields are extracted and sign-extended by their integer type', () => {
  const v = new StructView(reg, 'task_t', TASK, guest());
  assert.equal(v.bitfield('in_execve'), 1n);
  assert.equal(v.bool('in_execve'), true);
  assert.equal(v.bool('in_iowait'), false);
  assert.equal(v.bitfield('sbf'), -3n);
  assert.equal(v.int('wide'), 0xabcdef0123n);
  assert.equal(v.number('wide'), 0xabcdef0123);
  assert.deepEqual([v.info('sbf').bitOffset, v.info('sbf').bitfieldSize], [290, 3]);
});

test('strings: char arrays and char pointers, sanitised, pointer reads page by page', () => {
  const mem = guest();
  const v = new StructView(reg, 'task_struct', TASK, mem);
  assert.equal(v.cstring('comm'), 'bash');
  assert.equal(v.cstring('comm', 2), 'ba…');
  assert.deepEqual(v.bytes('comm'), Buffer.from('bash\0junk\0\0\0\0\0\0\0', 'latin1'));
  assert.equal(v.cstring('name'), 'kthreadd\\x1b[31mX');
});

test('embedded structs share the snapshot; pointers are followed by deref and ->', () => {
  const mem = guest();
  const v = new StructView(reg, 'task_struct', TASK, mem);
  const se = v.field('se');
  assert.equal(se.address, TASK + 64n);
  assert.equal(se.u64('vruntime'), 99n);
  assert.equal(v.field('tasks').ptr('next'), 0xffff888000500000n);
  assert.equal(mem.reads, 1);
  const mm = v.deref('mm');
  assert.equal(mm.toString(), 'struct mm_struct @ 0xffff888000200000');
  assert.equal(mm.u64('mmap_base'), 0x7fff00000000n);
  assert.equal(v.u64('mm->task_size'), 0x800000000000n);
  assert.equal(v.addressOf('mm->task_size'), MM + 8n);
  assert.equal(v.int('thread_pid->numbers[0].nr'), 1234n);
  assert.equal(v.deref('private', 'struct mm_struct').u64('mmap_base'), 0x7fff00000000n);
  const pid = v.deref('thread_pid');
  assert.equal(pid.tryDeref('numbers[0].ns', 'upid'), null);
  assert.throws(
    () => pid.deref('numbers[0].ns', 'upid'),
    vigil('os', 'not-found', /NULL pointer struct pid\.numbers\[0\]\.ns/),
  );
  assert.throws(() => pid.deref('numbers[0].ns'), vigil('os', 'usage', /points to struct pid_namespace/));
  assert.throws(() => v.deref('private'), vigil('os', 'usage', /points to void/));
  assert.throws(
    () => v.u64('thread_pid->numbers[0].ns->x'),
    vigil('os', 'usage', /points to struct pid_namespace/),
  );
  const orphan = Buffer.from(mem.read(TASK, 128));
  orphan.writeBigUInt64LE(0n, 88); // thread_pid = NULL
  mem.put(0x5000n, orphan);
  const o = new StructView(reg, 'task_struct', 0x5000n, mem);
  assert.throws(
    () => o.int('thread_pid->numbers[0].nr'),
    vigil('os', 'not-found', /NULL pointer struct task_struct\.thread_pid$/),
  );
});

test('container_of finds the outer struct', () => {
  const mem = guest();
  const outer = containerOf(reg, mem, TASK + 8n, 'task_struct', 'tasks');
  assert.equal(outer.address, TASK);
  assert.equal(outer.int('pid'), 1234n);
  const v = new StructView(reg, 'task_struct', TASK, mem);
  assert.equal(v.containerOf(TASK + 64n, 'task_struct', 'se').number('pid'), 1234);
  assert.throws(() => containerOf(reg, mem, 4n, 'task_struct', 'tasks'), vigil('os', 'malformed'));
});

test('misuse names the type and the field', () => {
  const v = new StructView(reg, 'task_struct', TASK, guest());
  assert.throws(() => v.u32('nope'), vigil('os', 'not-found', /no field "nope" in struct task_struct/));
  assert.throws(() => v.u64('se.nope'), vigil('os', 'not-found', /no field "nope" in struct sched_entity/));
  assert.throws(
    () => v.u32('state'),
    vigil('os', 'usage', /task_struct\.state is volatile long int \(8 bytes\), not a 4-byte/),
  );
  assert.throws(() => v.u64('in_execve'), vigil('os', 'usage', /1-bit bitfield/));
  assert.throws(() => v.ptr('pid'), vigil('os', 'usage', /not a pointer/));
  assert.throws(() => v.field('pid'), vigil('os', 'usage', /not an embedded struct/));
  assert.throws(() => v.cstring('pid'), vigil('os', 'usage', /char array/));
  assert.throws(() => v.addressOf('sbf'), vigil('os', 'usage', /bitfield/));
  assert.throws(() => v.int('comm'), vigil('os', 'usage', /not an integer/));
  assert.throws(() => v.enumName('pid'), vigil('os', 'usage', /not an enum/));
  assert.throws(() => new StructView(reg, 'pid_t', TASK, guest()), vigil('os', 'usage', /not a struct/));
  assert.throws(
    () => new StructView(reg, 'pid_namespace', TASK, guest()),
    vigil('os', 'usage', /only declared/),
  );
});

test('guest memory faults and impossible addresses surface as typed errors', () => {
  const mem = guest();
  assert.throws(() => new StructView(reg, 'task_struct', 0xdead0000n, mem), vigil('arch', 'unmapped'));
  assert.throws(
    () => new StructView(reg, 'task_struct', 0xfffffffffffffff0n, mem),
    vigil('os', 'malformed', /wraps/),
  );
  const m2 = guest();
  const mmBytes = Buffer.alloc(24);
  mmBytes.writeBigUInt64LE(0xdead000n, 16); // pgd
  m2.put(0x1000n, mmBytes);
  const bogus = new StructView(reg, 'mm_struct', 0x1000n, m2);
  assert.throws(() => bogus.deref('pgd', 'task_struct'), vigil('arch', 'unmapped'));
});

test('a large struct beyond the snapshot cap is read on demand', () => {
  const mem = guest();
  const v = new StructView(reg, 'task_struct', TASK, mem, { maxSnapshot: 16 });
  assert.equal(v.raw().length, 16);
  assert.equal(mem.reads, 1);
  assert.equal(v.ptr('tasks.next'), 0xffff888000500000n);
  assert.equal(mem.reads, 1);
  assert.equal(v.u64('se.exec_start'), 0x1122334455667788n);
  assert.equal(mem.reads, 2);
  assert.equal(v.field('se').u64('vruntime'), 99n);
});
