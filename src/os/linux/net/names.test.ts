import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { endpoint, flagNames, formatIPv4, formatIPv6, formatMac, tcpStateName } from './names.js';
import { unixPath } from './local.js';

const v6 = (hex: string) => Buffer.from(hex, 'hex');

describe('address text', () => {
  it('formats IPv4 from network-order bytes', () => {
    assert.equal(formatIPv4(Buffer.from([127, 0, 0, 1])), '127.0.0.1');
  });

  it('formats IPv6 per RFC 5952 (the same text Node normalises to)', () => {
    const cases = [
      '00000000000000000000000000000000',
      '00000000000000000000000000000001',
      'fe80000000000000505400fffe123456',
      '20010db8000000000001000000000001',
      '20010db8000100000000000100000001',
      '20010db8aaaabbbbccccddddeeeeffff',
    ];
    for (const hex of cases) {
      const text = formatIPv6(v6(hex));
      assert.equal(new URL(`http://[${text}]/`).hostname, `[${text}]`, hex);
    }
    assert.equal(formatIPv6(v6('00000000000000000000000000000000')), '::');
    assert.equal(formatIPv6(v6('20010db8000000000001000000000001')), '2001:db8::1:0:0:1');
    assert.equal(formatIPv6(v6('00000000000000000000ffff7f000001')), '::ffff:127.0.0.1');
  });

  it('brackets IPv6 endpoints', () => {
    assert.equal(endpoint('::', 22), '[::]:22');
    assert.equal(endpoint('10.0.2.15', 22), '10.0.2.15:22');
  });

  it('names interface flags and TCP states, and formats MACs', () => {
    assert.deepEqual(flagNames(0x1 | 0x8 | 0x100), ['UP', 'LOOPBACK', 'PROMISC']);
    assert.equal(tcpStateName(10), 'LISTEN');
    assert.equal(tcpStateName(99), 'state99');
    assert.equal(formatMac(Buffer.from([0x52, 0x54, 0, 0x12, 0x34, 0x56])), '52:54:00:12:34:56');
  });
});

describe('unixPath', () => {
  it('prints a path up to its NUL and an abstract name with @ for NULs, as /proc/net/unix does', () => {
    assert.equal(unixPath(Buffer.from('/dev/log\0', 'latin1')), '/dev/log');
    assert.equal(unixPath(Buffer.from('\0abs\0x', 'latin1')), '@abs@x');
  });

  it('sanitises control characters a hostile guest put in a name', () => {
    assert.equal(unixPath(Buffer.from('/tmp/\x1b[31mred\0', 'latin1')), '/tmp/\\x1b[31mred');
  });
});
