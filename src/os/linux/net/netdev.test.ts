import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { listNetDevices } from './netdev.js';
import { NetWorld } from './testkit.js';

const mac = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

function world() {
  const w = new NetWorld();
  const net = w.addNet(4026531840);
  const lo = w.addDevice(net, {
    name: 'lo',
    ifindex: 1,
    flags: 0x9,
    mtu: 65536,
    mac: Buffer.alloc(6),
    operstate: 0,
  });
  const eth = w.addDevice(net, { name: 'eth0', ifindex: 2, flags: 0x1003, mtu: 1500, mac, operstate: 6 });
  return { w, k: w.k, net, lo, eth };
}

describe('listNetDevices', () => {
  it('lists devices with flag names as ip link shows them, MTU, MAC and state', () => {
    const { k, lo, eth } = world();
    k.set('net_device', eth, 'promiscuity', 1);
    k.set('net_device', eth, 'flags', 0x1103);
    k.set('net_device', eth, 'netdev_ops', 0xffff_ffff_8100_0000n);
    k.defineSymbol('virtnet_netdev', 0xffff_ffff_8100_0000n);
    const got = listNetDevices(k);
    assert.deepEqual(k.issues.items, []);
    assert.deepEqual(
      got.map((d) => [d.name, d.ifindex, d.flags, d.mtu, d.mac, d.operstate]),
      [
        ['lo', 1, ['UP', 'LOOPBACK', 'RUNNING', 'LOWER_UP'], 65536, '00:00:00:00:00:00', 'UNKNOWN'],
        [
          'eth0',
          2,
          ['UP', 'BROADCAST', 'RUNNING', 'PROMISC', 'MULTICAST', 'LOWER_UP'],
          1500,
          '52:54:00:12:34:56',
          'UP',
        ],
      ],
    );
    assert.equal(got[1]!.address, eth);
    assert.equal(got[0]!.address, lo);
    assert.equal(got[1]!.promiscuity, 1);
    assert.equal(got[1]!.netdevOpsSymbol, 'virtnet_netdev+0x0');
  });

  it('derives RUNNING and LOWER_UP from the device state, as dev_get_flags does', () => {
    const { k, eth } = world();
    k.set('net_device', eth, 'state', 1n | (1n << 2n)); // running, no carrier
    k.set('net_device', eth, 'operstate', 2); // DOWN
    const d = listNetDevices(k).find((x) => x.name === 'eth0')!;
    assert.deepEqual(d.flags, ['UP', 'BROADCAST', 'MULTICAST']);
  });

  it('stops a device list cycle with an issue', () => {
    const { w, k, lo, eth } = world();
    // eth0.dev_list.next → lo.dev_list: the list never returns to its head.
    k.writePointer(k.addressOf('net_device', eth, 'dev_list'), k.addressOf('net_device', lo, 'dev_list'));
    void w;
    const got = listNetDevices(k);
    assert.deepEqual(
      got.map((d) => d.name),
      ['lo', 'eth0'],
    );
    assert.ok(k.issues.items.some((i) => i.walker === 'netdev' && i.kind === 'cycle'));
  });

  it('reports a garbage dev_addr pointer as an unknown MAC, not a crash', () => {
    const { k, eth } = world();
    k.set('net_device', eth, 'dev_addr', 0xdead_0000_0000n);
    const d = listNetDevices(k).find((x) => x.name === 'eth0')!;
    assert.equal(d.mac, undefined);
    assert.equal(d.mtu, 1500);
    assert.ok(k.issues.items.some((i) => i.walker === 'netdev' && i.kind === 'unmapped'));
  });

  it('refuses a hardware address longer than MAX_ADDR_LEN', () => {
    const { k, eth } = world();
    k.set('net_device', eth, 'addr_len', 200);
    assert.equal(listNetDevices(k).find((x) => x.name === 'eth0')!.mac, undefined);
    assert.ok(k.issues.items.some((i) => i.kind === 'malformed'));
  });

  it('keeps the devices before a list pointer into unmapped memory', () => {
    const { k, lo } = world();
    k.writePointer(k.addressOf('net_device', lo, 'dev_list'), 0xdead_0000_0000n);
    const got = listNetDevices(k);
    assert.deepEqual(
      got.map((d) => d.name),
      ['lo'],
    );
    assert.ok(k.issues.items.some((i) => i.walker === 'netdev' && i.kind === 'unmapped'));
  });
});
