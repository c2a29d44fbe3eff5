import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { INFO_REGISTERS_LONG_MODE, INFO_REGISTERS_RESET } from './registers.fixture.js';
import { parseInfoRegisters } from './registers.js';

test('long-mode dump of two vCPUs: user-mode CPU#0 and kernel CPU#1', () => {
  const cpus = parseInfoRegisters(INFO_REGISTERS_LONG_MODE);
  assert.deepEqual([...cpus.keys()], [0, 1]);
  const user = cpus.get(0)!;
  assert.equal(user.rip, 0x455130n);
  assert.equal(user.rsp, 0x7ffd74055fb8n);
  assert.equal(user.rbx, 0xbbafb30n);
  assert.equal(user.rdx, 0x5eb198n);
  assert.equal(user.eflags, 0x246n);
  assert.equal(user.cs, 0x33n);
  assert.equal(user.fsBase, 0xbbae3c0n, 'FS base is the second field of the FS line');
  assert.equal(user.gsBase, 0n);
  assert.equal(user.cr0, 0x80050033n);
  assert.equal(user.cr2, 0x427700n);
  assert.equal(user.cr3, 0x2b38000n);
  assert.equal(user.cr4, 0x751ef0n);
  assert.equal(user.efer, 0xd01n);
  assert.equal(user.kernelGsBase, undefined, 'HMP does not print KERNEL_GS_BASE');

  const kernel = cpus.get(1)!;
  assert.equal(kernel.rip, 0xffffffff958592ebn);
  assert.equal(kernel.rsp, 0xff7e73608009bed8n);
  assert.equal(kernel.rcx, 0x7fffffb833d5bbffn);
  assert.equal(kernel.gsBase, 0xff208aba0f700000n);
  assert.equal(kernel.cs, 0x10n);
  assert.equal(kernel.cr3, 0x2b34000n);
  assert.equal(kernel.cr4, 0x751ee0n);
});

test('reset-state dump uses the 32-bit layout', () => {
  const cpus = parseInfoRegisters(INFO_REGISTERS_RESET);
  assert.equal(cpus.size, 2);
  const r = cpus.get(1)!;
  assert.equal(r.rip, 0xfff0n);
  assert.equal(r.rsp, 0n);
  assert.equal(r.rdx, 0x60fb1n);
  assert.equal(r.cs, 0xf000n);
  assert.equal(r.cr0, 0x60000010n);
  assert.equal(r.efer, 0n);
  assert.equal(r.eflags, 2n);
});

test('a dump without CPU headers is CPU 0; CRLF or LF both work', () => {
  const one = INFO_REGISTERS_LONG_MODE.split('\r\nCPU#1')[0]
    .replace('\r\nCPU#0\r\n', '')
    .replace(/\r\n/g, '\n');
  const cpus = parseInfoRegisters(one);
  assert.deepEqual([...cpus.keys()], [0]);
  assert.equal(cpus.get(0)!.fsBase, 0xbbae3c0n);
});

test('missing control registers or duplicate CPUs are malformed', () => {
  const noCr3 = INFO_REGISTERS_LONG_MODE.replace(/CR3=[0-9a-f]+/g, 'CRX=0');
  assert.throws(
    () => parseInfoRegisters(noCr3),
    (e: unknown) => e instanceof VigilError && e.kind === 'malformed' && /CR3/.test(e.message),
  );
  const dup = INFO_REGISTERS_LONG_MODE.replace('CPU#1', 'CPU#0');
  assert.throws(
    () => parseInfoRegisters(dup),
    (e: unknown) => e instanceof VigilError && e.kind === 'malformed',
  );
  assert.throws(
    () => parseInfoRegisters(''),
    (e: unknown) => e instanceof VigilError && e.kind === 'malformed',
  );
});
