import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readProcessDetails, readUserStrings, MAX_USER_AREA } from './details.js';
import { listTasks } from './list.js';
import { FakeKernel, FakeSpace } from './testkit.js';

const only = (k: FakeKernel) => listTasks(k)[0]!;

test('command line and environment come from user memory, split at NULs, sanitised', () => {
  const k = new FakeKernel();
  k.addProcess({
    pid: 7,
    comm: 'sh',
    argv: ['/bin/sh', '-c', 'echo \x1b[31mred'],
    environ: ['HOME=/root', 'X='],
  });
  const d = readProcessDetails(k, only(k), { environ: true });
  assert.deepEqual(d.cmdline, { strings: ['/bin/sh', '-c', 'echo \\x1b[31mred'], complete: true });
  assert.deepEqual(d.environ, { strings: ['HOME=/root', 'X='], complete: true });
  assert.equal(d.exe, null, 'no exe_file in this mm');
});

test('the executable path comes from mm->exe_file through d_path', () => {
  const k = new FakeKernel();
  const t = k.addProcess({ pid: 7, comm: 'busybox', argv: ['busybox'] });
  const mm = k.readPtr(t + k.off('task_struct', 'mm'));
  k.put('mm_struct', mm, { exe_file: k.fileAt('/bin/busybox') });
  assert.equal(readProcessDetails(k, only(k)).exe, '/bin/busybox');
});

test('a huge argument range is capped, not allocated', () => {
  const user = new FakeSpace();
  const start = 0x7f00_0000_0000n;
  user.write(start, Buffer.alloc(MAX_USER_AREA + 8192, 0x41));
  const r = readUserStrings(user, start, start + (1n << 40n));
  assert.equal(r.complete, false);
  assert.match(r.note!, /capped at 65536/);
  assert.equal(r.strings.length, 1);
  assert.equal(r.strings[0]!.length, 4096 + 1, 'one string, cut for display');
});

test('malformed ranges are refused with a note', () => {
  const user = new FakeSpace();
  assert.match(readUserStrings(user, 0x2000n, 0x1000n).note!, /not a user range/);
  assert.match(
    readUserStrings(user, 0xffff_8880_0000_0000n, 0xffff_8880_0000_1000n).note!,
    /not a user range/,
  );
  assert.deepEqual(readUserStrings(user, 0n, 0n), { strings: [], complete: true });
});

test('a missing page ends the read: what came before is kept and marked partial', () => {
  const user = new FakeSpace();
  const start = 0x7f00_0000_0ff0n;
  user.write(start, Buffer.from('first\0sec'));
  // The next page (0x7f0000001000…) is absent.
  const r = readUserStrings(user, start, start + 0x2000n);
  assert.deepEqual(r.strings.slice(0, 2), ['first', 'sec']);
  assert.equal(r.complete, false);
  assert.match(r.note!, /page at 0x7f0000001000 is not present: 16 of 8192 bytes read/);
});

test('garbage arg_start/arg_end in an mm are capped or refused, never fatal', () => {
  const k = new FakeKernel();
  const t = k.addProcess({ pid: 9, comm: 'evil', argv: ['evil'] });
  const mm = k.readPtr(t + k.off('task_struct', 'mm'));
  k.put('mm_struct', mm, { arg_start: 0x7ffe_0000_0000n, arg_end: 0x7fff_ffff_ffffn });
  const d = readProcessDetails(k, only(k));
  assert.equal(d.cmdline.complete, false);
  assert.match(d.cmdline.note!, /capped at 65536/);
  assert.equal(d.cmdline.strings[0], 'evil');
  k.put('mm_struct', mm, { arg_start: 0xffff_ffff_ffff_0000n, arg_end: 0xffff_ffff_ffff_ffffn });
  assert.match(readProcessDetails(k, only(k)).cmdline.note!, /not a user range/);
});

test('an unusable pgd or mm leaves notes instead of strings', () => {
  const k = new FakeKernel();
  const t = k.addProcess({ pid: 9, comm: 'x', argv: ['x'] });
  const mm = k.readPtr(t + k.off('task_struct', 'mm'));
  k.put('mm_struct', mm, { pgd: 0x1234n });
  const d = readProcessDetails(k, only(k));
  assert.deepEqual(d.cmdline.strings, []);
  assert.match(d.cmdline.note!, /user page tables/);
  k.put('task_struct', t, { mm: 0xffff_dead_0000_0000n });
  assert.match(readProcessDetails(k, only(k)).notes[0]!, /mm 0xffffdead00000000 is not readable/);
});
