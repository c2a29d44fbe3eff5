// Acceptance for the network walkers: `vigil sockets` and `vigil netdev` agree with the guest's own
// /proc/net tables, /proc/PID/fd and /sys/class/net. The guest runs a fixture (lab/scripts/vigil-net-fixture)
// with a socket of every kind: TCP listener and connected pair (v4 client, v6 server side), UDP, raw ICMP,
// a UNIX datagram socket, a packet socket, and a listener in a second network namespace.
// vigil's read and the console's are not atomic: each comparison takes the console's view, then vigil's,
// then the console's again; vigil must show every socket present in both console views, and nothing that
// is in neither.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { GuestState } from '../../src/lab/index.js';
import { runVigil, vigilJson } from '../support/cli.js';
import { guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-main';

/** The fields of `vigil sockets --json` these tests read. */
interface SocketRow {
  netid: string;
  kind: 'full' | 'timewait' | 'request';
  type: string;
  state: string;
  netns?: number;
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
  inode: number;
  uid?: number;
  path?: string;
  protocol: number;
  ifindex?: number;
  owners?: { pid: number; comm: string; fd: number }[];
}

interface DeviceRow {
  name: string;
  ifindex: number;
  netns: number;
  flags: string[];
  flagsRaw: number;
  promiscuity: number;
  mtu: number;
  mac?: string;
  operstate: string;
}

const TCP_STATES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
];
const SOCK_TYPES: Record<string, number> = { stream: 1, dgram: 2, raw: 3, seqpacket: 5 };

/** An IPv6 address in one canonical text form (Node's URL parser), IPv4 as is. */
function canon(address: string): string {
  return address.includes(':') ? new URL(`http://[${address}]/`).hostname.slice(1, -1) : address;
}

/** /proc/net's hex address: IPv4 one host-order u32, IPv6 four of them. */
function procAddress(hex: string): string {
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++)
    bytes.writeUInt32LE(parseInt(hex.slice(w * 8, w * 8 + 8), 16), w * 4);
  if (bytes.length === 4) return [...bytes].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return canon(groups.join(':'));
}

interface Truth {
  /** Comparable keys of every socket in every namespace's /proc/net tables. */
  sockets: Set<string>;
  /** inode → "pid/fd" of every socket fd. */
  fds: Map<number, Set<string>>;
}

const TABLES = new Set(['tcp', 'tcp6', 'udp', 'udp6', 'raw', 'raw6', 'unix', 'packet']);

/**
 * The console's view: "T INUM TABLE:LINE" for each line of each namespace's /proc/net tables, then
 * `ls -l /proc/PID/fd/` of every process ("/proc/PID/fd/:" headers and "... FD -> socket:[INODE]").
 */
async function consoleTruth(guest: GuestState): Promise<Truth> {
  const text = await guestRun(guest, 'vigil-net-fixture truth', 120_000);
  const sockets = new Set<string>();
  const fds = new Map<number, Set<string>>();
  let pid = -1;
  for (const line of text.split('\n')) {
    const header = /^\/proc\/(\d+)\/fd\/?:/.exec(line);
    if (header) {
      pid = Number(header[1]);
      continue;
    }
    const fd = /\s(\d+) -> socket:\[(\d+)\]/.exec(line);
    if (fd) {
      const ino = Number(fd[2]);
      if (!fds.has(ino)) fds.set(ino, new Set());
      fds.get(ino)!.add(`${pid}/${fd[1]}`);
      continue;
    }
    const m = /^T (\d+) ([a-z0-9]+):(.*)$/.exec(line.trimEnd());
    if (!m || !TABLES.has(m[2]!)) continue;
    const [netns, table] = [Number(m[1]), m[2]!];
    const f = m[3]!.trim().split(/\s+/);
    if (!/^[0-9a-f]+:?$/i.test(f[0]!)) continue; // the table's header line
    if (table === 'unix') {
      // Num RefCount Protocol Flags Type St Inode Path
      sockets.add(
        unixKey(
          netns,
          Number(f[6]),
          parseInt(f[4]!, 16),
          f[7] ?? '',
          parseInt(f[3]!, 16),
          parseInt(f[5]!, 16),
        ),
      );
    } else if (table === 'packet') {
      // sk RefCnt Type Proto Iface R Rmem User Inode
      sockets.add(
        packetKey(netns, Number(f[8]), Number(f[2]), parseInt(f[3]!, 16), Number(f[4]), Number(f[7])),
      );
    } else {
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      const [la, lp] = f[1]!.split(':');
      const [ra, rp] = f[2]!.split(':');
      const state = TCP_STATES[parseInt(f[3]!, 16)] ?? f[3]!;
      const local = `${procAddress(la!)}:${parseInt(lp!, 16)}`;
      const remote = `${procAddress(ra!)}:${parseInt(rp!, 16)}`;
      sockets.add(inetKey(netns, table, local, remote, state, Number(f[9]), Number(f[7])));
    }
  }
  return { sockets, fds };
}

