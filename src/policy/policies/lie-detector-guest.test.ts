import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AF_INET, AF_INET6 } from '../../os/linux/net/names.js';
import type { Socket } from '../../os/linux/net/sock.js';
import { NetWorld } from '../../os/linux/net/testkit.js';
import { listTasks } from '../../os/linux/tasks/index.js';
import { FakeKernel } from '../../os/linux/tasks/testkit.js';
import { VigilError } from '../../util/errors.js';
import type { Machine } from '../../vmm/types.js';
import { describeTarget, Engine } from '../engine.js';
import { fakeMachine } from '../testkit.js';
import type { Finding } from '../types.js';
import type { AskState } from './guest-ask.js';
import { FakeAgent, guestFixture, ran, type FileHandler } from './guest-testkit.js';
import { parseProcModules, parseProcNet, parsePs, type ProcNetTable } from './guest-views.js';
import { MODULE_AREA, IntegrityTestKernel } from './kernel-testkit.js';
import {
  guestLies,
  lieDetectorGuestPolicy,
  parseGuestLieOptions,
  readModules,
  readProcesses,
  readSockets,
  type GuestArea,
  type GuestCheck,
  type VigilReading,
} from './lie-detector-guest.js';
import type { Kernel } from '../../os/linux/kernel.js';

const EXIT_ZOMBIE = 0x20;
const GUEST_ALL: GuestArea[] = ['processes', 'modules', 'sockets'];

interface Run {
  findings: Finding[];
  notes: string[];
  readings: number;
  state: AskState;
}

async function check(
  agent: FakeAgent,
  read: () => Omit<VigilReading, 'issues'>,
  area: GuestArea,
  extra: Partial<GuestCheck> = {},
): Promise<Run> {
  const notes: string[] = [];
  let readings = 0;
  const state = extra.state ?? { psForm: 0 };
  const findings = await guestLies({
    agent,
    readVigil: () => {
      readings++;
      return { ...read(), issues: [] };
    },
    refresh: () => undefined,
    note: (kind, detail) => void notes.push(`${kind}: ${detail}`),
    state,
    areas: new Set([area]),
    timeoutMs: 200,
    ...extra,
  });
  return { findings, notes, readings, state };
}

// ------------------------------------------------------------------------------------------ processes

/** A kernel whose processes are those of a real ps listing (what the guest showed when captured). */
function kernelFromPs(fixture: string): FakeKernel {
  const k = new FakeKernel();
  for (const [pid, name] of parsePs(guestFixture(fixture)).pids) {
    k.addProcess({ pid, comm: name.split(/\s+/)[0]!.slice(0, 15) });
  }
  k.buildIdr();
  return k;
}

const processes = (k: FakeKernel) => () => ({ processes: readProcesses(k, listTasks(k)) });

/** An agent whose ps prints `out(call)` and whose /proc files are not asked for. */
const psAgent = (out: (call: number) => Buffer) => new FakeAgent((_p, _a, call) => ran(out(call)));

