import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listTasks } from './list.js';
import { listProcesses } from './processes.js';
import { FakeKernel, type FakeKernelOptions } from './testkit.js';
import { PF_WQ_WORKER } from './task.js';

/** init (1), kthreadd (2), a user process 100 with threads 101 and 102, its child 200 running as root. */
function sample(opts: FakeKernelOptions = {}) {
  const k = new FakeKernel(opts);
  const init = k.addProcess({ pid: 1, comm: 'init', caps: 0x1ff_ffff_ffffn, argv: ['/sbin/init'] });
  const kthreadd = k.addProcess({ pid: 2, comm: 'kthreadd', kthread: true, caps: 0x1ff_ffff_ffffn });
  const user = k.addProcess({
    pid: 100,
    comm: 'worker',
    parent: init,
    uid: 1000,
    gid: 1000,
    threads: [101, 102],
    argv: ['worker', '--fast', ''],
  });
  const child = k.addProcess({ pid: 200, comm: 'su', parent: user, uid: 1000, euid: 0, caps: 1n << 33n });
  return { k, init, kthreadd, user, child };
}

const tuples = (k: FakeKernel) => listTasks(k).map((t) => [t.pid, t.tgid, t.ppid, t.comm, t.cred?.uid]);

for (const [label, opts] of [
  ['6.1 layout', {}],
  ['u64 kernel_cap_t (6.3+)', { capsAsU64: true }],
  ['long state field (before 5.14)', { stateField: 'state' }],
  ['thread_group ring only', { threadGroupOnly: true }],
] as [string, FakeKernelOptions][]) {
  test(`task list: leaders, their threads, ids, parents and credentials (${label})`, () => {
    const { k, user } = sample(opts);
    assert.deepEqual(tuples(k), [
      [1, 1, 0, 'init', 0],
      [2, 2, 0, 'kthreadd', 0],
      [100, 100, 1, 'worker', 1000],
      [101, 100, 1, 'worker', 1000],
      [102, 100, 1, 'worker', 1000],
      [200, 200, 100, 'su', 1000],
    ]);
    const tasks = listTasks(k);
    const su = tasks.find((t) => t.pid === 200)!;
    assert.equal(su.cred?.euid, 0);
    assert.equal(su.cred?.caps.effective, 1n << 33n, 'both u32 words of kernel_cap_t are combined');
    assert.equal(tasks[0]!.cred?.caps.permitted, 0x1ff_ffff_ffffn);
    assert.equal(tasks[1]!.kthread, true);
    assert.equal(tasks[0]!.kthread, false);
    assert.equal(tasks[0]!.state, 'S');
    assert.equal(tasks.find((t) => t.pid === 101)!.groupLeader, user);
    assert.equal(su.startTimeNs, 200_000_000);
    assert.equal(su.startBoottimeNs, 200_000_005);
    assert.deepEqual(k.issues.items, []);
  });
}

test('processes fold threads under their leader and carry the command line', () => {
  const { k } = sample();
  const ps = listProcesses(k, { details: true });
  assert.deepEqual(
    ps.map((p) => [p.leader.pid, p.threads.map((t) => t.pid)]),
    [
      [1, [1]],
      [2, [2]],
      [100, [100, 101, 102]],
      [200, [200]],
    ],
  );
  assert.deepEqual(ps[2]!.details?.cmdline.strings, ['worker', '--fast', '']);
  assert.deepEqual(ps[1]!.details?.cmdline.strings, [], 'kernel threads have no command line');
  assert.equal(ps[1]!.details?.exe, null);
});

test('a subjective cred that differs from real_cred is reported beside it', () => {
  const k = new FakeKernel();
  k.addProcess({ pid: 5, comm: 'sudo', uid: 1000, overrideEuid: 0 });
  const [t] = listTasks(k);
  assert.equal(t!.cred?.euid, 1000);
  assert.equal(t!.subjectiveCred?.euid, 0);
});

test('a task list that loops without returning to init_task stops with a cycle issue', () => {
  const { k } = sample();
  // A(pid 1).tasks.next → B(pid 2) → A: init_task is never reached again.
  const off = k.off('task_struct', 'tasks');
  const [a, b] = listTasks(k, { threads: false }).map((t) => t.address);
  k.space.writeU64(b! + off, a! + off);
  k.issues.items.length = 0;
  const got = listTasks(k).map((t) => t.pid);
  assert.deepEqual(got, [1, 2]);
  assert.equal(k.issues.items[0]?.walker, 'tasks');
  assert.equal(k.issues.items[0]?.kind, 'cycle');
});

test('a truncated task list (next pointer into unmapped memory) stops with an issue', () => {
  const { k, user } = sample();
  k.space.writeU64(user + k.off('task_struct', 'tasks'), 0xffff_dead_0000_0000n);
  const got = listTasks(k, { threads: false }).map((t) => t.pid);
  assert.deepEqual(got, [1, 2, 100]);
  assert.ok(k.issues.items.some((i) => i.walker === 'tasks' && i.kind === 'unmapped'));
});

test('an unreadable task on the list is skipped with an issue', () => {
  const { k, kthreadd } = sample();
  const off = k.off('task_struct', 'tasks');
  // kthreadd.tasks.next points to a list_head whose task_struct begins on an unmapped page.
  const lonely = 0xffff_8888_0000_0000n + 0x1000n - off;
  k.space.writeU64(lonely + off, k.initTask + off);
  k.space.writeU64(kthreadd + off, lonely + off);
  const got = listTasks(k, { threads: false }).map((t) => t.pid);
  assert.deepEqual(got, [1, 2]);
  assert.ok(k.issues.items.some((i) => i.kind === 'unmapped' && i.detail.includes('not readable')));
});

