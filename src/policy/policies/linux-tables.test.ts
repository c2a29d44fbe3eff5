// Tests of os/linux/tables' readers of run-time patch sites and ftrace_ops on kernel-testkit's synthetic
// kernel, which lives in policy: lint keeps os from importing it, so these cannot sit next to their modules.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { listFtraceOps, patchSites } from '../../os/linux/tables/index.js';
import { IntegrityTestKernel, KT, MODULE_AREA, SITES } from './kernel-testkit.js';

describe('patch sites', () => {
  test('jump labels, static calls, fentry records and ftrace_call found; init-text labels left out', () => {
    const k = new IntegrityTestKernel();
    const s = patchSites(k);
    assert.equal(s.counts['jump-label'], 2);
    assert.equal(s.counts['static-call'], 1);
    assert.equal(s.counts.ftrace, 19);
    assert.equal(s.counts['ftrace-caller'], 1);
    const offs = [...s.offsets];
    assert.deepEqual(
      offs,
      [...offs].sort((a, b) => a - b),
    );
    assert.ok(offs.includes(Number(k.fn('vfs_read') - KT) + SITES.jump5.at));
    assert.ok(offs.includes(Number(k.fn('endbr_function') - KT) + 4));
  });

  test('a looping ftrace_pages chain stops with an issue', () => {
    const k = new IntegrityTestKernel();
    const page = k.readPointer(k.at.ftracePagesStart)!;
    k.writeU64(page + k.off('ftrace_page', 'next'), page);
    const s = patchSites(k);
    assert.equal(s.counts.ftrace, 19);
    assert.equal(k.issues.items[0]?.kind, 'cycle');
  });
});

describe('ftrace_ops list', () => {
  test('ops, flags and filters; a loop stops with an issue', () => {
    const k = new IntegrityTestKernel();
    const ops = k.addFtraceOps({
      func: MODULE_AREA + 0x340n,
      flags: 1n | 4n | 4096n,
      trampoline: MODULE_AREA + 0x9000n,
      filters: [k.fn('__x64_sys_getdents64')],
    });
    const list = listFtraceOps(k, { filters: true });
    assert.equal(list.length, 1);
    assert.deepEqual(
      { ...list[0]!, flags: list[0]!.flags },
      {
        address: ops,
        func: MODULE_AREA + 0x340n,
        flags: 4101n,
        flagNames: ['ENABLED', 'SAVE_REGS', 'IPMODIFY'],
        trampoline: MODULE_AREA + 0x9000n,
        trampolineSize: 0x100n,
        filters: [k.fn('__x64_sys_getdents64')],
        filterCount: 1,
        filtersReadable: true,
      },
    );
    k.writeU64(ops + k.off('ftrace_ops', 'next'), ops);
    assert.equal(listFtraceOps(k).length, 1);
    assert.equal(k.issues.items.at(-1)?.kind, 'cycle');
  });
});