describe('lie-detector-guest: processes', () => {
  it('a clean guest: its ps lists every process vigil sees; one reading each, no note', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    const agent = psAgent(() => guestFixture('ps-busybox-eo.txt'));
    const r = await check(agent, processes(k), 'processes');
    assert.deepEqual(r, { findings: [], notes: [], readings: 1, state: { psForm: 0 } });
    assert.deepEqual(agent.calls, ['exec ps -eo pid=,comm=']);
  });

  it('reports a process the guest’s ps omits, with both kernel views and the command', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    const hidden = k.addProcess({ pid: 4242, comm: 'vk-hidden', uid: 0 });
    k.buildIdr();
    const agent = psAgent(() => guestFixture('ps-busybox-eo.txt'));
    const r = await check(agent, processes(k), 'processes');
    assert.deepEqual(r.notes, []);
    assert.equal(r.readings, 2, 'read again before believing it');
    assert.equal(agent.execCalls, 2, 'the guest asked again too');
    assert.equal(r.findings.length, 1);
    const f = r.findings[0]!;
    assert.equal(f.key, 'guest-ps:pid=4242:start=4242000000');
    assert.equal(f.severity, 'high');
    assert.equal(f.technique, 'T1014');
    assert.equal(f.summary, "process 4242 (vk-hidden) is hidden from the guest's own ps");
    assert.equal(f.evidence.pid, 4242);
    assert.equal(f.evidence.comm, 'vk-hidden');
    assert.equal(f.evidence.task, '0x' + hidden.toString(16));
    assert.deepEqual(f.evidence.views, { taskList: true, pidTable: true, guestPs: false });
    assert.equal(f.evidence.guestCommand, 'ps -eo pid=,comm=');
  });

  it('works the same from procps output', async () => {
    const k = kernelFromPs('ps-procps-eo.txt');
    k.addProcess({ pid: 77777, comm: 'hidden' });
    k.buildIdr();
    const r = await check(
      psAgent(() => guestFixture('ps-procps-eo.txt')),
      processes(k),
      'processes',
    );
    assert.deepEqual(
      r.findings.map((f) => f.evidence.pid),
      [77777],
    );
  });

  it('races are not lies: forked after ps, exited before ps, a PID reused, a listing that skipped one', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    k.addProcess({ pid: 4242, comm: 'vk-hidden' });
    const exiting = k.addProcess({ pid: 5000, comm: 'short-lived' });
    const reused = k.addProcess({ pid: 5001, comm: 'old' });
    k.addProcess({ pid: 5002, comm: 'skipped-once' });
    k.buildIdr();
    const listing = guestFixture('ps-busybox-eo.txt').toString();
    const agent = psAgent((call) => {
      if (call === 1) {
        // While ps ran: 5000 exited, 5001 exited and its PID went to a new process, and the next fork
        // (6000) came after ps had read /proc.
        k.put('task_struct', exiting, { exit_state: EXIT_ZOMBIE });
        k.put('task_struct', reused, { start_time: 999n });
        k.addProcess({ pid: 6000, comm: 'forked-later' });
        k.buildIdr();
        return Buffer.from(listing);
      }
      // The second listing shows the process the first one skipped.
      return Buffer.from(listing + ' 5002 skipped-once\n');
    });
    const r = await check(agent, processes(k), 'processes');
    assert.deepEqual(
      r.findings.map((f) => f.evidence.pid),
      [4242],
    );
  });

  it('exiting tasks and zombies are left out, though ps would not show them', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    k.addProcess({ pid: 700, comm: 'zombie', exitState: EXIT_ZOMBIE });
    k.addProcess({ pid: 701, comm: 'exiting', flags: 0x4 });
    k.buildIdr();
    const r = await check(
      psAgent(() => guestFixture('ps-busybox-eo.txt')),
      processes(k),
      'processes',
    );
    assert.deepEqual(r.findings, []);
    assert.equal(r.readings, 1);
  });

  it('a process only in the PID table (unlinked from the task list) says so in its views', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    const t = k.addProcess({ pid: 4243, comm: 'vk-unlinked' });
    k.buildIdr();
    // list_del from init_task.tasks, as vk_dkom does.
    const node = t + k.off('task_struct', 'tasks');
    const next = k.readPtr(node);
    const prev = k.readPtr(node + 8n);
    k.space.writeU64(prev, next);
    k.space.writeU64(next + 8n, prev);
    const r = await check(
      psAgent(() => guestFixture('ps-busybox-eo.txt')),
      processes(k),
      'processes',
    );
    assert.equal(r.findings.length, 1);
    assert.deepEqual(r.findings[0]!.evidence.views, { taskList: false, pidTable: true, guestPs: false });
  });

  it('falls back to busybox when there is no ps in PATH, and remembers what worked', async () => {
    const k = kernelFromPs('ps-busybox-o.txt');
    const agent = new FakeAgent((path, args) =>
      path === 'ps'
        ? ran('', 127, 'ps: not found')
        : args.length > 1
          ? ran(guestFixture('ps-busybox-o.txt'))
          : ran(guestFixture('ps-busybox.txt')),
    );
    const r = await check(agent, processes(k), 'processes');
    assert.deepEqual(r.findings, []);
    assert.deepEqual(r.notes, []);
    assert.deepEqual(agent.calls, ['exec ps -eo pid=,comm=', 'exec /bin/busybox ps -o pid,comm']);
    assert.equal(r.state.psForm, 1);
    agent.calls.length = 0;
    await check(agent, processes(k), 'processes', { state: r.state });
    assert.deepEqual(agent.calls, ['exec /bin/busybox ps -o pid,comm'], 'next sweep starts with it');
  });

  it('a broken answer is a note, never 50 hidden processes', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    const empty = await check(
      psAgent(() => Buffer.alloc(0)),
      processes(k),
      'processes',
    );
    assert.deepEqual(empty.findings, []);
    assert.equal(empty.notes.length, 1);
    assert.match(empty.notes[0]!, /^malformed: guest ps -eo pid=,comm=: ps printed nothing/);

    const garbage = Buffer.alloc(2 << 20);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 2654435761) >>> 24;
    const noisy = await check(
      psAgent(() => garbage),
      processes(k),
      'processes',
    );
    assert.deepEqual(noisy.findings, []);
    assert.match(
      noisy.notes.join('\n'),
      /^malformed: guest ps -eo pid=,comm=: ps (listed no process|output: \d+ of \d+ lines)/,
    );

    const cut = new FakeAgent(() => ({ ...ran(guestFixture('ps-busybox-eo.txt')), truncated: true }));
    const truncated = await check(cut, processes(k), 'processes');
    assert.deepEqual(truncated.findings, []);
    assert.match(truncated.notes[0]!, /^bound: .*output cut/);
  });

  it('a listing that lacks most processes is another view (a PID namespace), not a rootkit', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    const r = await check(
      psAgent(() => Buffer.from('    1 init\n    2 sh\n')),
      processes(k),
      'processes',
    );
    assert.deepEqual(r.findings, []);
    assert.equal(r.notes.length, 1);
    assert.match(
      r.notes[0]!,
      /^malformed: the guest's ps \(ps -eo pid=,comm=\) lacks \d+ of the \d+ vigil sees/,
    );
  });

  it('an agent that does not answer: a timeout note, nothing else asked', async () => {
    const k = kernelFromPs('ps-busybox-eo.txt');
    const hang = new FakeAgent(
      () => new Promise(() => undefined),
      () => new Promise(() => undefined),
    );
    const start = Date.now();
    const r = await check(hang, processes(k), 'processes', { areas: new Set(GUEST_ALL) });
    assert.ok(Date.now() - start < 2000);
    assert.deepEqual(r.findings, []);
    assert.deepEqual(hang.calls, ['exec ps -eo pid=,comm='], 'no other form, no file read');
    assert.match(r.notes[0]!, /^timeout: guest ps -eo pid=,comm=: .* took over 200 ms/);

    const gone = new FakeAgent(() => {
      throw new VigilError('vmm', 'io', 'guest agent connection closed');
    });
    const r2 = await check(gone, processes(k), 'processes', { areas: new Set(GUEST_ALL) });
    assert.deepEqual(r2.findings, []);
    assert.deepEqual(r2.notes, ['io: guest ps -eo pid=,comm=: guest agent connection closed']);
  });
});

