import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Finding } from '../types.js';
import { findHooks, listKprobes } from './kernel-hooks.js';
import { INIT_TEXT, IntegrityTestKernel, MODULE_AREA, NOP5 } from './kernel-testkit.js';

const jmp = IntegrityTestKernel.jmp;
const hex = (v: bigint) => '0x' + v.toString(16);
const keys = (fs: readonly Finding[]) => fs.map((f) => f.key).sort();

function hooked(): IntegrityTestKernel {
  const k = new IntegrityTestKernel();
  k.addModule({ name: 'vk_rootkit', base: MODULE_AREA, size: 0x8000n });
  return k;
}

function scan(k: IntegrityTestKernel): Finding[] {
  k.refresh();
  const r = findHooks(k);
  assert.deepEqual(k.issues.items, []);
  return r.findings;
}

describe('kernel-hooks', () => {
  test('a clean kernel has no hooks', () => {
    const k = new IntegrityTestKernel();
    const r = findHooks(k);
    assert.deepEqual(r.findings, []);
    assert.equal(r.functions, 21); // the 19 functions, ftrace_call inside ftrace_caller, _text
  });

  test('syscall entry and IDT gate into a module name the module; init-text early handlers are fine', () => {
    const k = hooked();
    k.writeU64(k.at.sysCallTable + 5n * 8n, MODULE_AREA + 0x20n);
    k.setGate(0x80, MODULE_AREA + 0x10n, { dpl: 3 });
    k.setGate(3, 0xffffc90000001000n); // vmalloc: not kernel, not a module
    k.setGate(22, INIT_TEXT + 0xc6n);
    const found = scan(k);
    assert.deepEqual(keys(found), ['idt:128', 'idt:3', 'syscall:sys_call_table:5']);
    const sys = found.find((f) => f.key.startsWith('syscall'))!;
    assert.equal(sys.severity, 'critical');
    assert.deepEqual(
      [sys.evidence.syscall, sys.evidence.module, sys.evidence.moduleOffset, sys.evidence.where],
      ['kill', 'vk_rootkit', '0x20', 'module'],
    );
    assert.match(
      sys.summary,
      /sys_call_table\[5\] \(kill\) is hooked: it points to .* in module vk_rootkit\+0x20/,
    );
    assert.equal(found.find((f) => f.key === 'idt:3')!.evidence.where, 'unknown');
  });

  test('inline hooks in every form that leaves kernel text', () => {
    const k = hooked();
    const dest = MODULE_AREA + 0x100n;
    // jmp rel32 over the fentry nop
    k.write(k.fn('tcp4_seq_show'), jmp(k.fn('tcp4_seq_show'), dest));
    // after the fentry nop: jmp [rip+0x20] with the pointer in the function's body
    const v = k.fn('vfs_read') + 5n;
    k.write(v, Buffer.from([0xff, 0x25, 0x20, 0, 0, 0]));
    k.writeU64(v + 6n + 0x20n, dest + 0x10n);
    // movabs rax, dest; jmp rax
    const mov = Buffer.alloc(12);
    mov[0] = 0x48;
    mov[1] = 0xb8;
    mov.writeBigUInt64LE(dest + 0x20n, 2);
    mov[10] = 0xff;
    mov[11] = 0xe0;
    k.write(k.fn('__x64_sys_read'), mov);
    // push imm32; ret
    k.write(k.fn('__x64_sys_close'), Buffer.from([0x68, 0x30, 0x01, 0x00, 0xc0, 0xc3]));
    // after endbr64: jmp rel32
    k.write(k.fn('endbr_function') + 4n, jmp(k.fn('endbr_function') + 4n, dest + 0x40n));
    // a call at the fentry site that is not ftrace's
    k.write(k.fn('__x64_sys_kill'), jmp(k.fn('__x64_sys_kill'), dest + 0x50n, 0xe8));
    const found = scan(k);
    assert.deepEqual(keys(found), [
      'inline:__x64_sys_close',
      'inline:__x64_sys_kill',
      'inline:__x64_sys_read',
      'inline:endbr_function',
      'inline:tcp4_seq_show',
      'inline:vfs_read',
    ]);
    const t = found.find((f) => f.key === 'inline:tcp4_seq_show')!;
    assert.equal(t.severity, 'critical');
    assert.deepEqual(t.evidence, {
      function: 'tcp4_seq_show',
      address: hex(k.fn('tcp4_seq_show')),
      offset: 0,
      instruction: 'jmp',
      bytes: jmp(k.fn('tcp4_seq_show'), dest).toString('hex'),
      destination: { address: hex(dest), where: 'module', module: 'vk_rootkit', moduleOffset: '0x100' },
    });
    assert.match(
      t.summary,
      /inline hook in tcp4_seq_show: jmp at \+0x0 .* to .* in module vk_rootkit\+0x100/,
    );
    assert.equal(found.find((f) => f.key === 'inline:vfs_read')!.evidence.offset, 5);
    assert.equal(found.find((f) => f.key === 'inline:vfs_read')!.evidence.instruction, 'jmp-indirect');
    assert.equal(found.find((f) => f.key === 'inline:endbr_function')!.evidence.offset, 4);
    assert.equal(found.find((f) => f.key === 'inline:__x64_sys_close')!.evidence.instruction, 'push-ret');
  });

  test('jumps that stay in the kernel image, and ftrace calls, are not hooks', () => {
    const k = hooked();
    k.write(k.fn('tcp4_seq_show'), jmp(k.fn('tcp4_seq_show'), k.fn('vfs_read')));
    k.write(k.fn('vfs_read') + 5n, jmp(k.fn('vfs_read') + 5n, INIT_TEXT + 0x100n)); // tail call to freed init
    k.write(k.fn('__x64_sys_kill'), jmp(k.fn('__x64_sys_kill'), k.fn('ftrace_regs_caller'), 0xe8));
    const tramp = MODULE_AREA + 0x9000n;
    k.addFtraceOps({ func: k.fn('kprobe_ftrace_handler'), trampoline: tramp });
    k.write(k.fn('__x64_sys_getdents64'), jmp(k.fn('__x64_sys_getdents64'), tramp, 0xe8));
    // A trampoline whose ops was just unlinked: a copy of ftrace_caller in no module's memory.
    const old = MODULE_AREA + 0xa0000n;
    k.write(old, k.read(k.fn('ftrace_caller'), 64));
    k.write(k.fn('__x64_sys_open'), jmp(k.fn('__x64_sys_open'), old, 0xe8));
    assert.deepEqual(scan(k), []);
  });

  test('an ftrace hook: IPMODIFY callback in a module, with the function it filters on', () => {
    const k = hooked();
    const ops = k.addFtraceOps({
      func: MODULE_AREA + 0x340n,
      flags: 1n | 4n | 4096n,
      trampoline: MODULE_AREA + 0x9000n,
      filters: [k.fn('__x64_sys_getdents64')],
      at: MODULE_AREA + 0x2000n,
    });
    k.addFtraceOps({ func: k.fn('kprobe_ftrace_handler') }); // kernel's own: fine
    const found = scan(k);
    assert.deepEqual(keys(found), [`ftrace:${hex(ops)}`]);
    const f = found[0]!;
    assert.equal(f.severity, 'critical');
    assert.equal(f.evidence.module, 'vk_rootkit');
    assert.equal(f.evidence.opsModule, 'vk_rootkit');
    assert.deepEqual(f.evidence.functions, ['__x64_sys_getdents64+0x0']);
    assert.deepEqual(f.evidence.flagNames, ['ENABLED', 'SAVE_REGS', 'IPMODIFY']);
    assert.match(
      f.summary,
      /ftrace hook on __x64_sys_getdents64: callback .* in module vk_rootkit\+0x340 with IPMODIFY/,
    );
  });

  test('kprobes with handlers outside kernel text; a looping bucket stops with an issue', () => {
    const k = hooked();
    k.addKprobe({ addr: k.fn('vfs_read'), pre: k.fn('kprobe_ftrace_handler') });
    const kp = k.addKprobe({ addr: k.fn('__x64_sys_kill'), pre: MODULE_AREA + 0x500n });
    const found = scan(k);
    assert.deepEqual(keys(found), [`kprobe:${hex(kp)}:pre_handler`]);
    assert.equal(found[0]!.evidence.probedSymbol, '__x64_sys_kill+0x0');
    assert.equal(found[0]!.evidence.module, 'vk_rootkit');
    // A cycle in the hash chain.
    k.writeU64(kp + k.off('kprobe', 'hlist'), kp + k.off('kprobe', 'hlist'));
    k.refresh();
    assert.equal(listKprobes(k).length, 1);
    assert.equal(k.issues.items[0]?.kind, 'cycle');
  });

  test('garbage text does not throw', () => {
    const k = hooked();
    const junk = Buffer.alloc(0x1000);
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 97 + 13) & 0xff;
    k.write(k.fn('__x64_sys_read'), junk);
    k.write(k.fn('vfs_read'), NOP5);
    k.refresh();
    assert.doesNotThrow(() => findHooks(k));
  });
});