test('a huge task list stops at the bound with a bound issue', () => {
  const k = new FakeKernel();
  for (let pid = 1; pid <= 3000; pid++) k.addProcess({ pid, comm: `p${pid}` });
  const got = listTasks(k, { max: 1000 });
  assert.equal(got.length, 1000);
  assert.deepEqual(
    k.issues.items.map((i) => [i.walker, i.kind]),
    [['tasks', 'bound']],
  );
});

test('an endless task list made of ever new tasks (no cycle) still stops at the bound', () => {
  const k = new FakeKernel();
  const off = k.off('task_struct', 'tasks');
  const base = 0xffff_a000_0000_0000n;
  const stride = 0x4000n;
  // Memory above `base` answers every read: each task's tasks.next points to the next one, forever.
  const real = k.space.tryRead.bind(k.space);
  k.space.tryRead = (va: bigint, length: number) => {
    if (va < base) return real(va, length);
    const out = Buffer.alloc(length);
    const first = (va - base) / stride;
    for (let i = first; base + i * stride + off < va + BigInt(length); i++) {
      const at = base + i * stride + off;
      if (at >= va && at + 8n <= va + BigInt(length)) {
        out.writeBigUInt64LE(base + (i + 1n) * stride + off, Number(at - va));
      }
    }
    return out;
  };
  k.space.writeU64(k.initTask + off, base + off);
  const got = listTasks(k, { max: 5000 });
  assert.equal(got.length, 5000);
  assert.ok(k.issues.items.some((i) => i.kind === 'bound'));
});

test('a garbage cred pointer leaves that task with unknown ids, not a failed walk', () => {
  const { k, user } = sample();
  k.put('task_struct', user, { real_cred: 0x4141_4141_4141_4141n, cred: 0xffff_dead_beef_0000n });
  const tasks = listTasks(k);
  const t = tasks.find((x) => x.pid === 100)!;
  assert.equal(t.cred, null);
  assert.equal(t.subjectiveCred, null);
  assert.match(t.notes.join(';'), /real_cred 0x4141414141414141 is not readable/);
  assert.equal(tasks.find((x) => x.pid === 200)!.cred?.uid, 1000, 'other tasks are unaffected');
  assert.equal(tasks.length, 6);
});

test('a garbage parent or signal pointer costs the ppid or the threads, with notes and issues', () => {
  const { k, user } = sample();
  k.put('task_struct', user, { real_parent: 0n, signal: 0xffff_dead_0000_0000n });
  const tasks = listTasks(k);
  const t = tasks.find((x) => x.pid === 100)!;
  assert.equal(t.ppid, null);
  assert.deepEqual(
    tasks.map((x) => x.pid),
    [1, 2, 100, 200],
  );
  assert.ok(k.issues.items.some((i) => i.walker === 'threads' && i.kind === 'unmapped'));
});

test('a thread list that loops is cut at the cycle', () => {
  const { k, user } = sample();
  const node = k.off('task_struct', 'thread_node');
  const t101 = listTasks(k).find((t) => t.pid === 101)!.address;
  // 101's next points back to the leader's node instead of on to 102 and the head.
  k.space.writeU64(t101 + node, user + node);
  const got = listTasks(k).map((t) => t.pid);
  assert.deepEqual(got, [1, 2, 100, 101, 200]);
  assert.ok(k.issues.items.some((i) => i.walker === 'threads' && i.kind === 'cycle'));
});

test('kernel threads are named as /proc names them: full name, workqueue description', () => {
  const k = new FakeKernel();
  const long = k.addProcess({ pid: 3, comm: 'rcu_tasks_rude_', kthread: true });
  const kw = k.addProcess({ pid: 4, comm: 'kworker/0:1', kthread: true, flags: PF_WQ_WORKER });
  const idle = k.addProcess({ pid: 5, comm: 'kworker/u2:3', kthread: true, flags: PF_WQ_WORKER });
  const kthread = (task: bigint, values: Record<string, bigint>) => {
    const kt = k.alloc(k.types.sizeof('kthread'));
    k.put('kthread', kt, values);
    k.put('task_struct', task, { worker_private: kt });
  };
  const name = k.alloc(64);
  k.space.write(name, Buffer.from('rcu_tasks_rude_kthread\0'));
  kthread(long, { full_name: name });
  const worker = k.alloc(k.types.sizeof('worker'));
  k.put('worker', worker, {
    current_work: 0xffff_8880_1234_0000n,
    pool: 0xffff_8880_5678_0000n,
    desc: 'events',
  });
  kthread(kw, { data: worker });
  const idleWorker = k.alloc(k.types.sizeof('worker'));
  k.put('worker', idleWorker, { pool: 0xffff_8880_5678_0000n });
  kthread(idle, { data: idleWorker });
  assert.deepEqual(
    listTasks(k).map((t) => t.name),
    ['rcu_tasks_rude_kthread', 'kworker/0:1+events', 'kworker/u2:3'],
  );
});

test('a task whose every pointer is garbage is still listed, with what could be read', () => {
  const { k, user } = sample();
  for (const f of ['real_parent', 'group_leader', 'mm', 'real_cred', 'cred', 'signal', 'worker_private']) {
    k.put('task_struct', user, { [f]: 0xffff_ffff_ffff_fff0n });
  }
  k.put('task_struct', user, { flags: 0xffffffff, __state: 0xffffffff, exit_state: -1 });
  const ps = listProcesses(k, { details: { environ: true } });
  const p = ps.find((x) => x.leader.pid === 100)!;
  assert.equal(p.leader.cred, null);
  assert.equal(p.leader.ppid, null);
  assert.match(p.details!.notes.join(';'), /not readable/);
  assert.ok(ps.some((x) => x.leader.pid === 200));
});