// -------------------------------------------------------------------------------------------- modules

/** The modules of the real /proc/modules, laid out one after the other in the test module area. */
function kernelFromModules(): IntegrityTestKernel {
  const k = new IntegrityTestKernel();
  let base = MODULE_AREA;
  for (const m of parseProcModules(guestFixture('proc-modules.txt'))) {
    k.addModule({ name: m.name, base, size: BigInt(m.size) });
    base += BigInt(m.size);
  }
  return k;
}

const nextBase = (k: IntegrityTestKernel) =>
  MODULE_AREA + readModules(k).reduce((n, s) => n + (s.module?.size ?? 0n), 0n);

const fileAgent = (files: (path: string, call: number) => Buffer) =>
  new FakeAgent(() => ran(''), files as FileHandler);

describe('lie-detector-guest: modules', () => {
  const modules = (k: IntegrityTestKernel) => () => {
    k.refresh();
    return { modules: readModules(k) };
  };

  it('a clean guest: /proc/modules lists what vigil sees', async () => {
    const k = kernelFromModules();
    const agent = fileAgent(() => guestFixture('proc-modules.txt'));
    const r = await check(agent, modules(k), 'modules');
    assert.deepEqual(r.findings, []);
    assert.deepEqual(r.notes, []);
    assert.deepEqual(agent.calls, ['read /proc/modules']);
  });

  it('reports a module hidden from the list (found in mod_tree and memory) and one /proc/modules filters', async () => {
    const k = kernelFromModules();
    const b1 = nextBase(k);
    const hidemod = k.addModule({ name: 'vk_hidemod', base: b1, size: 0x4000n, list: false, sysfs: false });
    const b2 = b1 + 0x4000n;
    k.addModule({ name: 'vk_procfs', base: b2, size: 0x4000n, structAt: 0x2000n });
    const r = await check(
      fileAgent(() => guestFixture('proc-modules.txt')),
      modules(k),
      'modules',
    );
    assert.deepEqual(r.notes, []);
    const byName = new Map(r.findings.map((f) => [f.evidence.module, f]));
    assert.deepEqual([...byName.keys()].sort(), ['vk_hidemod', 'vk_procfs']);
    const h = byName.get('vk_hidemod')!;
    assert.equal(h.key, `guest-modules:vk_hidemod:0x${hidemod.toString(16)}`);
    assert.equal(h.evidence.base, '0x' + b1.toString(16));
    assert.deepEqual(h.evidence.views, {
      list: false,
      sysfs: false,
      modTree: true,
      memory: true,
      guestProcModules: false,
    });
    assert.match(
      h.summary,
      /^module vk_hidemod at 0x[0-9a-f]+ is missing from the guest's \/proc\/modules \(vigil sees it in mod_tree, module memory\)$/,
    );
    const p = byName.get('vk_procfs')!;
    assert.deepEqual(p.evidence.views, {
      list: true,
      sysfs: true,
      modTree: true,
      memory: true,
      guestProcModules: false,
    });
    assert.equal(p.severity, 'high');
  });

  it('a module loaded after the listing, or one listed by address only, is not hidden', async () => {
    const k = kernelFromModules();
    const b = nextBase(k);
    const text = guestFixture('proc-modules.txt').toString();
    // /proc/modules under a name vigil cannot read, but at the base vigil knows.
    k.addModule({ name: 'renamed', base: b, size: 0x4000n });
    const listing = `${text}other 16384 0 - Live 0x${b.toString(16)}\n`;
    const agent = fileAgent((_path, call) => {
      if (call === 1) k.addModule({ name: 'late', base: b + 0x4000n, size: 0x4000n });
      return Buffer.from(listing);
    });
    const r = await check(agent, modules(k), 'modules');
    assert.deepEqual(r.findings, []);
  });

  it('modules loading or unloading are left out: /proc/modules may have moved on', async () => {
    const k = kernelFromModules();
    const b = nextBase(k);
    k.addModule({ name: 'coming', base: b, size: 0x4000n, state: 1 });
    k.addModule({ name: 'going', base: b + 0x4000n, size: 0x4000n, state: 2 });
    const r = await check(
      fileAgent(() => guestFixture('proc-modules.txt')),
      modules(k),
      'modules',
    );
    assert.deepEqual(r.findings, []);
    assert.equal(r.readings, 1);
  });

  it('an empty /proc/modules while vigil sees eight modules is not believed', async () => {
    const k = kernelFromModules();
    const r = await check(
      fileAgent(() => Buffer.alloc(0)),
      modules(k),
      'modules',
    );
    assert.deepEqual(r.findings, []);
    assert.match(r.notes[0]!, /^malformed: the guest's \/proc\/modules lacks 8 of the 8 vigil sees/);
  });
});

// -------------------------------------------------------------------------------------------- sockets

const INIT_NS = 4026531840;

/** The guest's address column as the bytes of the address (network order). */
function columnBytes(hex: string): Buffer {
  const b = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++)
    b.writeUInt32LE(Number.parseInt(hex.slice(w * 8, w * 8 + 8), 16), w * 4);
  return b;
}

