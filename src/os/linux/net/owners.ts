// Which processes hold each socket open: every process's fd table (fs/files.ts) joined with the sockets by
// their struct sock (by inode when a file's sock is unknown). Processes come from both views, the task list
// and the PID table, so a process hidden from one still shows as an owner.
import { openFiles } from '../fs/files.js';
import { listPidTasks, listTasks, type TaskKernel } from '../tasks/index.js';
import { attempt, hex } from './context.js';
import type { NetKernel } from './context.js';
import type { Socket, SocketOwner } from './sock.js';

export type OwnerKernel = NetKernel & TaskKernel;

/** Fill in `owners` on each socket (sorted by pid, then fd); returns the same array. */
export function socketOwners(k: OwnerKernel, sockets: Socket[]): Socket[] {
  const bySock = new Map<bigint, Socket>();
  const byInode = new Map<number, Socket>();
  for (const s of sockets) {
    s.owners = [];
    bySock.set(s.address, s);
    if (s.inode !== 0) byInode.set(s.inode, s);
  }
  const leaders = new Map<bigint, { pid: number; comm: string }>();
  for (const t of listTasks(k, { threads: false })) leaders.set(t.address, { pid: t.tgid, comm: t.comm });
  for (const { task } of listPidTasks(k).tasks) {
    if (task.pid === task.tgid && !leaders.has(task.address))
      leaders.set(task.address, { pid: task.tgid, comm: task.comm });
  }
  const seenPids = new Set<number>();
  for (const [address, { pid, comm }] of leaders) {
    if (seenPids.has(pid)) continue;
    seenPids.add(pid);
    const files = attempt(k, 'owners', `files of PID ${pid} (${hex(address)})`, () => openFiles(k, address));
    for (const f of files ?? []) {
      if (f.kind !== 'socket') continue;
      const s =
        (f.sock !== undefined ? bySock.get(f.sock) : undefined) ??
        (f.inode !== undefined ? byInode.get(Number(f.inode)) : undefined);
      if (!s) continue;
      const owner: SocketOwner = { pid, comm, fd: f.fd };
      s.owners!.push(owner);
    }
  }
  for (const s of sockets) s.owners!.sort((a, b) => a.pid - b.pid || a.fd - b.fd);
  return sockets;
}
