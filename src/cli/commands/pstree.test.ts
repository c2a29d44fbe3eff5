import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Process, Task } from '../../os/linux/tasks/index.js';
import { buildTree, renderTree, type TreeNode } from './pstree.js';

const proc = (pid: number, ppid: number | null, name: string, threads = 1): Process => {
  const t = { pid, tgid: pid, ppid, name, comm: name } as Task;
  return { leader: t, threads: Array.from({ length: threads }, () => t) };
};

const shape = (nodes: TreeNode[]): unknown =>
  nodes.map((n) => (n.children.length ? [n.pid, shape(n.children)] : n.pid));

test('processes hang under their parents, kernel threads under kthreadd, children by PID', () => {
  const roots = buildTree([
    proc(1, 0, 'init'),
    proc(2, 0, 'kthreadd'),
    proc(30, 2, 'kworker/0:1-events'),
    proc(3, 2, 'rcu_gp'),
    proc(100, 1, 'sh', 3),
    proc(101, 100, 'sleep'),
  ]);
  assert.deepEqual(shape(roots), [
    [1, [[100, [101]]]],
    [2, [3, 30]],
  ]);
  assert.equal(
    renderTree(roots),
    [
      '1 init',
      '└─ 100 sh {3 threads}',
      '   └─ 101 sleep',
      '2 kthreadd',
      '├─ 3 rcu_gp',
      '└─ 30 kworker/0:1-events',
      '',
    ].join('\n'),
  );
});

test('missing parents and parent loops become marked roots: nothing is lost, nothing loops', () => {
  const roots = buildTree([
    proc(1, 0, 'init'),
    proc(50, 999, 'orphan'),
    proc(60, 61, 'a'),
    proc(61, 60, 'b'),
    proc(70, 70, 'self'),
    proc(80, null, 'unknown-parent'),
  ]);
  const all: number[] = [];
  const stack = [...roots];
  while (stack.length) {
    const n = stack.pop()!;
    all.push(n.pid);
    stack.push(...n.children);
  }
  assert.deepEqual(
    all.sort((a, b) => a - b),
    [1, 50, 60, 61, 70, 80],
  );
  assert.equal(roots.find((r) => r.pid === 50)?.orphanOf, 999);
  assert.equal(roots.find((r) => r.pid === 70)?.orphanOf, 70);
  assert.equal(roots.find((r) => r.pid === 80)?.orphanOf, null);
  assert.ok(
    roots.some((r) => r.pid === 60 || r.pid === 61),
    'one of the loop is cut into a root',
  );
  assert.match(renderTree(roots), /50 orphan {2}\(parent 999 not found\)/);
});

test('a very deep chain renders without recursion', () => {
  const ps = [proc(1, 0, 'init')];
  for (let pid = 2; pid < 20_000; pid++) ps.push(proc(pid, pid - 1, 'p'));
  const lines = renderTree(buildTree(ps)).split('\n');
  assert.equal(lines.length, 20_000);
  assert.ok(lines.every((l) => l.length < 300));
  assert.match(lines.at(-2)!, /\[depth 19998\] 19999 p$/);
});
