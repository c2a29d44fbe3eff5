// `vigil files PID`: a process's open files read from guest kernel memory, like `ls -l /proc/PID/fd`
// (fd, link permissions, what it points to) with the kind of file, inode, flags and position beside it;
// --json prints one array of objects (FilesRow).
import type { Command } from 'commander';
import { fdLinkPermissions, openFiles, type OpenFile } from '../../os/linux/fs/files.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';
import { findTask, inodeValue, parsePidArg } from './maps.js';
import { reportIssues } from './ps.js';

export interface FilesRow {
  fd: number;
  /** readlink(/proc/PID/fd/N). */
  path: string;
  kind: string;
  /** anon_inode: "eventfd", "eventpoll"…; memfd: its name. */
  detail?: string;
  deleted: boolean;
  inode: number | string | null;
  dev: string | null;
  rdev?: string;
  fsType: string | null;
  /** f_flags (O_* bits). */
  flags: number;
  /** f_mode (FMODE_* bits). */
  mode: number;
  /** "lr-x------" as ls -l shows the fd link. */
  perms: string;
  pos: number | string;
  file: bigint;
  socket?: bigint;
  sock?: bigint;
  notInBitmap?: boolean;
}

export function filesRow(f: OpenFile): FilesRow {
  return {
    fd: f.fd,
    path: f.path,
    kind: f.kind,
    ...(f.detail !== undefined ? { detail: f.detail } : {}),
    deleted: f.deleted,
    inode: f.inode !== undefined ? inodeValue(f.inode) : null,
    dev: f.dev ?? null,
    ...(f.rdev !== undefined ? { rdev: f.rdev } : {}),
    fsType: f.fsType ?? null,
    flags: f.flags,
    mode: f.mode,
    perms: fdLinkPermissions(f.mode),
    pos: inodeValue(f.pos),
    file: f.file,
    ...(f.socket !== undefined ? { socket: f.socket } : {}),
    ...(f.sock !== undefined ? { sock: f.sock } : {}),
    ...(f.notInBitmap ? { notInBitmap: true } : {}),
  };
}

function table(rows: readonly FilesRow[]): string {
  return renderTable(rows, [
    { header: 'PERMS', get: (r) => r.perms },
    { header: 'FD', get: (r) => r.fd, align: 'right' },
    {
      header: 'KIND',
      get: (r) => (r.detail !== undefined && r.kind === 'anon_inode' ? `anon:${r.detail}` : r.kind),
    },
    { header: 'INODE', get: (r) => r.inode, align: 'right' },
    { header: 'FLAGS', get: (r) => '0' + r.flags.toString(8), align: 'right' },
    { header: 'POS', get: (r) => r.pos, align: 'right' },
    { header: 'TARGET', get: (r) => `-> ${r.path}` },
  ]);
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('files')
      .description("a process's open files from guest kernel memory, like ls -l /proc/PID/fd")
      .argument('<pid>', 'process (or thread) id in the guest')
      .option('--json', 'print JSON'),
  ).action(async (pidArg: string, opts: TargetOptions & { json?: boolean }) => {
    const pid = parsePidArg(pidArg);
    const { files, issues } = await withTarget(opts, async (t) => {
      const k = await t.kernel();
      const task = findTask(k, pid);
      return { files: openFiles(k, task.address), issues: k.issues.items };
    });
    const rows = files.map(filesRow);
    print(opts.json ? toJson(rows) : table(rows));
    reportIssues(issues);
  });
}
