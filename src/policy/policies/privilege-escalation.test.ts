import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Credentials, Task } from '../../os/linux/tasks/index.js';
import type { ExeFacts } from './process-facts.js';
import {
  findRootCandidates,
  holdsNoRootId,
  isSetuidRoot,
  privilegeFindings,
  type CredMemory,
  type TaskLookup,
} from './privilege-escalation.js';

const cred = (uid: number, over: Partial<Credentials> = {}): Credentials => ({
  uid,
  gid: uid,
  suid: uid,
  sgid: uid,
  euid: uid,
  egid: uid,
  fsuid: uid,
  fsgid: uid,
  caps: { effective: uid === 0 ? 0x1ffffffffffn : 0n },
  ...over,
});

let nextAddress = 0xffff888003000000n;
function task(
  pid: number,
  comm: string,
  c: Credentials | null,
  parent: Task | null,
  over: Partial<Task> = {},
): Task {
  nextAddress += 0x4000n;
  return {
    address: nextAddress,
    pid,
    tgid: pid,
    ppid: parent?.tgid ?? 0,
    comm,
    name: comm,
    state: 'S',
    stateValue: 1,
    exitState: 0,
    flags: 0,
    kthread: false,
    cred: c,
    startTimeNs: pid * 1000,
    startBoottimeNs: pid * 1000,
    mm: 0xffff888004000000n + BigInt(pid) * 0x1000n,
    realParent: parent?.address ?? 0n,
    groupLeader: 0n,
    signal: 0n,
    notes: [],
    ...over,
  };
}

const exe = (path: string, mode = 0o100755, uid = 0): ExeFacts => ({
  file: 0x1n,
  path,
  deleted: false,
  imode: mode,
  iuid: uid,
});

/** Lookups over a fixed set of tasks: exe paths and subreapers by pid, exe files by pid (changed = exec). */
function lookup(
  tasks: Task[],
  exes: Record<number, ExeFacts | null>,
  opts: { subreapers?: number[]; exeFiles?: Record<number, bigint> } = {},
): TaskLookup {
  const byAddress = new Map(tasks.map((t) => [t.address, t]));
  return {
    parent: (t) => byAddress.get(t.realParent) ?? null,
    subreaper: (p) => (opts.subreapers ?? []).includes(p.pid),
    exe: (t) => exes[t.pid] ?? null,
    exeFile: (t) => opts.exeFiles?.[t.pid] ?? BigInt(t.pid),
  };
}

