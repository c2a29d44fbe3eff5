// Opt-in: modules and kernel tables of a real Debian 6.1 guest, from a raw RAM image (VIGIL_GUEST_RAW or
// the development dump /tmp/dev/a.raw). The e2e suite checks the same against a live guest's /proc.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { openDump } from '../../../vmm/memory/index.js';
import { Kernel } from '../kernel.js';
import {
  listModuleKobjects,
  listModules,
  moduleAt,
  moduleLayoutKind,
  TAINT_FLAGS,
} from '../modules/index.js';
import { hashKernelText, listSyscallTables, readIdt } from './index.js';

const RAW = process.env.VIGIL_GUEST_RAW ?? '/tmp/dev/a.raw';
const skip = existsSync(RAW) ? false : `no guest RAM image at ${RAW}`;

describe('modules and tables of a real guest', { skip }, () => {
  const kernel = () => (cached ??= Kernel.bootstrap(openDump(RAW)));
  let cached: Kernel | undefined;

  test('the virtio modules, in both views, with memory that attributes back to them', () => {
    const k = kernel();
    assert.equal(moduleLayoutKind(k).kind, k.types.find('module_memory') ? 'mem' : 'layout');
    const mods = listModules(k);
    assert.ok(mods.some((m) => m.name === 'virtio_net'));
    assert.ok(mods.every((m) => m.state === 'MODULE_STATE_LIVE' && m.anomalies.length === 0));
    const loaded = listModuleKobjects(k).filter((o) => !o.builtin);
    assert.deepEqual(loaded.map((o) => o.name).sort(), mods.map((m) => m.name).sort());
    for (const m of mods) assert.equal(moduleAt(k, m.base + 0x10n, mods)?.module.name, m.name);
    assert.deepEqual(k.issues.items, []);
  });

  test("vigil's taint table is the guest kernel's own taint_flags[]", () => {
    const k = kernel();
    const at = k.sym('taint_flags');
    const size = k.types.sizeof('taint_flag');
    const next = [...k.symbols.range(at + 1n, at + 0x1000n)][0]!.address;
    // Up to the next symbol, less the zero padding after the last entry.
    let count = Math.floor(Number(next - at) / size);
    while (count > 0 && k.view('taint_flag', at + BigInt((count - 1) * size)).u8('c_true') === 0) count--;
    assert.ok(count >= 18 && count <= TAINT_FLAGS.length, `taint_flags has ${count} entries`);
    for (let i = 0; i < count; i++) {
      const f = k.view('taint_flag', at + BigInt(i * size));
      assert.equal(String.fromCharCode(f.u8('c_true')), TAINT_FLAGS[i]!.letter, `bit ${i}`);
      assert.equal(f.bool('module'), TAINT_FLAGS[i]!.module, `bit ${i} module`);
    }
  });

  test('syscalls and IDT point into kernel text; the text hash is stable', () => {
    const k = kernel();
    const [table] = listSyscallTables(k);
    assert.equal(table!.entries[0]!.symbol, '__x64_sys_read+0x0');
    assert.ok(table!.entries.every((e) => e.where === 'kernel'));
    const idt = readIdt(k);
    assert.equal(idt[14]!.symbol, 'asm_exc_page_fault+0x0');
    assert.ok(idt.every((e) => e.where === 'kernel' || e.where === 'kernel-init'));
    const a = hashKernelText(k);
    assert.equal(a.unreadablePages, 0);
    assert.equal(hashKernelText(k).sha256, a.sha256);
  });
});
