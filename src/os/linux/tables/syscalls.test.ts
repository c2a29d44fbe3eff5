import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../../util/errors.js';
import { FakeKernel, INIT_TEXT, KERNEL_DATA, MODULE_AREA } from '../modules/test-kernel.js';
import { expectedSyscallEntry, listSyscallTables, readSyscallTable } from './syscalls.js';

test('entries up to the next symbol, padding dropped, each attributed', () => {
  const k = new FakeKernel({ syscalls: 5 }); // 40 bytes, next symbol at 64: three padding slots
  const t = readSyscallTable(k);
  assert.equal(t.entries.length, 5);
  assert.equal(t.countFrom, 'next-symbol');
  assert.deepEqual(
    t.entries.map((e) => [e.nr, e.address, e.symbol, e.where]),
    [
      [0, k.fn('__x64_sys_read'), '__x64_sys_read+0x0', 'kernel'],
      [1, k.fn('__x64_sys_write'), '__x64_sys_write+0x0', 'kernel'],
      [2, k.fn('__x64_sys_open'), '__x64_sys_open+0x0', 'kernel'],
      [3, k.fn('__x64_sys_close'), '__x64_sys_close+0x0', 'kernel'],
      [4, k.fn('__x64_sys_ni_syscall'), '__x64_sys_ni_syscall+0x0', 'kernel'],
    ],
  );
  assert.deepEqual(
    listSyscallTables(k).map((x) => x.name),
    ['sys_call_table'],
  );
});

test('hooked entries: into a module, into data, into init text', () => {
  const k = new FakeKernel({ syscalls: 8 });
  k.addModule({ name: 'rootkit', base: MODULE_AREA + 0x3000n, size: 0x2000n });
  k.writeU64(k.at.sysCallTable + 0n, MODULE_AREA + 0x3123n);
  k.writeU64(k.at.sysCallTable + 8n, KERNEL_DATA + 0x40n);
  k.writeU64(k.at.sysCallTable + 16n, INIT_TEXT + 0x10n);
  k.writeU64(k.at.sysCallTable + 24n, 0xffffc90000001000n); // vmalloc, no module
  const e = readSyscallTable(k).entries;
  assert.deepEqual(
    [e[0], e[1]?.where, e[2]?.where, e[2]?.symbol, e[3]].map((x) => x),
    [
      { nr: 0, address: MODULE_AREA + 0x3123n, where: 'module', module: 'rootkit' },
      'unknown',
      'kernel-init',
      'early_idt_handler_array+0x10',
      { nr: 3, address: 0xffffc90000001000n, where: 'unknown' },
    ],
  );
});

test('with no symbol after the table the count stops at the bound and says so', () => {
  const k = new FakeKernel({ syscalls: 8, noSymbolAfterSyscalls: true });
  // Garbage after the table: non-zero words up to the bound.
  for (let i = 8; i < 64; i++) k.writeU64(k.at.sysCallTable + BigInt(i) * 8n, 0x4141414141414141n);
  const t = readSyscallTable(k, 'sys_call_table', { max: 40 });
  assert.equal(t.entries.length, 40);
  assert.equal(t.countFrom, 'bound');
  assert.equal(k.issues.items[0]?.kind, 'bound');
  assert.equal(t.entries[20]?.where, 'unknown');
});

test('a missing table is a not-found VigilError', () => {
  const k = new FakeKernel();
  assert.throws(
    () => readSyscallTable(k, 'ia32_sys_call_table'),
    (e: unknown) => e instanceof VigilError && e.kind === 'not-found',
  );
});

test('the SYSCALL MSR must point at entry_SYSCALL_64', () => {
  const k = new FakeKernel();
  assert.deepEqual(expectedSyscallEntry(k), {
    symbol: 'entry_SYSCALL_64',
    address: k.fn('entry_SYSCALL_64'),
  });
});
