// `vigil pstree`: processes as a tree by parent (real_parent's process), with PID and name. Kernel threads
// hang under kthreadd (their parent), user processes under init. Parent links come from the guest: a
// process whose parent is missing, or that sits on a parent cycle, becomes a root of its own (marked),
// so nothing is dropped and nothing loops.
import type { Command } from 'commander';
import type { Process } from '../../os/linux/tasks/index.js';
import { print, toJson } from '../output.js';
import type { TargetOptions } from '../target.js';
import { addTargetOptions } from '../target.js';
import { readProcesses, reportIssues } from './ps.js';

interface PstreeOptions extends TargetOptions {
  json?: boolean;
  source?: string;
  max?: string;
  pause?: boolean;
}

export interface TreeNode {
  pid: number;
  name: string;
  /** Threads of the process, shown as {n} after the name when more than one. */
  threads: number;
  /** Set on a root whose ppid names a process that is not in the list (or is on a parent loop). */
  orphanOf?: number | null;
  children: TreeNode[];
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('pstree')
      .description('processes as a tree by parent, kernel threads under kthreadd')
      .option('--source <view>', 'tasks: the task list (default); pids: the PID table', 'tasks')
      .option('--max <n>', 'stop after this many tasks')
      .option('--pause', 'pause a live VM while reading')
      .option('--json', 'print JSON (nested {pid, name, threads, children})'),
  ).action(async (opts: PstreeOptions) => {
    const { processes, issues } = await readProcesses(opts, false);
    const roots = buildTree(processes);
    print(opts.json ? toJson(roots) : renderTree(roots));
    reportIssues(issues);
  });
}

/** Roots: processes with ppid 0 (init, kthreadd), then any whose parent is missing; children by PID. */
export function buildTree(processes: readonly Process[]): TreeNode[] {
  const byPid = new Map<number, TreeNode>();
  const parentOf = new Map<number, number | null>();
  for (const p of processes) {
    const t = p.leader;
    if (byPid.has(t.tgid)) continue;
    byPid.set(t.tgid, { pid: t.tgid, name: t.name, threads: p.threads.length, children: [] });
    parentOf.set(t.tgid, t.ppid);
  }
  const roots: TreeNode[] = [];
  const attached = new Set<number>();
  for (const [pid, node] of byPid) {
    const ppid = parentOf.get(pid) ?? null;
    const parent = ppid !== null && ppid !== pid ? byPid.get(ppid) : undefined;
    if (parent) parent.children.push(node);
    else {
      if (ppid !== 0) node.orphanOf = ppid;
      roots.push(node);
    }
  }
  // Mark everything reachable from the roots; what is left sits on parent cycles: cut each loop once.
  const reach = (from: TreeNode) => {
    const stack = [from];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (attached.has(n.pid)) continue;
      attached.add(n.pid);
      stack.push(...n.children);
    }
  };
  roots.forEach(reach);
  for (const [pid, node] of byPid) {
    if (attached.has(pid)) continue;
    const parent = byPid.get(parentOf.get(pid) ?? -1);
    if (parent) parent.children = parent.children.filter((c) => c !== node);
    node.orphanOf = parentOf.get(pid) ?? null;
    roots.push(node);
    reach(node);
  }
  const sort = (nodes: TreeNode[]) => nodes.sort((a, b) => a.pid - b.pid);
  sort(roots);
  for (const n of byPid.values()) sort(n.children);
  return roots;
}

/** Indentation stops growing here; deeper lines say their depth instead (a guest can chain forever). */
const MAX_INDENT = 64;

/** Text tree with box-drawing branches, iteratively (a deep guest tree must not overflow the stack). */
export function renderTree(roots: readonly TreeNode[]): string {
  const lines: string[] = [];
  const label = (n: TreeNode) =>
    `${n.pid} ${n.name}${n.threads > 1 ? ` {${n.threads} threads}` : ''}` +
    (n.orphanOf !== undefined ? `  (parent ${n.orphanOf ?? '?'} not found)` : '');
  const stack: { node: TreeNode; prefix: string; branch: string; depth: number }[] = [];
  for (let i = roots.length - 1; i >= 0; i--)
    stack.push({ node: roots[i]!, prefix: '', branch: '', depth: 0 });
  while (stack.length > 0) {
    const { node, prefix, branch, depth } = stack.pop()!;
    const deep = depth > MAX_INDENT ? `[depth ${depth}] ` : '';
    lines.push(prefix + branch + deep + label(node));
    const childPrefix =
      depth >= MAX_INDENT ? prefix : prefix + (branch === '' ? '' : branch === '└─ ' ? '   ' : '│  ');
    for (let i = node.children.length - 1; i >= 0; i--) {
      const last = i === node.children.length - 1;
      stack.push({
        node: node.children[i]!,
        prefix: childPrefix,
        branch: last ? '└─ ' : '├─ ',
        depth: depth + 1,
      });
    }
  }
  return lines.join('\n') + '\n';
}
