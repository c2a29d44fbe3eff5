import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeKernel, INIT_TEXT, MODULE_AREA } from '../modules/test-kernel.js';
import { decodeGate, readIdt } from './idt.js';

test('gate descriptors decode to the Intel SDM layout', () => {
  // vector 14 of a real Debian 6.1 guest: asm_exc_page_fault at 0xffffffff91e00ae0, selector 0x10,
  // present interrupt gate, DPL 0, no IST.
  const raw = Buffer.from('e00a1000008ee091ffffffff00000000', 'hex');
  assert.deepEqual(decodeGate(raw), {
    handler: 0xffffffff91e00ae0n,
    selector: 0x10,
    ist: 0,
    type: 'interrupt',
    dpl: 0,
    present: true,
  });
  const trap = Buffer.alloc(16);
  trap[4] = 3;
  trap[5] = 0x80 | (3 << 5) | 0xf;
  assert.deepEqual(decodeGate(trap), {
    handler: 0n,
    selector: 0,
    ist: 3,
    type: 'trap',
    dpl: 3,
    present: true,
  });
  trap[5] = 0x07;
  assert.equal(decodeGate(trap).type, 'type 7');
  assert.equal(decodeGate(trap).present, false);
});

test('256 entries, handlers named and attributed; a hooked vector points into a module', () => {
  const k = new FakeKernel();
  k.setGate(0, k.fn('asm_exc_divide_error'));
  k.setGate(1, k.fn('asm_exc_debug'), { ist: 3 });
  k.setGate(14, k.fn('asm_exc_page_fault'));
  k.setGate(21, INIT_TEXT + 0xbdn);
  k.setGate(128, k.fn('asm_common_interrupt'), { dpl: 3 });
  k.addModule({ name: 'idt_hook', base: MODULE_AREA, size: 0x1000n });
  k.setGate(3, MODULE_AREA + 0x80n, { dpl: 3 });
  const idt = readIdt(k);
  assert.equal(idt.length, 256);
  assert.equal(idt[0]!.symbol, 'asm_exc_divide_error+0x0');
  assert.equal(idt[1]!.ist, 3);
  assert.equal(idt[14]!.symbol, 'asm_exc_page_fault+0x0');
  assert.equal(idt[14]!.where, 'kernel');
  assert.equal(idt[21]!.where, 'kernel-init');
  assert.equal(idt[128]!.dpl, 3);
  assert.deepEqual([idt[3]!.where, idt[3]!.module], ['module', 'idt_hook']);
  // Untouched vectors are zero: not present, not attributed.
  assert.deepEqual([idt[200]!.present, idt[200]!.where, idt[200]!.symbol], [false, 'unknown', undefined]);
});

test('an IDT base elsewhere (a vCPU IDTR) is read from there', () => {
  const k = new FakeKernel();
  const other = k.alloc(4096);
  const b = Buffer.alloc(16);
  b.writeUInt16LE(0x1234, 0);
  b[5] = 0x8e;
  k.write(other + 14n * 16n, b);
  assert.equal(readIdt(k, { base: other })[14]!.handler, 0x1234n);
});
