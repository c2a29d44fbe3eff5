import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeKernel as FsKernel } from '../../os/linux/fs/testkit.js';
import { FakeKernel as TaskFake } from '../../os/linux/tasks/testkit.js';
import { WalkIssues } from '../../os/linux/walk.js';
import { fakeMachine } from '../testkit.js';
import {
  baseName,
  collectFresh,
  collecting,
  fdSlots,
  MAX_FD_SLOTS,
  sweepTasks,
  vmState,
  type ProcessKernel,
  type SweepKernel,
} from './process-facts.js';

function sweepKernel(live: boolean): SweepKernel & { bumps: number } {
  const k = {
    issues: new WalkIssues(),
    bumps: 0,
    epoch: {
      frozen: !live,
      value: 0,
      bump: () => ++k.bumps,
    },
  };
  return k;
}

const noteSink = () => {
  const list: string[] = [];
  return { list, note: (kind: string, d: string) => void list.push(`${kind} ${d}`) };
};

describe('collecting and collectFresh', () => {
  it('attributes exactly the issues a collection caused, and keeps them in the outer collector', () => {
    const k = sweepKernel(false);
    k.issues.add('earlier', 'bound', 'not mine');
    const r = collecting(k, () => {
      k.issues.add('tasks', 'cycle', 'loop');
      return 7;
    });
    assert.equal(r.value, 7);
    assert.deepEqual(
      r.issues.map((i) => i.detail),
      ['loop'],
    );
    assert.deepEqual(
      k.issues.items.map((i) => i.detail),
      ['not mine', 'loop'],
    );
  });

  it('restores the collector when the collection throws', () => {
    const k = sweepKernel(false);
    const outer = k.issues;
    assert.throws(() =>
      collecting(k, () => {
        throw new Error('boom');
      }),
    );
    assert.equal(k.issues, outer);
  });

  it('reads a live guest again after an issue and notes only what the second pass saw', () => {
    const k = sweepKernel(true);
    const n = noteSink();
    let pass = 0;
    const v = collectFresh(n, k, () => {
      pass++;
      if (pass === 1) k.issues.add('files', 'unmapped', 'task exited under us');
      return pass;
    });
    assert.equal(v, 2);
    assert.equal(k.bumps, 1);
    assert.deepEqual(n.list, []);
  });

  it('on a live guest, notes only the issues both readings hit (counts in the text may differ)', () => {
    const k = sweepKernel(true);
    const n = noteSink();
    let pass = 0;
    collectFresh(n, k, () => {
      pass++;
      k.issues.add('tasks', 'cycle', `list loops back to 0xffff888001000000 after ${pass * 10} entries`);
      k.issues.add('files', 'unmapped', `task 0xffff88800${pass}000000 is not readable`);
    });
    assert.deepEqual(n.list, ['cycle tasks: list loops back to 0xffff888001000000 after 10 entries']);
  });

  it('notes a dump’s issues at once, and a live issue that persists', () => {
    const dump = sweepKernel(false);
    const n = noteSink();
    collectFresh(n, dump, () => dump.issues.add('tasks', 'cycle', 'loop'));
    assert.deepEqual(n.list, ['cycle tasks: loop']);
    assert.equal(dump.bumps, 0);
    const live = sweepKernel(true);
    const m = noteSink();
    collectFresh(m, live, () => live.issues.add('tasks', 'bound', 'too many'));
    assert.deepEqual(m.list, ['bound tasks: too many']);
    assert.equal(live.bumps, 1);
  });
});

