// Runs against a live QEMU when VIGIL_TEST_QMP names its QMP socket (path or host:port); skipped otherwise.
// Read-only: it never pauses, resumes or dumps the VM.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { QmpClient } from './client.js';

const address = process.env.VIGIL_TEST_QMP;
const skip = address
  ? false
  : 'set VIGIL_TEST_QMP=/path/to/qmp.sock (or host:port) to run against a live QEMU';

test('live QMP: status, registers, NICs, vCPUs, an unknown command', { skip }, async () => {
  const c = await QmpClient.connect(address!, { commandTimeoutMs: 10_000 });
  try {
    assert.ok(c.greeting.version.qemu.major >= 2);
    const status = await c.queryStatus();
    assert.equal(typeof status.running, 'boolean');

    const cpus = await c.queryCpusFast();
    assert.ok(cpus.length >= 1);
    const regs = await c.infoRegisters();
    assert.equal(regs.size, cpus.length, 'one register block per vCPU');
    for (const r of regs.values()) {
      assert.ok((r.cr0 & 1n) === 1n || r.cr0 === 0x60000010n, 'CR0: protected mode, or the reset value');
      assert.equal(r.efer & ~0xfffffn, 0n, 'EFER has no bits above 19');
    }

    const nics = await c.queryRxFilter();
    for (const n of nics) assert.match(n['main-mac'], /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);

    await assert.rejects(
      c.execute('vigil-no-such-command'),
      (e: unknown) =>
        e instanceof VigilError && e.kind === 'protocol' && /^CommandNotFound: /.test(e.message),
    );
  } finally {
    await c.close();
  }
});