/** A kernel with one socket per row of the real /proc/net tables, on the tables the walker reads. */
function socketWorld() {
  const w = new NetWorld();
  const net = w.addNet(INIT_NS);
  const other = w.addNet(INIT_NS + 1000);
  const tcp = w.addTcpHashinfo(4, 8);
  const udp = w.addUdpTable(4);
  const listen: bigint[] = [];
  const est: bigint[] = [];
  const udps: bigint[] = [];
  const tables: [ProcNetTable, string][] = [
    ['tcp', 'proc-net-tcp.txt'],
    ['tcp6', 'proc-net-tcp6.txt'],
    ['udp', 'proc-net-udp.txt'],
    ['udp6', 'proc-net-udp6.txt'],
  ];
  for (const [table, file] of tables) {
    const raw = guestFixture(file);
    parseProcNet(raw, table); // the fixture is a valid table
    for (const row of raw.toString().split('\n').slice(1)) {
      const c = row.trim().split(/\s+/);
      if (c.length < 10) continue;
      const [la, lp] = c[1]!.split(':');
      const [ra, rp] = c[2]!.split(':');
      const sk = w.addSock({
        family: table.endsWith('6') ? AF_INET6 : AF_INET,
        state: Number.parseInt(c[3]!, 16),
        net,
        type: table.startsWith('tcp') ? 1 : 2,
        protocol: table.startsWith('tcp') ? 6 : 17,
        ino: Number(c[9]),
        local: columnBytes(la!),
        localPort: Number.parseInt(lp!, 16),
        remote: columnBytes(ra!),
        remotePort: Number.parseInt(rp!, 16),
      });
      (table.startsWith('udp') ? udps : c[3] === '0A' ? listen : est).push(sk);
    }
  }
  const relink = () => {
    w.chain(w.listenBucket(tcp.lhash2, 1), listen, { nulls: true, marker: (1n << 1n) | 1n });
    w.chain(tcp.ehash + 3n * 8n, est, { nulls: true, marker: (3n << 1n) | 1n });
    w.chain(w.udpSlot(udp.hash, 2), udps, { nulls: false });
  };
  // A listener in another network namespace: the agent's /proc/net does not show it, rightly.
  listen.push(
    w.addSock({
      family: AF_INET,
      state: 10,
      net: other,
      ino: 30000,
      local: Buffer.alloc(4),
      localPort: 8080,
    }),
  );
  relink();
  const addListener = (ino: number, port: number) => {
    const sk = w.addSock({ family: AF_INET, state: 10, net, ino, local: Buffer.alloc(4), localPort: port });
    listen.push(sk);
    relink();
    return sk;
  };
  return { w, k: w.k, net, listen, est, relink, addListener };
}

