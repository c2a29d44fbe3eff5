// `vigil maps PID`: a process's memory maps read from guest kernel memory, printed like the guest's
// /proc/PID/maps (start-end perms offset dev inode path); --json prints one array of objects (MapsRow).
import type { Command } from 'commander';
import { listPidTasks, type Task } from '../../os/linux/tasks/index.js';
import type { Kernel } from '../../os/linux/kernel.js';
import { formatMapsLine, taskMaps, type MemoryMap } from '../../os/linux/mm/maps.js';
import { VigilError } from '../../util/errors.js';
import { print, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';
import { reportIssues } from './ps.js';

export interface MapsRow {
  start: bigint;
  end: bigint;
  perms: string;
  offset: bigint;
  dev: string;
  inode: number | string;
  path: string;
  label?: string;
  deleted?: boolean;
  flags: bigint;
  vma: bigint;
  file?: bigint;
}

/** A PID (or thread id) argument: a positive decimal number. */
export function parsePidArg(s: string): number {
  const n = /^\d{1,10}$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0 || n > 0x3fffffff) {
    throw new VigilError('cli', 'usage', `PID must be a positive number, got "${s.slice(0, 40)}"`);
  }
  return n;
}

/** The task with this PID (or thread id), looked up in the PID table like /proc/PID does. */
export function findTask(k: Kernel, pid: number): Task {
  const hit = listPidTasks(k).tasks.find((t) => t.nr === pid);
  if (!hit) throw new VigilError('cli', 'not-found', `no process with PID ${pid} in the guest`);
  return hit.task;
}

/** Inode numbers are unsigned longs: a number when it is exact, else a decimal string. */
export const inodeValue = (v: bigint): number | string =>
  v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();

export function mapsRow(m: MemoryMap): MapsRow {
  return {
    start: m.start,
    end: m.end,
    perms: m.perms,
    offset: m.offset,
    dev: m.dev,
    inode: inodeValue(m.inode),
    path: m.path,
    ...(m.label ? { label: m.label } : {}),
    ...(m.deleted ? { deleted: true } : {}),
    flags: m.flags,
    vma: m.vma,
    ...(m.file !== undefined ? { file: m.file } : {}),
  };
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('maps')
      .description("a process's memory maps from guest kernel memory, like /proc/PID/maps")
      .argument('<pid>', 'process (or thread) id in the guest')
      .option('--json', 'print JSON'),
  ).action(async (pidArg: string, opts: TargetOptions & { json?: boolean }) => {
    const pid = parsePidArg(pidArg);
    const { maps, issues } = await withTarget(opts, async (t) => {
      const k = await t.kernel();
      const task = findTask(k, pid);
      return { maps: taskMaps(k, task.address), issues: k.issues.items };
    });
    print(opts.json ? toJson(maps.map(mapsRow)) : maps.map((m) => formatMapsLine(m) + '\n').join(''));
    reportIssues(issues);
  });
}