const inetKey = (
  netns: number,
  netid: string,
  l: string,
  r: string,
  state: string,
  ino: number,
  uid: number,
) => `${netns} ${netid} ${l} ${r} ${state} ino=${ino} uid=${uid}`;
const unixKey = (netns: number, ino: number, type: number, path: string, flags: number, st: number) =>
  `${netns} unix ino=${ino} type=${type} path=${path} flags=${flags.toString(16)} st=${st}`;
const packetKey = (netns: number, ino: number, type: number, proto: number, ifindex: number, uid: number) =>
  `${netns} packet ino=${ino} type=${type} proto=${proto} if=${ifindex} uid=${uid}`;

/** The key /proc would print for one of vigil's sockets. */
function vigilKey(s: SocketRow): string {
  const netns = s.netns ?? -1;
  if (s.netid === 'unix') {
    // /proc/net/unix: Flags has __SO_ACCEPTCON for listeners; St is SS_CONNECTED (3) or SS_UNCONNECTED (1)
    // for sockets with a struct socket, SS_CONNECTING (2) or SS_DISCONNECTING (4) without.
    const est = s.state === 'ESTABLISHED';
    const st = s.inode !== 0 ? (est ? 3 : 1) : est ? 2 : 4;
    return unixKey(netns, s.inode, SOCK_TYPES[s.type]!, s.path ?? '', s.state === 'LISTEN' ? 0x10000 : 0, st);
  }
  if (s.netid === 'packet')
    return packetKey(netns, s.inode, SOCK_TYPES[s.type] ?? -1, s.protocol, s.ifindex!, s.uid!);
  const l = `${canon(s.localAddress!)}:${s.localPort}`;
  const r = `${canon(s.remoteAddress!)}:${s.remotePort}`;
  return inetKey(netns, s.netid, l, r, s.state, s.inode, s.kind === 'full' ? s.uid! : 0);
}

interface Compared {
  rows: SocketRow[];
  keys: Map<string, SocketRow>;
  before: Truth;
  after: Truth;
}