const netFiles = (path: string): Buffer => guestFixture(`proc-net-${path.split('/').at(-1)}.txt`);

describe('lie-detector-guest: sockets', () => {
  const sockets = (k: NetWorld['k']) => () => ({ sockets: readSockets(k) });

  it('a clean guest: every socket of the initial namespace is in its /proc/net', async () => {
    const { k } = socketWorld();
    const seen = readSockets(k);
    assert.ok(seen.length >= 8, `${seen.length} sockets`);
    assert.ok(seen.every((s) => s.netns === INIT_NS));
    const agent = fileAgent(netFiles);
    const r = await check(agent, sockets(k), 'sockets');
    assert.deepEqual(r.findings, []);
    assert.deepEqual(r.notes, []);
    assert.deepEqual(agent.calls, [
      'read /proc/net/tcp',
      'read /proc/net/tcp6',
      'read /proc/net/udp',
      'read /proc/net/udp6',
    ]);
  });

  it('reports a listener /proc/net/tcp omits, with its owner when known', async () => {
    const world = socketWorld();
    const sk = world.addListener(20000, 31337);
    let ownersAsked: number[] = [];
    const r = await check(fileAgent(netFiles), sockets(world.k), 'sockets', {
      owners: (list: Socket[]) => {
        ownersAsked = list.map((s) => s.inode);
        for (const s of list) s.owners = [{ pid: 130, comm: 'vk-hiddenport', fd: 3 }];
      },
    });
    assert.deepEqual(r.notes, []);
    assert.deepEqual(ownersAsked, [20000], 'owners are looked up for hidden sockets only');
    assert.equal(r.findings.length, 1);
    const f = r.findings[0]!;
    assert.equal(f.key, 'guest-net:tcp:0.0.0.0:31337:inode=20000');
    assert.equal(
      f.summary,
      "tcp socket 0.0.0.0:31337 (LISTEN, inode 20000, held by pid 130 (vk-hiddenport)) is missing from the guest's /proc/net/tcp",
    );
    assert.equal(f.evidence.protocol, 'tcp');
    assert.equal(f.evidence.local, '0.0.0.0:31337');
    assert.equal(f.evidence.localPort, 31337);
    assert.equal(f.evidence.inode, 20000);
    assert.equal(f.evidence.state, 'LISTEN');
    assert.equal(f.evidence.netns, INIT_NS);
    assert.equal(f.evidence.sock, '0x' + sk.toString(16));
    assert.deepEqual(f.evidence.views, { kernelTables: true, guestProcNet: false });
  });

  it('sockets closed before or opened after the guest read its tables are not hidden', async () => {
    const world = socketWorld();
    world.addListener(20000, 31337);
    const closing = world.addListener(20001, 5000);
    let reads = 0;
    const agent = fileAgent((path) => {
      if (path === '/proc/net/tcp' && reads++ === 0) {
        world.listen.splice(world.listen.indexOf(closing), 1); // closed
        world.addListener(20002, 5001); // opened after the listing
      }
      return netFiles(path);
    });
    const r = await check(agent, sockets(world.k), 'sockets');
    assert.deepEqual(
      r.findings.map((f) => f.evidence.inode),
      [20000],
    );
  });

  it('a table that cannot be read is a note, and only its sockets go uncompared', async () => {
    const world = socketWorld();
    world.addListener(20000, 31337);
    const agent = fileAgent((path) => {
      if (path === '/proc/net/tcp6') throw new VigilError('vmm', 'not-found', 'guest-file-open failed');
      if (path === '/proc/net/udp') return Buffer.from('garbage\n');
      return netFiles(path);
    });
    const r = await check(agent, sockets(world.k), 'sockets');
    assert.deepEqual(
      r.findings.map((f) => f.evidence.inode),
      [20000],
    );
    assert.ok(r.notes.some((n) => /^not-found: guest \/proc\/net\/tcp6: guest-file-open failed$/.test(n)));
    assert.ok(r.notes.some((n) => /^malformed: guest \/proc\/net\/udp: .*no header/.test(n)));
  });

  it('a table the guest lacks (no IPv6) goes unnoted when vigil has nothing in it either', async () => {
    const world = socketWorld();
    const noV6 = (path: string): Buffer => {
      if (path.endsWith('6'))
        throw new VigilError('vmm', 'protocol', `guest-file-open: ${path}: No such file`);
      return netFiles(path);
    };
    // The fixture world has a tcp6 listener and a udp6 socket: their tables missing is worth a note…
    const withV6 = await check(fileAgent(noV6), sockets(world.k), 'sockets');
    assert.deepEqual(
      withV6.notes,
      ['tcp6', 'udp6'].map(
        (t) => `protocol: guest /proc/net/${t}: guest-file-open: /proc/net/${t}: No such file`,
      ),
    );
    // …but not once vigil sees no IPv6 socket at all.
    const v4only = () => ({ sockets: readSockets(world.k).filter((s) => !s.netid.endsWith('6')) });
    const r = await check(fileAgent(noV6), v4only, 'sockets');
    assert.deepEqual(r, { findings: [], notes: [], readings: 1, state: { psForm: 0 } });
  });

  it('orphaned sockets (inode 0) are matched by their endpoints', async () => {
    const world = socketWorld();
    const orphan = world.w.addSock({
      family: AF_INET,
      state: 4, // FIN_WAIT1 after close(): no struct socket, inode 0 in /proc/net/tcp too
      net: world.net,
      local: Buffer.from([127, 0, 0, 1]),
      localPort: 40000,
      remote: Buffer.from([127, 0, 0, 1]),
      remotePort: 4444,
    });
    world.est.push(orphan);
    world.relink();
    const row =
      '   9: 0100007F:9C40 0100007F:115C 04 00000000:00000000 01:00000014 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1\n';
    const listed = fileAgent((p) =>
      p === '/proc/net/tcp' ? Buffer.concat([netFiles(p), Buffer.from(row)]) : netFiles(p),
    );
    assert.deepEqual((await check(listed, sockets(world.k), 'sockets')).findings, []);
    const omitted = await check(fileAgent(netFiles), sockets(world.k), 'sockets');
    assert.deepEqual(
      omitted.findings.map((f) => [f.evidence.inode, f.evidence.local]),
      [[0, '127.0.0.1:40000']],
    );
  });
});

