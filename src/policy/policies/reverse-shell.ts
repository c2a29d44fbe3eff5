// Reverse and bind shells (T1059.004): a command shell whose standard input, output or error is a network
// socket. A person's shell reads a terminal (a tty, a pty, the console); services log to pipes or journald's
// UNIX socket; a shell wired to a TCP or UDP socket is someone driving it over the network — `nc -e
// /bin/sh`, bash's /dev/tcp, a shell a bind-shell server exec'ed on an accepted connection.
// Every process's fds 0-2 are checked for a socket (one read of its fd array and of each file's f_op), so a
// shell that renamed itself is still caught by its executable's name. Rule: fd 0 is an inet (TCP/UDP)
// socket, or two of fds 0-2 are. Not caught: shells wired to a socket through a pipe (mkfifo + nc), and
// interpreters other than shells (option `shells` adds names). A socket-activated service that really runs
// a shell on its connections can be allowed by its local port (option `allowLocalPorts`).
import type { Kernel } from '../../os/linux/kernel.js';
import { describeFile } from '../../os/linux/fs/files.js';
import { offset, readPtr, symbolAddress } from '../../os/linux/fs/reader.js';
import type { NetKernel } from '../../os/linux/net/context.js';
import {
  AF_INET,
  AF_INET6,
  endpoint,
  familyName,
  sockTypeName,
  tcpStateName,
  TCP_LISTEN,
} from '../../os/linux/net/names.js';
import { SockLayout, fullSockFields } from '../../os/linux/net/sock.js';
import { listSockets } from '../../os/linux/net/sockets.js';
import type { Task } from '../../os/linux/tasks/index.js';
import { VigilError } from '../../util/errors.js';
import { definePolicy, stringListOption, type SweepContext } from '../policy.js';
import type { Finding } from '../types.js';
import {
  baseName,
  collectFresh,
  exeFacts,
  fdSlots,
  hex,
  leadersOf,
  sweepTasks,
  type ProcessKernel,
  type SweepKernel,
} from './process-facts.js';

export type ShellKernel = NetKernel & ProcessKernel & SweepKernel;

export const DEFAULT_SHELLS: readonly string[] = [
  'sh',
  'ash',
  'bash',
  'dash',
  'zsh',
  'ksh',
  'mksh',
  'pdksh',
  'yash',
  'csh',
  'tcsh',
  'fish',
  'rbash',
];

export interface StdioSocket {
  fd: number;
  inode: number;
  family: string;
  type: string;
  protocol: number;
  state: string;
  local: string;
  remote: string;
  localPort?: number;
  sock: bigint;
}

export interface SocketStdioProcess {
  task: Task;
  exe: string | null;
  parent: { pid: number; comm: string } | null;
  sockets: StdioSocket[];
  /** Some process in the same namespace listens on the socket's local port: the shell answered a connection. */
  inbound: boolean;
}

/** Processes with an inet socket among fds 0-2, with those sockets decoded. */
export function collectSocketStdio(k: ShellKernel, sweep: number): SocketStdioProcess[] {
  const socketOps = symbolAddress(k, 'socket_file_ops');
  if (socketOps === undefined) {
    k.issues.add('stdio', 'malformed', 'kernel symbol socket_file_ops not found');
    return [];
  }
  const fOp = BigInt(offset(k.types, 'file', 'f_op'));
  const tasks = sweepTasks(k, sweep);
  const byAddress = new Map(tasks.map((t) => [t.address, t]));
  let layout: SockLayout | undefined;
  const out: SocketStdioProcess[] = [];
  for (const t of leadersOf(tasks)) {
    if (t.kthread || t.mm === null) continue;
    const slots = fdSlots(k, t.address, 3);
    if (!slots || !slots.some((f) => f !== 0n && readPtr(k, f + fOp) === socketOps)) continue;
    layout ??= new SockLayout(k);
    const sockets: StdioSocket[] = [];
    slots.forEach((file, fd) => {
      if (file === 0n) return;
      const d = describeFile(k, file);
      if (d.kind !== 'socket' || d.sock === undefined) return;
      const c = layout!.common(d.sock);
      if (c.family !== AF_INET && c.family !== AF_INET6) return;
      const full = fullSockFields(k, layout!, d.sock);
      sockets.push({
        fd,
        inode: full.inode,
        family: familyName(c.family),
        type: sockTypeName(full.type),
        protocol: full.protocol,
        state: tcpStateName(c.state),
        local: endpoint(c.localAddress ?? '?', c.localPort ?? 0),
        remote: endpoint(c.remoteAddress ?? '?', c.remotePort ?? 0),
        ...(c.localPort !== undefined ? { localPort: c.localPort } : {}),
        sock: d.sock,
      });
    });
    if (sockets.length === 0) continue;
    const parent = byAddress.get(t.realParent);
    out.push({
      task: t,
      exe: exeFacts(k, t)?.path ?? null,
      parent: parent ? { pid: parent.tgid, comm: parent.comm } : null,
      sockets,
      inbound: false,
    });
  }
  if (out.length > 0) {
    // Which ports something listens on: a shell's socket on such a port was accepted, not connected out.
    const listening = new Set(
      listSockets(k)
        .filter((s) => s.state === tcpStateName(TCP_LISTEN) && s.localPort !== undefined)
        .map((s) => `${s.netid.replace('6', '')}:${s.localPort}`),
    );
    for (const p of out) {
      p.inbound = p.sockets.some(
        (s) =>
          s.localPort !== undefined && listening.has(`${s.type === 'stream' ? 'tcp' : 'udp'}:${s.localPort}`),
      );
    }
  }
  return out;
}