describe('privilege-escalation', () => {
  const init = task(1, 'init', cred(0), null);
  const user = task(500, 'vk-rootparent', cred(1000), init);

  it('flags a root child of a non-root parent whose executable is not set-uid', () => {
    const rooted = task(501, 'vk-rooted', cred(0), user);
    const c = findRootCandidates(
      [init, user, rooted],
      lookup([init, user, rooted], { 501: exe('/attacks/bin/rootme') }),
    );
    assert.equal(c.length, 1);
    const [f] = privilegeFindings(c, []);
    assert.equal(f!.key, 'root-child:pid=501:start=501000');
    assert.equal(f!.severity, 'high');
    assert.match(
      f!.summary,
      /501 \(vk-rooted\) runs as root under non-root parent 500 \(vk-rootparent, uid 1000\)/,
    );
    assert.match(f!.summary, /\/attacks\/bin\/rootme mode 755/);
    assert.deepEqual((f!.evidence.parent as { pid: number }).pid, 500);
    assert.equal((f!.evidence.cred as { capEffective: string }).capEffective, '0x1ffffffffff');
  });

  it('accepts set-uid-root executables, root parents, kernel threads and subreaper adoptions', () => {
    const sudo = task(600, 'sudo', cred(1000, { euid: 0, suid: 0, fsuid: 0 }), user);
    const fromRoot = task(601, 'daemon', cred(0), init);
    const kthread = task(602, 'kworker/0:1', cred(0), user, { kthread: true });
    const reaper = task(603, 'systemd', cred(1000), init);
    const orphan = task(604, 'sleep', cred(0), reaper);
    // A child of a set-uid process that still holds root ids (real uid 1000, euid 0) is fine too.
    const child = task(605, 'sh', cred(0), sudo);
    const all = [init, user, sudo, fromRoot, kthread, reaper, orphan, child];
    const c = findRootCandidates(
      all,
      lookup(
        all,
        {
          600: exe('/usr/bin/sudo', 0o104755, 0),
          601: exe('/usr/sbin/daemon'),
          604: exe('/bin/sleep'),
          605: exe('/bin/sh'),
        },
        { subreapers: [603] },
      ),
    );
    assert.deepEqual(c, []);
  });

  it('is not fooled by set-uid files of other owners or subjective root credentials', () => {
    assert.equal(isSetuidRoot(exe('/home/u/suid', 0o104755, 1000)), false);
    assert.equal(isSetuidRoot(exe('/usr/bin/passwd', 0o104755, 0)), true);
    assert.equal(isSetuidRoot(null), false);
    const sneaky = task(700, 'x', cred(1000), user, { subjectiveCred: cred(0) });
    const c = findRootCandidates([init, user, sneaky], lookup([init, user, sneaky], { 700: exe('/tmp/x') }));
    assert.equal(c.length, 1);
    assert.ok(privilegeFindings(c, [])[0]!.evidence.subjectiveCred);
  });

  it('holdsNoRootId: any root id (saved uid too) can legitimately get root back', () => {
    assert.equal(holdsNoRootId(cred(1000)), true);
    assert.equal(holdsNoRootId(cred(1000, { suid: 0 })), false);
    assert.equal(holdsNoRootId(null), false);
  });

  it('across sweeps: the same task going from no root id to root without exec', () => {
    const memory: CredMemory = { tasks: new Map() };
    const sh = task(800, 'sh', cred(1000), init);
    const look = (t: Task[]) => lookup(t, { 800: exe('/bin/busybox') });
    assert.deepEqual(findRootCandidates([init, sh], look([init, sh]), memory), []);
    const rooted = { ...sh, cred: cred(0) };
    const c = findRootCandidates([init, rooted], look([init, rooted]), memory);
    assert.equal(c.length, 1);
    const [f] = privilegeFindings(c, []);
    assert.equal(f!.key, 'became-root:pid=800:start=800000');
    assert.equal(f!.severity, 'critical');
    assert.match(f!.summary, /went from uid 1000\/euid 1000 to root without an exec/);
    assert.deepEqual((f!.evidence.before as { uid: number }).uid, 1000);
  });

  it('across sweeps: an exec (new exe file) or a reused PID is not a transition', () => {
    const memory: CredMemory = { tasks: new Map() };
    const sh = task(900, 'sh', cred(1000), init);
    findRootCandidates([init, sh], lookup([init, sh], {}), memory);
    const execd = { ...sh, cred: cred(0) };
    const l = lookup([init, execd], { 900: exe('/usr/bin/su', 0o104755) }, { exeFiles: { 900: 0x999n } });
    assert.deepEqual(findRootCandidates([init, execd], l, memory), []);
    const reused = { ...sh, cred: cred(0), startTimeNs: 5 };
    findRootCandidates([init, sh], lookup([init, sh], {}), memory);
    assert.deepEqual(findRootCandidates([init, reused], lookup([init, reused], {}), memory), []);
  });

  it('groups threads and honours the allow list', () => {
    const p = task(1000, 'tool', cred(0), user);
    const thread = { ...task(1001, 'tool', cred(0), user), tgid: 1000 };
    const all = [init, user, p, thread];
    const c = findRootCandidates(all, lookup(all, { 1000: exe('/opt/tool'), 1001: exe('/opt/tool') }));
    const f = privilegeFindings(c, []);
    assert.equal(f.length, 1);
    assert.deepEqual(f[0]!.evidence.threads, [1000, 1001]);
    assert.deepEqual(privilegeFindings(c, ['/opt/tool']), []);
    assert.deepEqual(privilegeFindings(c, ['tool']), []);
    assert.equal(privilegeFindings(c, ['other']).length, 1);
  });
});
