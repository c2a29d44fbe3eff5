import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVigilError } from '../../../util/errors.js';
import { AF_INET, AF_INET6, AF_PACKET, AF_UNIX } from './names.js';
import { listSockets } from './sockets.js';
import { listNetDevices } from './netdev.js';
import { FakeNetKernel, ipv4, NetWorld } from './testkit.js';

const INIT_NS = 4026531840;
const v6any = Buffer.alloc(16);
const v6lo = Buffer.from('00000000000000000000000000000001', 'hex');

/** One namespace with a socket of every kind on its table, as the kernel links them. */
function world() {
  const w = new NetWorld();
  const k = w.k;
  const net = w.addNet(INIT_NS);
  const tcp = w.addTcpHashinfo(4, 8);
  const listener = w.addSock({
    family: AF_INET6,
    state: 10,
    net,
    type: 1,
    protocol: 6,
    ino: 9927,
    local: v6any,
    localPort: 7777,
  });
  w.chain(w.listenBucket(tcp.lhash2, 2), [listener], { nulls: true, marker: (2n << 1n) | 1n });
  const est = w.addSock({
    family: AF_INET,
    state: 1,
    net,
    type: 1,
    protocol: 6,
    uid: 1000,
    ino: 10274,
    local: ipv4('127.0.0.1'),
    localPort: 54120,
    remote: ipv4('127.0.0.1'),
    remotePort: 7102,
  });
  // A TIME_WAIT mini socket is only a sock_common: nothing past it may be read.
  const tw = w.addSock({
    struct: 'sock_common',
    family: AF_INET6,
    state: 6,
    net,
    local: v6lo,
    localPort: 7102,
    remote: v6lo,
    remotePort: 40000,
  });
  w.chain(tcp.ehash + 5n * 8n, [est, tw], { nulls: true, marker: (5n << 1n) | 1n });
  const udp = w.addUdpTable(4);
  const u = w.addSock({
    family: AF_INET,
    state: 7,
    net,
    type: 2,
    protocol: 17,
    ino: 10278,
    local: ipv4('0.0.0.0'),
    localPort: 45861,
  });
  w.chain(w.udpSlot(udp.hash, 1), [u], { nulls: false });
  const raw = w.addRawHashinfo('raw_v4_hashinfo');
  const r = w.addSock({ family: AF_INET, state: 7, net, type: 3, protocol: 1, ino: 10237, localPort: 1 });
  w.chain(w.rawBucket(raw, 1), [r], { nulls: false });
  const buckets = w.addUnixTable(net);
  const log = w.addSock({ struct: 'unix_sock', family: AF_UNIX, state: 1, net, type: 2, ino: 10239 });
  w.bindUnix(log, Buffer.from('/dev/log\0'));
  const abs = w.addSock({ struct: 'unix_sock', family: AF_UNIX, state: 10, net, type: 1, ino: 10300 });
  w.bindUnix(abs, Buffer.from('\0my\0name'));
  w.chain(buckets + 3n * 8n, [log, abs], { nulls: false });
  const pk = w.addSock({ struct: 'packet_sock', family: AF_PACKET, state: 7, net, type: 2, ino: 10236 });
  k.set('packet_sock', pk, 'ifindex', 2);
  k.setBytes('packet_sock', pk, 'num', Buffer.from([0x08, 0x06]));
  k.set('net', net, 'packet.sklist.first', k.addressOf('sock_common', pk, 'skc_node'));
  return { w, k, net, tcp, udp, listener, est, tw, u, r, log, abs, pk };
}

const pick = (s: ReturnType<typeof listSockets>[number]) => ({
  netid: s.netid,
  kind: s.kind,
  state: s.state,
  local: s.local,
  remote: s.remote,
  inode: s.inode,
  netns: s.netns,
});