const STDIO = ['stdin', 'stdout', 'stderr'] as const;

export interface ShellOptions {
  shells: readonly string[];
  allowLocalPorts: readonly number[];
}

/** A shell by its name or its executable's (busybox is a shell only when it runs as one of them). */
export function isShell(p: Pick<SocketStdioProcess, 'task' | 'exe'>, shells: readonly string[]): boolean {
  if (shells.includes(p.task.comm)) return true;
  const exe = p.exe === null ? '' : baseName(p.exe);
  return exe !== '' && exe !== 'busybox' && shells.includes(exe);
}

export function reverseShellFindings(procs: readonly SocketStdioProcess[], o: ShellOptions): Finding[] {
  const out: Finding[] = [];
  for (const p of procs) {
    if (!isShell(p, o.shells)) continue;
    const stdin = p.sockets.some((s) => s.fd === 0);
    if (!stdin && p.sockets.length < 2) continue;
    if (p.sockets.every((s) => s.localPort !== undefined && o.allowLocalPorts.includes(s.localPort)))
      continue;
    const t = p.task;
    const s = p.sockets[0]!;
    const kind = p.inbound ? 'bind' : 'reverse';
    out.push({
      key: `shell:pid=${t.tgid}:start=${t.startTimeNs ?? '?'}:ino=${s.inode}`,
      severity: 'high',
      summary:
        `${kind} shell: ${t.comm} (pid ${t.tgid}) has ${p.sockets.map((x) => STDIO[x.fd]).join('/')} on ` +
        `${s.type === 'stream' ? 'TCP' : 'UDP'}${s.family === 'inet6' ? '6' : ''} ${s.local} <-> ${s.remote} (${s.state})`,
      evidence: {
        pid: t.tgid,
        comm: t.comm,
        exe: p.exe,
        uid: t.cred?.uid ?? null,
        ppid: t.ppid,
        parent: p.parent,
        kind,
        local: s.local,
        remote: s.remote,
        state: s.state,
        inode: s.inode,
        sockets: p.sockets.map((x) => ({
          fd: x.fd,
          inode: x.inode,
          family: x.family,
          type: x.type,
          state: x.state,
          local: x.local,
          remote: x.remote,
          sock: hex(x.sock),
        })),
        task: hex(t.address),
      },
    });
  }
  return out;
}

export function shellOptions(ctx: SweepContext<unknown>): ShellOptions {
  const ports = ctx.options.allowLocalPorts ?? [];
  if (!Array.isArray(ports) || !ports.every((x) => Number.isInteger(x) && x >= 0 && x < 65536)) {
    throw new VigilError('policy', 'usage', 'option "allowLocalPorts" must be a list of port numbers');
  }
  return { shells: stringListOption(ctx, 'shells', DEFAULT_SHELLS), allowLocalPorts: ports as number[] };
}

export const reverseShellPolicy = definePolicy<Kernel>({
  id: 'reverse-shell',
  title: 'Reverse and bind shells',
  description:
    'A shell (sh, bash, dash, busybox sh…) whose stdin/stdout/stderr are a TCP or UDP socket: someone drives ' +
    'it over the network. Reports the socket’s endpoints and state and whether it was accepted (bind shell).',
  technique: 'T1059.004',
  severity: 'high',
  requires: ['kernel'],
  poll(ctx) {
    const k = ctx.requireKernel();
    const o = shellOptions(ctx);
    return reverseShellFindings(
      collectFresh(ctx, k, () => collectSocketStdio(k, ctx.sweep)),
      o,
    );
  },
});