/** Console, vigil, console; vigil must hold every socket of both console views and nothing from neither. */
async function compare(guest: GuestState): Promise<Compared> {
  const before = await consoleTruth(guest);
  const r = await runVigil(['sockets', '--mem', guest.memoryFile, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /note:/, 'no walk stopped early on a healthy guest');
  const after = await consoleTruth(guest);
  const rows = JSON.parse(r.stdout) as SocketRow[];
  const keys = new Map(rows.map((s) => [vigilKey(s), s]));
  const problems: string[] = [];
  for (const k of before.sockets) if (after.sockets.has(k) && !keys.has(k)) problems.push(`missing: ${k}`);
  for (const k of keys.keys())
    if (!before.sockets.has(k) && !after.sockets.has(k)) problems.push(`extra: ${k}`);
  assert.deepEqual(
    problems,
    [],
    `vigil vs /proc/net:\n${problems.join('\n')}\nconsole:\n${[...before.sockets].join('\n')}`,
  );
  return { rows, keys, before, after };
}

const has = (c: Compared, f: (s: SocketRow) => boolean, what: string): SocketRow => {
  const hit = c.rows.find(f);
  assert.ok(hit, `vigil shows ${what}`);
  return hit;
};

describe('vigil sockets and netdev on the reference guest', { timeout: 900_000 }, () => {
  let guest: GuestState;
  let initNs: number;
  // One comparison with the fixture running serves the listing and the owner tests.
  let running: Promise<Compared> | undefined;
  const withFixture = () => (running ??= compare(guest));

  before(async () => {
    guest = await sharedGuest(GUEST);
    initNs = Number(/net:\[(\d+)\]/.exec(await guestRun(guest, 'readlink /proc/1/ns/net'))![1]);
    await guestRun(guest, 'vigil-net-fixture stop');
    const started = await guestRun(guest, 'vigil-net-fixture start', 60_000);
    assert.match(started, /ready/);
  });

  after(async () => {
    if (!guest) return;
    await guestRun(guest, 'vigil-net-fixture stop').catch(() => {});
    await guestRun(guest, 'ip link set eth0 promisc off').catch(() => {});
  });

  it('lists the same sockets as /proc/net/{tcp,tcp6,udp,udp6,raw,raw6,unix,packet} of every namespace', async () => {
    const c = await withFixture();
    const inInit = (s: SocketRow) => s.netns === initNs;
    has(
      c,
      (s) => inInit(s) && s.netid === 'tcp6' && s.state === 'LISTEN' && s.localPort === 7101,
      'the 7101 listener',
    );
    has(
      c,
      (s) => inInit(s) && s.netid === 'tcp' && s.state === 'ESTABLISHED' && s.remotePort === 7102,
      'the v4 client end',
    );
    has(
      c,
      (s) =>
        inInit(s) &&
        s.netid === 'tcp6' &&
        s.state === 'ESTABLISHED' &&
        s.localPort === 7102 &&
        s.remoteAddress === '::ffff:127.0.0.1',
      'the v4-mapped server end',
    );
    has(
      c,
      (s) => inInit(s) && s.netid === 'udp' && s.owners?.some((o) => o.comm === 'syslogd') === true,
      "syslogd's UDP socket",
    );
    has(c, (s) => inInit(s) && s.netid === 'raw' && s.localPort === 1, "ping's raw ICMP socket");
    has(c, (s) => inInit(s) && s.netid === 'unix' && s.path === '/dev/log' && s.type === 'dgram', '/dev/log');
    has(
      c,
      (s) => inInit(s) && s.netid === 'packet' && s.protocol === 0x0806 && s.ifindex! > 1,
      "arping's packet socket",
    );
    const other = has(
      c,
      (s) => s.netid === 'tcp6' && s.localPort === 7104,
      'the listener in the second namespace',
    );
    assert.notEqual(other.netns, initNs);
    assert.ok(other.netns! > 0);
  });

  it('names the processes holding each socket, as /proc/PID/fd does', async () => {
    const c = await withFixture();
    let checked = 0;
    for (const s of c.rows) {
      if (s.inode === 0) continue;
      const b = c.before.fds.get(s.inode) ?? new Set<string>();
      const a = c.after.fds.get(s.inode) ?? new Set<string>();
      if ([...b].sort().join() !== [...a].sort().join()) continue; // changed while vigil read
      const mine = new Set((s.owners ?? []).map((o) => `${o.pid}/${o.fd}`));
      assert.deepEqual([...mine].sort(), [...b].sort(), `owners of ${s.netid} inode ${s.inode}`);
      checked++;
    }
    assert.ok(checked >= 8, `owners compared for ${checked} sockets`);
    const arping = has(c, (s) => s.netid === 'packet' && s.protocol === 0x0806, 'the packet socket');
    assert.deepEqual(
      arping.owners?.map((o) => o.comm),
      ['arping'],
    );
  });

  it('prints a table like ss with pid/comm owners', async () => {
    const r = await runVigil(['sockets', '--mem', guest.memoryFile, '--netid', 'tcp']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /^NETID\s+TYPE\s+STATE\s+LOCAL\s+PEER\s+INODE\s+UID\s+NETNS\s+PROCESSES$/);
    assert.ok(
      lines.some((l) => /^tcp6\s+stream\s+LISTEN\s+\[::\]:7101\s.*\d+\/nc$/.test(l)),
      r.stdout,
    );
    assert.ok(
      lines.slice(1).every((l) => /^tcp6?\s/.test(l)),
      'only TCP with --netid tcp',
    );
  });

  it('sees the pair go to TIME_WAIT when the client closes first', async () => {
    await guestRun(guest, 'vigil-net-fixture stop');
    const c = await compare(guest);
    const tw = c.rows.filter((s) => s.state === 'TIME_WAIT' && s.remotePort === 7102);
    const shown = [...c.before.sockets].filter((k) => /^\d+ tcp \S+ 127\.0\.0\.1:7102 TIME_WAIT /.test(k));
    assert.ok(shown.length >= 1, 'the console shows the client end in TIME_WAIT');
    assert.ok(tw.length >= 1, 'vigil shows the client end in TIME_WAIT');
    for (const s of tw) {
      assert.equal(s.kind, 'timewait');
      assert.equal(s.inode, 0);
      assert.equal(s.owners?.length ?? 0, 0);
    }
    assert.ok(
      !c.rows.some((s) => s.localPort === 7101 || s.path === '/dev/log'),
      'the fixture sockets are gone',
    );
  });

  it('shows devices as /sys/class/net does, and follows promiscuous mode', async () => {
    const sys = async () =>
      new Map(
        (await guestRun(guest, 'vigil-net-fixture devs'))
          .split('\n')
          .filter((l) => l.startsWith('D '))
          .map((l) => l.split(' '))
          .map(([, name, ifindex, flags, mtu, mac, oper]) => [
            name!,
            {
              ifindex: Number(ifindex),
              flags: parseInt(flags!, 16),
              mtu: Number(mtu),
              mac: mac!,
              oper: oper!,
            },
          ]),
      );
    const devs = async () =>
      (await vigilJson<DeviceRow[]>(['netdev', '--mem', guest.memoryFile])).filter((d) => d.netns === initNs);

    const truth = await sys();
    const mine = await devs();
    assert.deepEqual(mine.map((d) => d.name).sort(), [...truth.keys()].sort());
    for (const d of mine) {
      const t = truth.get(d.name)!;
      assert.equal(d.ifindex, t.ifindex, d.name);
      assert.equal(d.flagsRaw, t.flags, `${d.name} flags`);
      assert.equal(d.mtu, t.mtu, d.name);
      assert.equal(d.mac, t.mac, `${d.name} MAC`);
      assert.equal(d.operstate.toLowerCase(), t.oper, d.name);
    }
    const lo = mine.find((d) => d.name === 'lo')!;
    assert.ok(lo.flags.includes('LOOPBACK') && lo.flags.includes('UP'), lo.flags.join());
    const eth = () => devs().then((ds) => ds.find((d) => d.name === 'eth0')!);
    assert.ok(!(await eth()).flags.includes('PROMISC'));

    await guestRun(guest, 'ip link set eth0 promisc on');
    try {
      const on = await eth();
      assert.ok(on.flags.includes('PROMISC'), on.flags.join());
      assert.ok(on.promiscuity >= 1);
      assert.equal(on.flagsRaw, (await sys()).get('eth0')!.flags);
    } finally {
      await guestRun(guest, 'ip link set eth0 promisc off');
    }
    const off = await eth();
    assert.ok(!off.flags.includes('PROMISC'), off.flags.join());
    assert.equal(off.promiscuity, 0);
  });
});
