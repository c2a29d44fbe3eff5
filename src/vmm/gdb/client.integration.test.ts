// Runs against a live QEMU gdbstub when VIGIL_TEST_GDB=host:port is set; skipped otherwise. Attaching
// pauses the VM for the length of the test; the test detaches, which resumes it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GdbClient } from './client.js';

const address = process.env.VIGIL_TEST_GDB;
const skip = address ? false : 'set VIGIL_TEST_GDB=host:port to run against a live QEMU gdbstub';

test('live gdbstub: description, vCPUs, control registers, memory at RIP, detach', { skip }, async () => {
  const g = await GdbClient.connect(address!);
  try {
    const map = g.registerMap;
    assert.ok(map, 'QEMU offers a target description');
    for (const name of ['rip', 'rsp', 'cr0', 'cr3', 'cr4', 'efer', 'fs_base', 'gs_base', 'k_gs_base']) {
      assert.ok(map.byName(name), `register ${name} in the description`);
    }
    const threads = await g.threads();
    assert.ok(threads.length >= 1);
    for (const thread of threads) {
      const r = await g.readX86Registers({ thread });
      assert.equal(await g.readRegister('cr3', { thread }), r.cr3, '`p` and `g` agree');
      if ((r.cr0 & 0x80000000n) !== 0n) {
        // Paging on: the bytes at RIP are readable through this vCPU's page tables.
        const code = await g.readMemory(r.rip, 64, { thread });
        assert.equal(code.length, 64);
      }
    }
    if (g.qemuFeatures.has('PhyMemMode')) {
      assert.equal((await g.readMemory(0x100000n, 4096, { physical: true })).length, 4096);
    }
  } finally {
    await g.close();
  }
  assert.equal(g.connected, false);
});