// --------------------------------------------------------------------------------------------- engine

describe('lie-detector-guest in the engine', () => {
  it('runs only with a guest agent; without one the engine says why it is skipped', () => {
    const agent = new FakeAgent(() => ran(''));
    const withAgent: Machine = { ...fakeMachine(), agent };
    assert.ok([...describeTarget(withAgent).capabilities].includes('guest-agent'));
    assert.ok(![...describeTarget(fakeMachine()).capabilities].includes('guest-agent'));
    const status = (machine: Machine) =>
      new Engine<Kernel>({ vm: 'vm', machine, policies: [lieDetectorGuestPolicy], kernel: {} as Kernel })
        .status()
        .find((s) => s.id === 'lie-detector-guest')!;
    assert.equal(status(withAgent).state, 'active');
    const skipped = status(fakeMachine());
    assert.equal(skipped.state, 'skipped');
    assert.equal(skipped.reason, 'needs qemu-guest-agent; target is a live VM');
    assert.match(
      status(fakeMachine({ dump: true })).reason!,
      /needs qemu-guest-agent; target is a memory dump/,
    );
  });
});

describe('lie-detector-guest options', () => {
  it('checks views and timeoutMs when the config is read', () => {
    assert.deepEqual(parseGuestLieOptions({}), {
      views: ['processes', 'modules', 'sockets'],
      timeoutMs: 10_000,
    });
    assert.deepEqual(parseGuestLieOptions({ views: ['sockets', 'sockets'], timeoutMs: 500 }), {
      views: ['sockets'],
      timeoutMs: 500,
    });
    assert.throws(() => parseGuestLieOptions({ views: ['files'] }), /option "views" must be a list of/);
    assert.throws(() => parseGuestLieOptions({ views: 'sockets' }), /option "views"/);
    assert.throws(() => parseGuestLieOptions({ timeoutMs: 0 }), /timeoutMs/);
    assert.throws(() => parseGuestLieOptions({ timeout: 5 }), /unknown option "timeout"/);
    // The engine rejects a bad config before any sweep.
    assert.throws(
      () =>
        new Engine<Kernel>({
          vm: 'vm',
          machine: fakeMachine(),
          policies: [lieDetectorGuestPolicy],
          config: { policies: { 'lie-detector-guest': { options: { views: ['files'] } } } },
        }),
      /config of policy "lie-detector-guest": bad options/,
    );
  });
});
