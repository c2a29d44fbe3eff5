import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Task } from '../../os/linux/tasks/index.js';
import type { SweepContext } from '../policy.js';
import {
  DEFAULT_SHELLS,
  isShell,
  reverseShellFindings,
  shellOptions,
  type SocketStdioProcess,
  type StdioSocket,
} from './reverse-shell.js';

const task = (pid: number, comm: string): Task => ({
  address: 0xffff888005000000n + BigInt(pid) * 0x4000n,
  pid,
  tgid: pid,
  ppid: 113,
  comm,
  name: comm,
  state: 'S',
  stateValue: 1,
  exitState: 0,
  flags: 0,
  kthread: false,
  cred: null,
  startTimeNs: pid,
  startBoottimeNs: pid,
  mm: 1n,
  realParent: 0n,
  groupLeader: 0n,
  signal: 0n,
  notes: [],
});

const tcp = (fd: number, local = '127.0.0.1:4444', remote = '127.0.0.1:51704'): StdioSocket => ({
  fd,
  inode: 9945,
  family: 'inet',
  type: 'stream',
  protocol: 6,
  state: 'ESTABLISHED',
  local,
  remote,
  localPort: Number(local.split(':').at(-1)),
  sock: 0xffff888008000000n,
});

const proc = (
  comm: string,
  exe: string | null,
  fds: number[],
  over: Partial<SocketStdioProcess> = {},
): SocketStdioProcess => ({
  task: task(115, comm),
  exe,
  parent: { pid: 113, comm: 'bindshell' },
  sockets: fds.map((fd) => tcp(fd)),
  inbound: true,
  ...over,
});

const o = { shells: DEFAULT_SHELLS, allowLocalPorts: [] };

describe('reverse-shell', () => {
  it('reports a bind shell with the socket, its peer and the parent', () => {
    const [f, ...rest] = reverseShellFindings([proc('sh', '/bin/busybox', [0, 1, 2])], o);
    assert.equal(rest.length, 0);
    assert.equal(f!.key, 'shell:pid=115:start=115:ino=9945');
    assert.equal(f!.evidence.kind, 'bind');
    assert.match(
      f!.summary,
      /^bind shell: sh \(pid 115\) has stdin\/stdout\/stderr on TCP 127\.0\.0\.1:4444 <-> 127\.0\.0\.1:51704 \(ESTABLISHED\)/,
    );
    assert.deepEqual(f!.evidence.parent, { pid: 113, comm: 'bindshell' });
    assert.equal(f!.evidence.remote, '127.0.0.1:51704');
  });

  it('calls a shell that connected out a reverse shell', () => {
    const p = proc('sh', '/bin/busybox', [0, 1, 2], {
      inbound: false,
      sockets: [0, 1, 2].map((fd) => tcp(fd, '127.0.0.1:33846', '127.0.0.1:4445')),
    });
    const [f] = reverseShellFindings([p], o);
    assert.equal(f!.evidence.kind, 'reverse');
    assert.match(f!.summary, /^reverse shell: .* 127\.0\.0\.1:33846 <-> 127\.0\.0\.1:4445/);
  });

  it('knows shells by comm, or by executable unless that is busybox running another applet', () => {
    assert.equal(isShell({ task: task(1, 'bash'), exe: '/usr/bin/bash' }, DEFAULT_SHELLS), true);
    assert.equal(isShell({ task: task(1, 'kworker'), exe: '/usr/bin/bash (deleted)' }, DEFAULT_SHELLS), true);
    assert.equal(isShell({ task: task(1, 'sh'), exe: '/bin/busybox' }, DEFAULT_SHELLS), true);
    assert.equal(isShell({ task: task(1, 'cat'), exe: '/bin/busybox' }, DEFAULT_SHELLS), false);
    assert.equal(isShell({ task: task(1, 'nc'), exe: null }, DEFAULT_SHELLS), false);
  });

  it('leaves alone non-shells on sockets (nc -e cat), and shells with only one socket output', () => {
    assert.deepEqual(reverseShellFindings([proc('cat', '/bin/busybox', [0, 1])], o), []);
    assert.deepEqual(reverseShellFindings([proc('sh', '/bin/busybox', [2])], o), []);
    assert.equal(reverseShellFindings([proc('sh', '/bin/busybox', [1, 2])], o).length, 1);
    assert.equal(reverseShellFindings([proc('sh', '/bin/busybox', [0])], o).length, 1);
  });

  it('allows socket-activated services by local port and takes shells from options', () => {
    assert.deepEqual(
      reverseShellFindings([proc('sh', '/bin/busybox', [0, 1, 2])], { ...o, allowLocalPorts: [4444] }),
      [],
    );
    const ctx = {
      options: { shells: ['python3'], allowLocalPorts: [22] },
    } as unknown as SweepContext<unknown>;
    assert.deepEqual(shellOptions(ctx), { shells: ['python3'], allowLocalPorts: [22] });
    assert.equal(
      reverseShellFindings([proc('python3', '/usr/bin/python3', [0, 1, 2])], shellOptions(ctx)).length,
      1,
    );
    const bad = { options: { allowLocalPorts: ['x'] } } as unknown as SweepContext<unknown>;
    assert.throws(() => shellOptions(bad), /port numbers/);
  });
});
