import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CEA_IDT, INIT_TEXT, IntegrityTestKernel, MODULE_AREA } from './kernel-testkit.js';
import { checkIntegrity } from './memory-access.js';
import { keys, learned, memoryBaseline } from './memory-access-testkit.js';

describe('memory-access: system call table and IDT', () => {
  test('a syscall entry moved into a module: changed and not a syscall function', () => {
    const { k, poll } = learned();
    k.addModule({ name: 'vk_syscall', base: MODULE_AREA, size: 0x4000n });
    const slot = k.at.sysCallTable + 5n * 8n;
    k.writeU64(slot, MODULE_AREA + 0x20n);
    const found = poll();
    assert.deepEqual(keys(found), ['syscall:sys_call_table:5']);
    const e = found[0]!.evidence;
    assert.equal(e.syscall, 'kill');
    assert.equal(e.syscallFunction, false);
    assert.deepEqual((e.baseline as { symbol: string }).symbol, '__x64_sys_kill+0x0');
    assert.equal((e.now as { module: string }).module, 'vk_syscall');
    assert.match(
      found[0]!.summary,
      /sys_call_table\[5\] \(kill\) changed: .*__x64_sys_kill.* → .*vk_syscall/,
    );
  });

  test('without a baseline an entry to a non-syscall function is still caught', () => {
    const k = new IntegrityTestKernel();
    k.writeU64(k.at.sysCallTable + 3n * 8n, k.fn('tcp4_seq_show'));
    const found = checkIntegrity(k, memoryBaseline()).findings;
    assert.deepEqual(keys(found), ['syscall:sys_call_table:3']);
    assert.match(found[0]!.summary, /not to a system call function/);
  });

  test('IDT: a changed gate and a gate outside text; reserved vectors in init text are fine', () => {
    const { k, poll } = learned();
    k.addModule({ name: 'vk_syscall', base: MODULE_AREA, size: 0x4000n });
    k.setGate(0x80, MODULE_AREA + 0x10n, { dpl: 3 });
    k.setGate(22, INIT_TEXT + 0xc6n); // another early handler: a change, but in place
    const found = poll();
    assert.deepEqual(keys(found), ['idt:128', 'idt:22']);
    const g = found.find((f) => f.key === 'idt:128')!;
    assert.equal((g.evidence.handler as { module: string }).module, 'vk_syscall');
    assert.equal(g.evidence.handlerInKernelText, false);
    assert.equal(found.find((f) => f.key === 'idt:22')!.evidence.handlerInKernelText as boolean, true);
  });

  test('the CPU entry area alias must map idt_table', () => {
    const { k, poll } = learned();
    const other = (k.alloc(8192) + 0xfffn) & ~0xfffn;
    k.write(other, k.read(k.at.idtTable, 4096));
    k.setGate(14, k.fn('tcp4_seq_show')); // the real table changes too, so the copy differs
    k.builder.map(CEA_IDT, k.pa(other), 0x1000n, { writable: false });
    const found = poll();
    assert.ok(keys(found).includes('idt-alias'));
    assert.equal(found.find((f) => f.key === 'idt-alias')!.evidence.differs, true);
  });
});
