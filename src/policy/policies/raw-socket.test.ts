import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Socket } from '../../os/linux/net/sock.js';
import type { SweepContext } from '../policy.js';
import {
  allowedHolder,
  DEFAULT_ALLOW,
  DEFAULT_ALLOW_ICMP,
  rawSocketFindings,
  rawSocketOptions,
  rawSocketPolicy,
  type RawSocketFacts,
  type SocketHolder,
} from './raw-socket.js';

const packet = (over: Partial<Socket> = {}): Socket => ({
  netid: 'packet',
  address: 0xffff888001230000n,
  kind: 'full',
  family: 'packet',
  type: 'raw',
  protocol: 3,
  state: 'CLOSE',
  local: '0x0003@*',
  remote: '*',
  inode: 9935,
  uid: 0,
  ifindex: 0,
  netns: 4026531840,
  ...over,
});

const holder = (comm: string, exe: string | null, over: Partial<SocketHolder> = {}): SocketHolder => ({
  pid: 109,
  comm,
  fd: 3,
  uid: 0,
  exe: exe === null ? null : { file: 0x1n, path: exe, deleted: exe.endsWith(' (deleted)') },
  ...over,
});

const options = { allow: DEFAULT_ALLOW, allowIcmp: DEFAULT_ALLOW_ICMP };
const run = (facts: RawSocketFacts[]) => rawSocketFindings(facts, options);

describe('raw-socket', () => {
  it('reports a packet sniffer with its process and socket', () => {
    const [f, ...rest] = run([{ socket: packet(), holders: [holder('sniffer', '/attacks/bin/sniffer')] }]);
    assert.equal(rest.length, 0);
    assert.equal(f!.key, 'packet:ino=9935');
    assert.equal(f!.severity, 'high');
    assert.match(
      f!.summary,
      /^sniffer \(pid 109, \/attacks\/bin\/sniffer\) holds a raw packet socket \(ETH_P_ALL, all interfaces\)/,
    );
    assert.equal(f!.evidence.pid, 109);
    assert.equal(f!.evidence.exe, '/attacks/bin/sniffer');
    assert.equal(f!.evidence.protocol, '0x0003');
    assert.equal(f!.evidence.inode, 9935);
  });

  it('allows DHCP clients by name when comm and executable agree (busybox applets too)', () => {
    assert.deepEqual(run([{ socket: packet(), holders: [holder('dhclient', '/usr/sbin/dhclient')] }]), []);
    assert.deepEqual(run([{ socket: packet(), holders: [holder('udhcpc', '/bin/busybox')] }]), []);
  });

  it('does not let a sniffer hide behind an allowed name', () => {
    const renamed = run([{ socket: packet(), holders: [holder('dhclient', '/tmp/x')] }]);
    assert.equal(renamed.length, 1);
    const deleted = run([
      { socket: packet(), holders: [holder('dhclient', '/usr/sbin/dhclient (deleted)')] },
    ]);
    assert.equal(deleted.length, 1);
    const memfd = holder('dhclient', '/memfd:x (deleted)');
    memfd.exe!.memfd = 'x';
    assert.equal(run([{ socket: packet(), holders: [memfd] }]).length, 1);
    const hidden = holder('dhclient', '/usr/sbin/dhclient', { hiddenFromTaskList: true });
    assert.equal(run([{ socket: packet(), holders: [hidden] }])[0]!.severity, 'critical');
  });

  it('needs every holder of a shared socket to be allowed', () => {
    const f = run([
      {
        socket: packet(),
        holders: [holder('dhclient', '/usr/sbin/dhclient'), holder('evil', '/tmp/evil', { pid: 200 })],
      },
    ]);
    assert.equal(f.length, 1);
    assert.match(f[0]!.summary, /and 1 more/);
  });

  it('matches path entries exactly', () => {
    assert.equal(allowedHolder(holder('capture', '/opt/tool/capture'), ['/opt/tool/capture']), true);
    assert.equal(allowedHolder(holder('capture', '/opt/tool/capture2'), ['/opt/tool/capture']), false);
  });

  it('treats raw ICMP sockets of ping as allowed, other raw protocols not', () => {
    const icmp = packet({ netid: 'raw', family: 'inet', protocol: 1, local: '0.0.0.0:1' });
    assert.deepEqual(run([{ socket: icmp, holders: [holder('ping', '/bin/busybox')] }]), []);
    // ping's allowance is for ICMP only.
    const tcp = packet({ netid: 'raw', family: 'inet', protocol: 6, inode: 5 });
    const f = run([{ socket: tcp, holders: [holder('ping', '/bin/busybox')] }]);
    assert.equal(f.length, 1);
    assert.equal(f[0]!.severity, 'high');
    assert.match(f[0]!.summary, /raw IPv4 socket for protocol 6/);
    const raw = packet({ netid: 'raw6', family: 'inet6', protocol: 255, inode: 6 });
    assert.equal(run([{ socket: raw, holders: [holder('tool', '/usr/bin/tool')] }])[0]!.severity, 'medium');
  });

  it('reports a socket nobody visible holds as critical', () => {
    const f = run([{ socket: packet({ inode: 0 }), holders: [] }]);
    assert.equal(f[0]!.severity, 'critical');
    assert.equal(f[0]!.key, 'packet:ino=0xffff888001230000');
    assert.match(f[0]!.summary, /no process/);
  });

  it('takes its lists from options and rejects bad ones', () => {
    const ctx = { options: { allow: ['sniffer'] } } as unknown as SweepContext<unknown>;
    assert.deepEqual(rawSocketOptions(ctx).allow, ['sniffer']);
    assert.deepEqual(rawSocketOptions(ctx).allowIcmp, [...DEFAULT_ALLOW_ICMP]);
    assert.throws(() => rawSocketPolicy.parseOptions!({ allow: 'x' }), /list of strings/);
    assert.deepEqual(rawSocketPolicy.parseOptions!({ allow: ['a'] }), { allow: ['a'] });
  });
});
