import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FakeKernel } from '../../os/linux/tasks/testkit.js';
import { confirmed, crossView, detectLies, lieFindings, PF_EXITING, type LieKernel } from './lie-detector.js';

const EXIT_ZOMBIE = 0x20;

/** The task testkit's kernel with what the lie detector needs besides (no run queues: that view is empty). */
function kernel(live = false): FakeKernel & LieKernel & { bumps: number; onBump?: () => void } {
  const k = new FakeKernel() as FakeKernel & LieKernel & { bumps: number; onBump?: () => void };
  k.bumps = 0;
  Object.assign(k, {
    kaslr: { perCpuOffsets: [0n] },
    epoch: {
      frozen: !live,
      value: 0,
      bump: () => {
        k.bumps++;
        k.onBump?.();
        return k.bumps;
      },
    },
  });
  return k;
}

/** list_del of a task from init_task.tasks (what vk_dkom does). */
function unlink(k: FakeKernel, task: bigint): void {
  const node = task + k.off('task_struct', 'tasks');
  const next = k.readPtr(node);
  const prev = k.readPtr(node + 8n);
  k.space.writeU64(prev, next);
  k.space.writeU64(next + 8n, prev);
  k.space.writeU64(node, node);
  k.space.writeU64(node + 8n, node);
}

const notes = () => {
  const list: string[] = [];
  return { list, note: (kind: string, detail: string) => void list.push(`${kind} ${detail}`) };
};

describe('lie detector', () => {
  it('finds nothing when the task list and the PID table agree', () => {
    const k = kernel();
    k.addProcess({ pid: 1, comm: 'init' });
    k.addProcess({ pid: 42, comm: 'daemon', threads: [43, 44] });
    k.buildIdr();
    const v = crossView(k);
    assert.deepEqual(v.mismatches, []);
    assert.equal(v.counts.taskList, 4);
    assert.equal(v.counts.pidTable, 4);
  });

  it('reports a process unlinked from the task list (DKOM) once, with its threads', () => {
    const k = kernel();
    k.addProcess({ pid: 1, comm: 'init' });
    const hidden = k.addProcess({ pid: 77, comm: 'vk-unlinked', uid: 0, threads: [78] });
    k.buildIdr();
    unlink(k, hidden);
    const n = notes();
    const { findings } = detectLies(n, k);
    assert.equal(findings.length, 1);
    const f = findings[0]!;
    assert.equal(f.severity, 'critical');
    assert.match(f.key, /^unlinked:pid=77:start=/);
    assert.match(
      f.summary,
      /77 \(vk-unlinked\) is hidden from the kernel task list but present in the PID table/,
    );
    assert.equal(f.evidence.pid, 77);
    assert.deepEqual(f.evidence.views, { taskList: false, pidTable: true, runQueue: null });
    assert.deepEqual(
      (f.evidence.threads as { tid: number }[]).map((t) => t.tid),
      [77, 78],
    );
    assert.equal(k.bumps, 0, 'a dump is read once');
  });

  it('reports a live task with no PID-table entry (hidden from /proc)', () => {
    const k = kernel();
    k.addProcess({ pid: 1, comm: 'init' });
    k.buildIdr();
    k.addProcess({ pid: 300, comm: 'ghost' }); // on the list, never given a PID entry
    const { findings } = detectLies(notes(), k);
    assert.equal(findings.length, 1);
    assert.match(findings[0]!.key, /^no-pid:pid=300:/);
    assert.equal(findings[0]!.severity, 'high');
  });

  it('ignores exiting tasks, which leave one view before the other', () => {
    const k = kernel();
    k.addProcess({ pid: 1, comm: 'init' });
    const zombie = k.addProcess({ pid: 50, comm: 'zombie', exitState: EXIT_ZOMBIE });
    const exiting = k.addProcess({ pid: 51, comm: 'exiting', flags: PF_EXITING });
    k.buildIdr();
    unlink(k, zombie);
    unlink(k, exiting);
    k.addProcess({ pid: 52, comm: 'dying', state: 0x10 }); // EXIT_DEAD, no PID entry
    assert.deepEqual(crossView(k).mismatches, []);
  });

  it('on a live guest, drops a mismatch that a second reading does not confirm', () => {
    const k = kernel(true);
    k.addProcess({ pid: 1, comm: 'init' });
    const racing = k.addProcess({ pid: 90, comm: 'new' });
    k.buildIdr();
    unlink(k, racing);
    // By the second reading the fork has finished: the task is on the list.
    k.onBump = () =>
      k.listAddTail(k.initTask + k.off('task_struct', 'tasks'), racing + k.off('task_struct', 'tasks'));
    const { findings } = detectLies(notes(), k);
    assert.deepEqual(findings, []);
    assert.equal(k.bumps, 1);
  });

  it('on a live guest, reports a mismatch both readings agree on', () => {
    const k = kernel(true);
    k.addProcess({ pid: 1, comm: 'init' });
    const hidden = k.addProcess({ pid: 91, comm: 'hidden' });
    k.buildIdr();
    unlink(k, hidden);
    const { findings } = detectLies(notes(), k);
    assert.equal(findings.length, 1);
    assert.equal(k.bumps, 1);
  });

  it('a second reading only confirms the same task (same address, PID and start time)', () => {
    const k = kernel();
    k.addProcess({ pid: 1, comm: 'init' });
    const a = k.addProcess({ pid: 10, comm: 'a' });
    k.buildIdr();
    unlink(k, a);
    const first = crossView(k).mismatches;
    const reused = first.map((v) => ({ ...v, task: { ...v.task, startTimeNs: 1 } }));
    assert.equal(confirmed(first, crossView(k).mismatches).length, 1);
    assert.equal(confirmed(first, reused).length, 0);
    assert.equal(lieFindings(confirmed(first, first)).length, 1);
  });

  it('notes the walk issues of a broken task list', () => {
    const k = kernel();
    const a = k.addProcess({ pid: 1, comm: 'init' });
    k.addProcess({ pid: 2, comm: 'b' });
    k.buildIdr();
    const node = a + k.off('task_struct', 'tasks');
    k.space.writeU64(node, node); // the list loops at the first entry
    const n = notes();
    const { findings } = detectLies(n, k);
    assert.ok(
      n.list.some((x) => x.startsWith('cycle tasks:')),
      n.list.join('\n'),
    );
    // b is still in the PID table: the loop hid it from the list walk.
    assert.ok(findings.some((f) => f.evidence.pid === 2));
  });
});
