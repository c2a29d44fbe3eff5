import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatIPv4, formatIPv6 } from '../../os/linux/net/names.js';
import { isVigilError } from '../../util/errors.js';
import {
  MAX_LISTING_BYTES,
  MAX_LISTING_LINES,
  parseProcModules,
  parseProcNet,
  parsePs,
  procNetAddress,
} from './guest-views.js';
import { guestFixture } from './guest-testkit.js';

const lines = (b: Buffer) =>
  b
    .toString('latin1')
    .split('\n')
    .filter((l) => l.trim() !== '');

function throwsKind(fn: () => unknown, kind: string, re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isVigilError(e), String(e));
    assert.equal(e.kind, kind, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

describe('parsePs', () => {
  it('reads busybox ps -eo pid=,comm= (no header) from the lab guest', () => {
    const raw = guestFixture('ps-busybox-eo.txt');
    const ps = parsePs(raw);
    assert.equal(ps.pids.size, lines(raw).length);
    assert.equal(ps.rejected, 0);
    assert.equal(ps.pids.get(1), 'init');
    assert.equal(ps.pids.get(2), 'kthreadd');
  });

  it('reads busybox ps -o pid,comm and plain busybox ps (a PID header, more columns)', () => {
    const short = parsePs(guestFixture('ps-busybox-o.txt'));
    const long = parsePs(guestFixture('ps-busybox.txt'));
    assert.equal(short.pids.size, lines(guestFixture('ps-busybox-o.txt')).length - 1);
    assert.equal(long.pids.size, lines(guestFixture('ps-busybox.txt')).length - 1);
    assert.equal(short.rejected + long.rejected, 0);
    assert.equal(short.pids.get(1), 'init');
    // Plain ps: the rest of the line is user and command line; the PID column is what counts.
    assert.match(long.pids.get(1)!, /^root\s+\{init\}/);
    assert.match(long.pids.get(2)!, /\[kthreadd\]/);
    // Taken a moment apart: the same long-lived processes (only the ps runs themselves differ).
    const both = [...short.pids.keys()].filter((p) => long.pids.has(p));
    assert.ok(both.length >= short.pids.size - 3, `${both.length} of ${short.pids.size}`);
  });

  it('reads procps ps -eo pid=,comm=', () => {
    const raw = guestFixture('ps-procps-eo.txt');
    const ps = parsePs(raw);
    assert.equal(ps.pids.size, lines(raw).length);
    assert.equal(ps.pids.get(2), 'kthreadd');
  });

  it('refuses output that lists no process', () => {
    throwsKind(() => parsePs(Buffer.alloc(0)), 'malformed', /printed nothing/);
    throwsKind(() => parsePs(Buffer.from('PID   COMMAND\n')), 'malformed', /listed no process/);
    throwsKind(
      () => parsePs(Buffer.from('ps: unrecognized option: e\nBusyBox v1.35.0 multi-call binary.\n')),
      'malformed',
    );
  });

  it('refuses PIDs out of range and output mostly of another shape', () => {
    const ok = parsePs(Buffer.from('1 init\n0 swapper\n99999999 big\n2 kthreadd\n'));
    assert.deepEqual([...ok.pids.keys()], [1, 2]);
    assert.equal(ok.rejected, 2);
    const junk = Array.from({ length: 5 }, (_, i) => `junk line ${i}`);
    throwsKind(() => parsePs(Buffer.from(['1 init', ...junk].join('\n'))), 'malformed', /5 of 6 lines/);
  });

  it('is bounded on hostile output: size, line count and line length', () => {
    throwsKind(() => parsePs(Buffer.alloc(MAX_LISTING_BYTES + 1, 0x31)), 'bound');
    throwsKind(() => parsePs(Buffer.from('1\n'.repeat(MAX_LISTING_LINES + 1))), 'bound');
    // One enormous line: looked at up to its cap, the PID still read, the name cut.
    const ps = parsePs(Buffer.from(`7 ${'x'.repeat(1 << 20)}\n`));
    assert.deepEqual([...ps.pids.keys()], [7]);
    assert.ok(ps.pids.get(7)!.length <= 65);
    // Control characters in a name are escaped, not passed on.
    assert.equal(parsePs(Buffer.from('8 a\x1b[31mb\n')).pids.get(8), 'a\\x1b[31mb');
    // Random bytes: refused (or, if some lines happen to parse, at least bounded and sane).
    const noise = Buffer.alloc(1 << 20);
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
    throwsKind(() => parsePs(noise), 'malformed');
  });
});

describe('parseProcModules', () => {
  it('reads the lab guest’s /proc/modules', () => {
    const raw = guestFixture('proc-modules.txt');
    const mods = parseProcModules(raw);
    assert.equal(mods.length, lines(raw).length);
    const first = lines(raw)[0]!.split(' ');
    assert.equal(mods[0]!.name, first[0]);
    assert.equal(mods[0]!.size, Number(first[1]));
    assert.equal(mods[0]!.address, BigInt(first[5]!));
    assert.ok(mods.every((m) => m.state === 'Live'));
  });

  it('reads taint flags, hidden addresses (kptr_restrict) and a kernel without unload', () => {
    const mods = parseProcModules(
      Buffer.from(
        'vigilkit 16384 0 - Live 0xffffffffc0a00000 (OE)\n' +
          'virtio 20480 2 virtio_net,virtio_pci, Loading 0x0000000000000000\n' +
          'noload 4096 - - Live 0xffffffffc0b00000\n',
      ),
    );
    assert.deepEqual(mods, [
      { name: 'vigilkit', size: 16384, state: 'Live', address: 0xffffffffc0a00000n },
      { name: 'virtio', size: 20480, state: 'Loading' },
      { name: 'noload', size: 4096, state: 'Live', address: 0xffffffffc0b00000n },
    ]);
  });

  it('accepts an empty file and refuses one of another shape', () => {
    assert.deepEqual(parseProcModules(Buffer.alloc(0)), []);
    throwsKind(() => parseProcModules(Buffer.from('a\nb\nc\n')), 'malformed');
  });
});

describe('parseProcNet', () => {
  it('decodes addresses as the kernel prints them: host-order 32-bit words', () => {
    assert.equal(procNetAddress('0100007F'), formatIPv4(Buffer.from([127, 0, 0, 1])));
    assert.equal(procNetAddress('0F02000A'), '10.0.2.15');
    const lo6 = Buffer.alloc(16);
    lo6[15] = 1;
    assert.equal(procNetAddress('00000000000000000000000001000000'), formatIPv6(lo6));
    assert.equal(procNetAddress('0000000000000000FFFF00000100007F'), '::ffff:127.0.0.1');
  });

  it('reads the lab guest’s /proc/net/tcp: a listener and established pairs', () => {
    const raw = guestFixture('proc-net-tcp.txt');
    const t = parseProcNet(raw, 'tcp');
    assert.equal(t.entries.length, lines(raw).length - 1);
    // Each row against its own columns, split independently of the parser.
    for (const [i, row] of lines(raw).slice(1).entries()) {
      const col = row.trim().split(/\s+/);
      const [la, lp] = col[1]!.split(':');
      const e = t.entries[i]!;
      assert.equal(e.localPort, Number.parseInt(lp!, 16));
      assert.equal(e.localAddress, procNetAddress(la!));
      assert.equal(e.state, Number.parseInt(col[3]!, 16));
      assert.equal(e.inode, Number(col[9]));
    }
    const listen = t.entries.find((e) => e.state === 0x0a)!;
    assert.equal(listen.localAddress, '0.0.0.0');
    assert.equal(listen.remotePort, 0);
  });

  it('reads tcp6, udp and udp6 (the last two from a real kernel’s udp4/6_format_sock)', () => {
    const t6 = parseProcNet(guestFixture('proc-net-tcp6.txt'), 'tcp6');
    assert.equal(t6.entries.length, 1);
    assert.equal(t6.entries[0]!.localAddress, '::');
    const u = parseProcNet(guestFixture('proc-net-udp.txt'), 'udp');
    assert.equal(u.entries.length, 1);
    assert.equal(u.entries[0]!.localAddress, '127.0.0.1');
    assert.equal(u.entries[0]!.state, 7);
    const u6 = parseProcNet(guestFixture('proc-net-udp6.txt'), 'udp6');
    assert.equal(u6.entries[0]!.localAddress, '::1');
    assert.ok(u6.entries[0]!.inode > 0);
  });

  it('a header alone is an empty table; no header is refused; a v6 row in a v4 table is rejected', () => {
    const header = lines(guestFixture('proc-net-tcp.txt'))[0]!;
    assert.deepEqual(parseProcNet(Buffer.from(header + '\n'), 'tcp').entries, []);
    throwsKind(() => parseProcNet(Buffer.alloc(0), 'tcp'), 'malformed', /no header/);
    throwsKind(() => parseProcNet(Buffer.from('cat: can not open\n'), 'udp'), 'malformed', /no header/);
    const v6rows = lines(guestFixture('proc-net-tcp6.txt')).slice(1);
    const mixed = [header, ...v6rows, ...v6rows, ...v6rows].join('\n');
    throwsKind(() => parseProcNet(Buffer.from(mixed), 'tcp'), 'malformed', /3 of 4 lines/);
  });
});