describe('listSockets', () => {
  it('finds every kind of socket on its table, with addresses, states, inodes and namespace', () => {
    const { k } = world();
    const got = listSockets(k);
    assert.deepEqual(k.issues.items, []);
    assert.deepEqual(got.map(pick), [
      {
        netid: 'tcp',
        kind: 'full',
        state: 'ESTABLISHED',
        local: '127.0.0.1:54120',
        remote: '127.0.0.1:7102',
        inode: 10274,
        netns: INIT_NS,
      },
      {
        netid: 'tcp6',
        kind: 'full',
        state: 'LISTEN',
        local: '[::]:7777',
        remote: '[::]:0',
        inode: 9927,
        netns: INIT_NS,
      },
      {
        netid: 'tcp6',
        kind: 'timewait',
        state: 'TIME_WAIT',
        local: '[::1]:7102',
        remote: '[::1]:40000',
        inode: 0,
        netns: INIT_NS,
      },
      {
        netid: 'udp',
        kind: 'full',
        state: 'CLOSE',
        local: '0.0.0.0:45861',
        remote: '0.0.0.0:0',
        inode: 10278,
        netns: INIT_NS,
      },
      {
        netid: 'raw',
        kind: 'full',
        state: 'CLOSE',
        local: '0.0.0.0:1',
        remote: '0.0.0.0:0',
        inode: 10237,
        netns: INIT_NS,
      },
      {
        netid: 'unix',
        kind: 'full',
        state: 'ESTABLISHED',
        local: '/dev/log',
        remote: '*',
        inode: 10239,
        netns: INIT_NS,
      },
      {
        netid: 'unix',
        kind: 'full',
        state: 'LISTEN',
        local: '@my@name',
        remote: '*',
        inode: 10300,
        netns: INIT_NS,
      },
      {
        netid: 'packet',
        kind: 'full',
        state: 'CLOSE',
        local: '0x0806@2',
        remote: '*',
        inode: 10236,
        netns: INIT_NS,
      },
    ]);
    const est = got.find((s) => s.netid === 'tcp')!;
    assert.equal(est.uid, 1000);
    assert.equal(est.type, 'stream');
    assert.equal(est.protocol, 6);
    const pk = got.find((s) => s.netid === 'packet')!;
    assert.equal(pk.protocol, 0x0806);
    assert.equal(pk.ifindex, 2);
    assert.equal(got.find((s) => s.path === '/dev/log')!.type, 'dgram');
  });

  it('stops a looping established chain with a cycle issue and reports each socket once', () => {
    const { w, k, tcp, est, tw } = world();
    // est → tw → est …
    w.chain(tcp.ehash + 5n * 8n, [est, tw], { nulls: true });
    k.writePointer(
      k.addressOf('sock_common', tw, 'skc_nulls_node'),
      k.addressOf('sock_common', est, 'skc_nulls_node'),
    );
    const got = listSockets(k).filter((s) => s.netid.startsWith('tcp'));
    assert.equal(got.filter((s) => s.address === est).length, 1);
    assert.equal(got.filter((s) => s.address === tw).length, 1);
    assert.ok(
      k.issues.items.some((i) => i.walker === 'tcp' && i.kind === 'cycle'),
      JSON.stringify(k.issues.items),
    );
  });

  it('caps an absurd ehash_mask with a bound issue and still finds what lies in the real buckets', () => {
    const { k, tcp } = world();
    k.set('inet_hashinfo', tcp.hashinfo, 'ehash_mask', 0xffff_ffff);
    const t0 = performance.now();
    const got = listSockets(k);
    assert.ok(performance.now() - t0 < 5000);
    assert.ok(
      k.issues.items.some((i) => i.walker === 'tcp' && i.kind === 'bound' && /4194304/.test(i.detail)),
    );
    assert.ok(got.some((s) => s.netid === 'tcp' && s.state === 'ESTABLISHED'));
  });

  it('bounds the total number of sockets', () => {
    const { k } = world();
    const got = listSockets(k, { max: 3 });
    assert.equal(got.length, 3);
    assert.equal(k.issues.items.filter((i) => i.kind === 'bound').length, 1);
  });

  it('survives garbage: unmapped chains, tables and names become issues, never a crash', () => {
    const { w, k, udp, tcp, log, net } = world();
    k.writePointer(w.udpSlot(udp.hash, 2), 0xdead_beef_0000n); // a chain into nowhere
    k.set('inet_hashinfo', tcp.hashinfo, 'lhash2', 0xffff_ffff_0000_0000n); // an unreadable table
    k.set('unix_sock', log, 'addr', 0x1234_5000n); // a name that cannot be read
    k.set('net', net, 'packet.sklist.first', 0x10n); // a list into page zero
    let got;
    try {
      got = listSockets(k);
    } catch (e) {
      assert.ok(isVigilError(e), `only VigilError may escape: ${String(e)}`);
      throw e;
    }
    const unix = got.find((s) => s.address === log)!;
    assert.equal(unix.path, undefined);
    assert.equal(unix.inode, 10239);
    const kinds = new Set(k.issues.items.map((i) => `${i.walker}:${i.kind}`));
    for (const want of ['udp:unmapped', 'tcp:unmapped', 'unix:unmapped', 'packet:unmapped']) {
      assert.ok(kinds.has(want), `${want} in ${[...kinds].join(' ')}`);
    }
    // The established socket in the ehash is still found.
    assert.ok(got.some((s) => s.netid === 'tcp' && s.state === 'ESTABLISHED'));
  });

  it('clips a hostile unix_address length to the size of a sockaddr_un', () => {
    const { w, k, log } = world();
    w.bindUnix(log, Buffer.from('/a\0'), 0x7fff_ffff);
    const got = listSockets(k);
    assert.equal(got.find((s) => s.address === log)!.path, '/a');
  });

  it('attributes sockets to their own namespace and flags one whose namespace is not listed', () => {
    const { w, k, tcp } = world();
    const other = w.addNet(4026532142);
    const hidden = k.alloc(64); // a struct net that is not on net_namespace_list
    const a = w.addSock({ family: AF_INET6, state: 10, net: other, ino: 1, local: v6any, localPort: 7104 });
    const b = w.addSock({ family: AF_INET6, state: 10, net: hidden, ino: 2, local: v6any, localPort: 7105 });
    w.chain(w.listenBucket(tcp.lhash2, 0), [a, b], { nulls: true });
    const got = listSockets(k);
    assert.equal(got.find((s) => s.address === a)!.netns, 4026532142);
    assert.equal(got.find((s) => s.address === b)!.netns, undefined);
    assert.ok(k.issues.items.some((i) => i.walker === 'tcp' && /not on the namespace list/.test(i.detail)));
  });

  it('turns random corruption of every object into issues: it neither throws nor hangs', () => {
    // xorshift32, seeded: the same corruption on every run.
    let x = 0x9e3779b9;
    const rand = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), x >>> 0);
    let issues = 0;
    for (let round = 0; round < 40; round++) {
      const { w, k } = world();
      w.addDevice(k.symbols.address('init_net')!, {
        name: 'eth0',
        ifindex: 2,
        flags: 0x1003,
        mtu: 1500,
        mac: Buffer.alloc(6),
        operstate: 6,
      });
      const span = Number(k.next - FakeNetKernel.BASE);
      for (let i = 0; i < 12; i++) {
        const at = FakeNetKernel.BASE + BigInt((rand() % span) & ~7);
        // Half the time a pointer back into the objects (loops, misplaced nodes), else garbage.
        const v =
          rand() % 2 ? FakeNetKernel.BASE + BigInt(rand() % span) : (BigInt(rand()) << 32n) | BigInt(rand());
        k.writePointer(at, v);
      }
      assert.doesNotThrow(() => listSockets(k), `round ${round}`);
      assert.doesNotThrow(() => listNetDevices(k), `round ${round}`);
      issues += k.issues.items.length;
    }
    assert.ok(issues > 40, `the corruption was noticed (${issues} issues)`);
  });
});
