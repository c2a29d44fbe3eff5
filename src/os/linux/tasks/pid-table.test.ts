import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listTasks } from './list.js';
import { listPidTasks } from './pid-table.js';
import { listProcesses } from './processes.js';
import { FakeKernel } from './testkit.js';

function sample() {
  const k = new FakeKernel();
  const init = k.addProcess({ pid: 1, comm: 'init' });
  k.addProcess({ pid: 2, comm: 'kthreadd', kthread: true });
  const app = k.addProcess({ pid: 300, comm: 'app', parent: init, threads: [301, 4100] });
  const hidden = k.addProcess({ pid: 77, comm: 'rootkitd', parent: init, uid: 0 });
  k.buildIdr();
  return { k, init, app, hidden };
}

test('the PID table lists every task (threads too) in PID order, through a multi-level IDR', () => {
  const { k } = sample();
  const r = listPidTasks(k);
  assert.deepEqual(
    r.tasks.map((p) => [p.nr, p.pidNumber, p.task.pid, p.task.tgid, p.task.comm]),
    [
      [1, 1, 1, 1, 'init'],
      [2, 2, 2, 2, 'kthreadd'],
      [77, 77, 77, 77, 'rootkitd'],
      [300, 300, 300, 300, 'app'],
      [301, 301, 301, 300, 'app'],
      [4100, 4100, 4100, 300, 'app'],
    ],
  );
  assert.equal(r.withoutTask, 0);
  assert.deepEqual(k.issues.items, []);
});

test('a task unlinked from the task list still shows in the PID table (the cross-view lie)', () => {
  const { k, hidden } = sample();
  // list_del(&hidden->tasks): its neighbours point past it.
  const off = k.off('task_struct', 'tasks');
  const next = k.readPtr(hidden + off);
  const prev = k.readPtr(hidden + off + 8n);
  k.space.writeU64(prev, next);
  k.space.writeU64(next + 8n, prev);
  const fromList = new Set(listTasks(k).map((t) => t.pid));
  const fromPids = new Set(listPidTasks(k).tasks.map((p) => p.task.pid));
  assert.equal(fromList.has(77), false);
  assert.equal(fromPids.has(77), true);
  assert.deepEqual(
    listProcesses(k, { source: 'pids' }).map((p) => [p.leader.pid, p.threads.length]),
    [
      [1, 1],
      [2, 1],
      [77, 1],
      [300, 3],
    ],
  );
});

test('a PID with no task (a process group outliving its leader) is counted, not listed', () => {
  const { k } = sample();
  const pid = k.pids.get(77)!;
  k.space.writeU64(pid + k.off('pid', 'tasks[0]'), 0n);
  const r = listPidTasks(k);
  assert.equal(r.withoutTask, 1);
  assert.equal(
    r.tasks.some((p) => p.nr === 77),
    false,
  );
});

test('an IDR whose node points back at the root is cut at the cycle', () => {
  const { k } = sample();
  const root = k.idrRoot();
  // The middle node on the way to PID 300 gets a slot pointing at the root: a node entry with the right
  // tag, so only the visited set stops it.
  const middle = k.idrNode(300, 6);
  k.put('xa_node', middle, { 'slots[63]': root + 2n });
  const r = listPidTasks(k);
  assert.equal(r.tasks.length, 6);
  assert.ok(k.issues.items.some((i) => i.walker === 'pids' && i.kind === 'cycle'));
});

test('an IDR with an absurd shift is refused with an issue', () => {
  const { k } = sample();
  k.put('xa_node', k.idrRoot(), { shift: 200 });
  assert.deepEqual(listPidTasks(k).tasks, []);
  assert.deepEqual(
    k.issues.items.map((i) => [i.walker, i.kind]),
    [['pids', 'malformed']],
  );
});

test('a misaligned IDR entry is not followed as a struct pid', () => {
  const { k } = sample();
  k.put('xa_node', k.idrNode(5), { 'slots[5]': 0xffff_8880_0000_0005n });
  const r = listPidTasks(k);
  assert.equal(r.tasks.length, 6);
  assert.ok(k.issues.items.some((i) => i.kind === 'malformed' && /IDR entry 5/.test(i.detail)));
});
