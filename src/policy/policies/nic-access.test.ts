import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fakeMachine } from '../testkit.js';
import type { Finding } from '../types.js';
import { claim, nicFindings, queryQemuNics, type NicFacts, type QemuNic } from './nic-access.js';

const IFF_UP = 0x1;
const IFF_PROMISC = 0x100;

const eth0 = (over: Partial<NicFacts> = {}): NicFacts => ({
  address: 0xffff888002000000n,
  netns: 4026531840,
  name: 'eth0',
  ifindex: 2,
  flags: ['UP'],
  flagsRaw: IFF_UP,
  gflags: 0,
  promiscuity: 0,
  allmulti: 0,
  mtu: 1500,
  mac: '52:54:00:12:34:56',
  hwType: 1,
  operstate: 'UP',
  netdevOps: 0n,
  permAddr: '52:54:00:12:34:56',
  addrAssign: 'permanent',
  switchPort: false,
  ...over,
});

const qemu = (over: Partial<QemuNic> = {}): QemuNic => ({
  name: 'net0',
  promiscuous: false,
  mainMac: '52:54:00:12:34:56',
  ...over,
});

const none = { allowPromisc: [], allowMacChange: [] };
const keys = (f: Finding[]) => f.map((x) => x.key).sort();

describe('nic-access', () => {
  it('is quiet on a normal NIC, with or without QEMU’s view', () => {
    assert.deepEqual(nicFindings([eth0()], undefined, undefined, none), []);
    assert.deepEqual(nicFindings([eth0()], [qemu()], { '4026531840/eth0': '52:54:00:12:34:56' }, none), []);
  });

  it('reports promiscuous mode from the flag or the promiscuity count', () => {
    const byUser = nicFindings(
      [eth0({ flagsRaw: IFF_UP | IFF_PROMISC, gflags: IFF_PROMISC, promiscuity: 1 })],
      [qemu({ promiscuous: true })],
      undefined,
      none,
    );
    assert.deepEqual(keys(byUser), ['promisc:4026531840/eth0']);
    assert.match(
      byUser[0]!.summary,
      /eth0 is in promiscuous mode \(promiscuity 1, asked for by user space\); QEMU NIC net0 agrees/,
    );
    assert.equal(byUser[0]!.evidence.device, 'eth0');
    assert.deepEqual(byUser[0]!.evidence.qemu, {
      nic: 'net0',
      promiscuous: true,
      mainMac: '52:54:00:12:34:56',
    });
    const bySocket = nicFindings([eth0({ promiscuity: 2 })], undefined, undefined, none);
    assert.match(bySocket[0]!.summary, /by a packet socket or the kernel/);
  });

  it('skips bridge ports and allowed devices', () => {
    const p = { flagsRaw: IFF_UP | IFF_PROMISC, promiscuity: 1 };
    assert.deepEqual(nicFindings([eth0({ ...p, switchPort: true })], undefined, undefined, none), []);
    assert.deepEqual(nicFindings([eth0(p)], undefined, undefined, { ...none, allowPromisc: ['eth0'] }), []);
  });

  it('reports a MAC that differs from the permanent address or the baseline', () => {
    const changed = eth0({ mac: '02:56:49:47:49:4c', addrAssign: 'set' });
    const f = nicFindings([changed], undefined, undefined, none);
    assert.deepEqual(keys(f), ['mac:4026531840/eth0:02:56:49:47:49:4c']);
    assert.match(
      f[0]!.summary,
      /eth0 MAC changed from 52:54:00:12:34:56 to 02:56:49:47:49:4c \(permanent address\)/,
    );
    assert.equal(f[0]!.evidence.previousMac, '52:54:00:12:34:56');
    // A driver without perm_addr: only the baseline can tell.
    const noPerm = eth0({ mac: '02:00:00:00:00:01', permAddr: undefined });
    assert.deepEqual(nicFindings([noPerm], undefined, undefined, none), []);
    const g = nicFindings([noPerm], undefined, { '4026531840/eth0': '02:00:00:00:00:00' }, none);
    assert.match(g[0]!.summary, /\(baseline\)/);
    assert.deepEqual(nicFindings([changed], undefined, undefined, { ...none, allowMacChange: ['eth0'] }), []);
    // Loopback and other non-Ethernet devices have no MAC to speak of.
    assert.deepEqual(
      nicFindings(
        [eth0({ name: 'lo', hwType: 772, mac: '00:00:00:00:00:00', permAddr: '01:00:00:00:00:00' })],
        undefined,
        undefined,
        none,
      ),
      [],
    );
  });

  it('reports QEMU seeing promiscuous mode the guest kernel does not show', () => {
    const f = nicFindings([eth0()], [qemu({ promiscuous: true })], undefined, none);
    assert.deepEqual(keys(f), ['promisc-hidden:4026531840/eth0']);
    const unseen = nicFindings(
      [eth0()],
      [qemu({ promiscuous: true, mainMac: 'aa:aa:aa:aa:aa:aa' })],
      undefined,
      none,
    );
    assert.deepEqual(keys(unseen), ['promisc-unseen:net0']);
  });

  it('raises each condition once, from whichever path saw it first', () => {
    const state = { owner: new Map<string, 'poll' | 'event'>() };
    const f = (k: string): Finding => ({ key: k, severity: 'high', summary: k, evidence: {} });
    // An event saw promiscuous mode: the poll keeps quiet about it while it lasts.
    assert.deepEqual(keys(claim(state, [f('a')], 'event')), ['a']);
    assert.deepEqual(keys(claim(state, [f('a')], 'poll')), []);
    assert.deepEqual(keys(claim(state, [f('a')], 'event')), []);
    // It went away and came back, seen first by a poll: the poll reports it on every sweep (tracker state).
    assert.deepEqual(keys(claim(state, [], 'poll')), []);
    assert.deepEqual(keys(claim(state, [f('a')], 'poll')), ['a']);
    assert.deepEqual(keys(claim(state, [f('a')], 'poll')), ['a']);
    assert.deepEqual(keys(claim(state, [f('a')], 'event')), []);
  });

  it('asks QEMU through the machine’s QMP client when there is one', async () => {
    const plain = fakeMachine();
    assert.equal(await queryQemuNics(plain), undefined);
    const rx = [
      { name: 'net0', promiscuous: true, 'main-mac': '52:54:00:AB:CD:EF' },
      { name: 'bad', promiscuous: 'yes' },
    ];
    const withQmp = Object.assign(fakeMachine(), { qmp: { queryRxFilter: async () => rx } });
    assert.deepEqual(await queryQemuNics(withQmp), [
      { name: 'net0', promiscuous: true, mainMac: '52:54:00:ab:cd:ef' },
    ]);
    const notes: string[] = [];
    const failing = Object.assign(fakeMachine(), {
      qmp: {
        queryRxFilter: async () => {
          throw new Error('connection lost');
        },
      },
    });
    assert.equal(await queryQemuNics(failing, (k, d) => notes.push(`${k} ${d}`)), undefined);
    assert.deepEqual(notes, ['malformed query-rx-filter: connection lost']);
  });
});

describe('nic-access policy in the engine', () => {
  it('learns MACs, then reports a promiscuous device from the kernel on a dump', async () => {
    const { Engine } = await import('../engine.js');
    const { NetWorld } = await import('../../os/linux/net/testkit.js');
    const { nicAccessPolicy } = await import('./nic-access.js');
    const w = new NetWorld();
    const net = w.addNet(4026531840);
    const mac = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const eth = w.addDevice(net, { name: 'eth0', ifindex: 2, flags: 0x1103, mtu: 1500, mac, operstate: 6 });
    w.k.set('net_device', eth, 'promiscuity', 1);
    const k = Object.assign(w.k, { epoch: { frozen: true, value: 0, bump: () => 0 } });
    const engine = new Engine<never>({
      vm: 'test',
      machine: fakeMachine({ dump: true }),
      policies: [nicAccessPolicy as never],
      kernel: k as never,
    });
    const alerts = await engine.runOnce();
    const mine = alerts.filter((a) => a.policy === 'nic-access');
    assert.deepEqual(
      mine.map((a) => a.key),
      ['promisc:4026531840/eth0'],
    );
    assert.equal(mine[0]!.evidence.mac, '52:54:00:12:34:56');
  });
});
