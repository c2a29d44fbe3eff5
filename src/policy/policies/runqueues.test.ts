import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVigilError } from '../../util/errors.js';
import { WalkKernel } from './process-testkit.js';
import { runQueueTasks } from './runqueues.js';

/** Two CPUs: CPU 0 runs `running` with a and b queued; CPU 1 is idle with a group holding c, an RT task and a DL task. */
function world() {
  const k = new WalkKernel();
  const [rq0, rq1] = k.runQueues(2) as [bigint, bigint];
  const idle0 = k.task();
  const idle1 = k.task();
  const [running, a, b, c, rt, dl] = [k.task(), k.task(), k.task(), k.task(), k.task(), k.task()];
  k.writeU64(rq0 + k.off('rq', 'curr'), running);
  k.writeU64(rq0 + k.off('rq', 'idle'), idle0);
  k.cfsQueue(rq0 + k.off('rq', 'cfs'), [k.seOf(a), k.seOf(b)]);
  k.writeU64(rq1 + k.off('rq', 'curr'), idle1);
  k.writeU64(rq1 + k.off('rq', 'idle'), idle1);
  // A task group: its entity on CPU 1's root cfs_rq stands for its own cfs_rq, where c waits.
  const groupSe = k.alloc('sched_entity');
  const groupRq = k.alloc('cfs_rq');
  k.writeU64(groupSe + k.off('sched_entity', 'my_q'), groupRq);
  k.cfsQueue(rq1 + k.off('rq', 'cfs'), [groupSe]);
  k.cfsQueue(groupRq, [k.seOf(c)]);
  k.listAddTail(rq1 + k.off('rq', 'rt.active.queue[2]'), rt + k.off('task_struct', 'rt.run_list'));
  k.rbTree(rq1 + k.off('rq', 'dl.root'), [dl + k.off('task_struct', 'dl.rb_node')]);
  return { k, rq0, rq1, idle0, idle1, running, a, b, c, rt, dl, groupSe, groupRq };
}

describe('runQueueTasks', () => {
  it('finds running and queued tasks on every CPU, through task groups, RT and DL queues', () => {
    const w = world();
    const v = runQueueTasks(w.k);
    assert.equal(v.cpus, 2);
    assert.deepEqual(new Set(v.idle), new Set([w.idle0, w.idle1]));
    const got = [...v.tasks.values()].map((e) => [e.task, e.cpu, e.where]);
    assert.deepEqual(
      new Set(
        got.map((g) => JSON.stringify(g, (_, x: unknown) => (typeof x === 'bigint' ? x.toString(16) : x))),
      ),
      new Set(
        [
          [w.running, 0, 'curr'],
          [w.a, 0, 'cfs'],
          [w.b, 0, 'cfs'],
          [w.c, 1, 'cfs'],
          [w.rt, 1, 'rt'],
          [w.dl, 1, 'dl'],
        ].map((g) => JSON.stringify(g, (_, x: unknown) => (typeof x === 'bigint' ? x.toString(16) : x))),
      ),
    );
    assert.equal(w.k.issues.items.length, 0);
  });

  it('never reports an idle task, even as curr', () => {
    const w = world();
    assert.ok(![...runQueueTasks(w.k).tasks.keys()].includes(w.idle1));
  });

  it('skips deadline servers that live inside the rq itself', () => {
    const w = world();
    // A dl entity placed inside rq 1's own bytes (6.8+ fair_server) is not a task.
    const inside = w.rq1 + w.k.off('rq', 'nr_running');
    w.k.rbTree(w.rq1 + w.k.off('rq', 'dl.root'), [inside]);
    const v = runQueueTasks(w.k);
    assert.ok(![...v.tasks.values()].some((e) => e.where === 'dl'));
  });

  it('stops at a cycle in the CFS tree and records it', () => {
    const w = world();
    const left = w.k.off('rb_node', 'rb_left');
    const node = w.k.seOf(w.a) + w.k.off('sched_entity', 'run_node');
    w.k.writeU64(node + left, node); // a's node is its own left child
    const v = runQueueTasks(w.k);
    assert.ok(w.k.issues.items.some((i) => i.walker === 'runqueue' && i.kind === 'cycle'));
    assert.ok(v.tasks.has(w.running));
  });

  it('stops when a task group contains itself', () => {
    const w = world();
    w.k.cfsQueue(w.groupRq, [w.groupSe]); // the group's own queue holds the group entity again
    runQueueTasks(w.k);
    assert.ok(w.k.issues.items.some((i) => i.walker === 'runqueue' && i.kind === 'cycle'));
  });

  it('stops at a looping RT list', () => {
    const w = world();
    const node = w.rt + w.k.off('task_struct', 'rt.run_list');
    w.k.writeU64(node, node); // next points back at itself, never reaching the head
    const v = runQueueTasks(w.k);
    assert.ok(w.k.issues.items.some((i) => i.walker === 'runqueue' && i.kind === 'cycle'));
    assert.ok(v.tasks.has(w.rt));
  });

  it('reports an unreadable run queue and goes on with the next CPU', () => {
    const w = world();
    w.k.kaslr.perCpuOffsets[0] = 0x1000_0000n; // CPU 0's per-CPU area points nowhere
    const v = runQueueTasks(w.k);
    assert.ok(w.k.issues.items.some((i) => i.kind === 'unmapped'));
    assert.ok(v.tasks.has(w.c));
  });

  it('reports a kernel without runqueues instead of throwing', () => {
    const k = new WalkKernel();
    const v = runQueueTasks(k);
    assert.equal(v.tasks.size, 0);
    assert.ok(k.issues.items.some((i) => i.kind === 'malformed'));
  });

  it('throws nothing but VigilError on garbage pointers', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const w = world();
      // Overwrite one word of the CPU 1 rq with garbage (deterministic per seed).
      const size = w.k.types.sizeof('rq');
      const at = w.rq1 + BigInt(((seed * 8) % size) & ~7);
      w.k.writeU64(at, BigInt.asUintN(64, BigInt(seed) * 0x9e3779b97f4a7c15n));
      try {
        runQueueTasks(w.k);
      } catch (e) {
        assert.ok(isVigilError(e), `seed ${seed}: ${String(e)}`);
      }
    }
  });
});