describe('sweepTasks', () => {
  it('walks once per sweep and epoch, replaying the walk’s issues to each caller', () => {
    const k = new TaskFake() as TaskFake & SweepKernel;
    let epoch = 0;
    Object.assign(k, {
      epoch: {
        frozen: false,
        get value() {
          return epoch;
        },
        bump: () => ++epoch,
      },
    });
    k.addProcess({ pid: 1, comm: 'init' });
    const first = sweepTasks(k, 1);
    k.addProcess({ pid: 2, comm: 'late' });
    assert.equal(sweepTasks(k, 1), first, 'same sweep, same epoch: cached');
    assert.equal(sweepTasks(k, 2).length, 2, 'next sweep walks again');
    const before = sweepTasks(k, 2);
    epoch++;
    assert.notEqual(sweepTasks(k, 2), before, 'a new epoch walks again');
    // A walk with an issue: every caller's collector gets it.
    const initTasks = k.initTask + k.off('task_struct', 'tasks');
    k.space.writeU64(k.readPtr(initTasks), 0n);
    const a = collecting(k, () => sweepTasks(k, 3));
    const b = collecting(k, () => sweepTasks(k, 3));
    assert.ok(a.issues.length > 0);
    assert.deepEqual(b.issues, a.issues);
  });
});

describe('vmState', () => {
  it('keeps state per machine and per policy', () => {
    const m1 = fakeMachine();
    const m2 = fakeMachine();
    vmState(m1, 'p', () => ({ n: 1 })).n = 5;
    assert.equal(vmState(m1, 'p', () => ({ n: 1 })).n, 5);
    assert.equal(vmState(m2, 'p', () => ({ n: 1 })).n, 1);
    assert.equal(vmState(m1, 'q', () => ({ n: 9 })).n, 9);
  });
});

describe('baseName', () => {
  it('strips the directory and a deleted mark', () => {
    assert.equal(baseName('/usr/bin/bash'), 'bash');
    assert.equal(baseName('/tmp/x (deleted)'), 'x');
    assert.equal(baseName('sh'), 'sh');
  });
});

describe('fdSlots', () => {
  function withFds(maxFds: number, files: bigint[]) {
    const k = new FsKernel();
    const task = k.alloc('task_struct');
    const fs = k.alloc('files_struct');
    const fdt = k.alloc('fdtable');
    const arr = k.alloc(Math.max(8, files.length * 8));
    files.forEach((f, i) => k.writeU64(arr + BigInt(i * 8), f));
    k.set(task, 'task_struct', 'files', fs);
    k.set(fs, 'files_struct', 'fdt', fdt);
    k.set(fdt, 'fdtable', 'max_fds', maxFds);
    k.set(fdt, 'fdtable', 'fd', arr);
    return { k: k as unknown as ProcessKernel, fk: k, task, fdt, arr };
  }

  it('returns the file pointers of the fd array, limited to what was asked', () => {
    const { k, task } = withFds(4, [0x10n, 0n, 0x30n, 0x40n]);
    assert.deepEqual(fdSlots(k, task), [0x10n, 0n, 0x30n, 0x40n]);
    assert.deepEqual(fdSlots(k, task, 2), [0x10n, 0n]);
  });

  it('caps a huge max_fds and reports an unreadable array instead of allocating it', () => {
    const { k, fk, task } = withFds(0x7fffffff, [0x10n]);
    assert.equal(fdSlots(k, task), undefined);
    assert.ok(
      fk.issues.items.some((i) => i.walker === 'fds' && i.kind === 'unmapped' && /fd array/.test(i.detail)),
    );
    assert.ok(MAX_FD_SLOTS <= 65536);
  });

  it('gives undefined for a task without files and notes an unreadable fdtable', () => {
    const { k, fk, task } = withFds(1, [0x10n]);
    const fs = fk.space
      .tryRead(task + BigInt(fk.types.offsetof('task_struct', 'files')), 8)!
      .readBigUInt64LE(0);
    fk.set(fs, 'files_struct', 'fdt', 0xffff_8880_7f00_0000n); // nothing there
    assert.equal(fdSlots(k, task), undefined);
    assert.ok(fk.issues.items.some((i) => /fdtable/.test(i.detail)));
    const none = fk.alloc('task_struct');
    assert.equal(fdSlots(k, none), undefined);
  });
});
