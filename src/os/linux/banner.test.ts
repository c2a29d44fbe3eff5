import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { bannerRelease, findBanner, readBannerAt } from './banner.js';
import { bufferMemory } from './kallsyms/test-support.js';

const REAL =
  'Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, ' +
  'GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)';

describe('findBanner', () => {
  it('chooses the kernel banner among terminal copies, the weak variant and garbage', () => {
    const ram = Buffer.alloc(4 << 20);
    // Terminal buffer of `uname -a` / `cat /proc/version` (CRLF, not NUL-terminated).
    ram.write(REAL + '\r\nPID   USER\r\n', 0x2000, 'latin1');
    // The weak linux_banner of init/version.c (no build number) in .rodata.
    ram.write(REAL.replace('#1 SMP', '# SMP') + '\n\0', 0x100000, 'latin1');
    // linux_banner itself, across a chunk boundary (chunks are 64 KiB).
    const real = (256 << 10) * 5 - 40;
    ram.write(REAL + '\n\0', real, 'latin1');
    // A different, well-formed banner seen once, and a torn one.
    ram.write('Linux version 5.10.0-1-amd64 (x@y) (gcc 10) #1 SMP Debian\n\0', 0x300000, 'latin1');
    ram.write('Linux version 6.1.0 \x1b[31m(evil) #1\n', 0x310000, 'latin1');
    const b = findBanner(bufferMemory(ram));
    assert.equal(b.text, REAL);
    assert.equal(b.release, '6.1.0-56-amd64');
    assert.deepEqual(b.paddrs, [0x2000n, BigInt(real)]);
    assert.deepEqual(b.terminatedPaddrs, [BigInt(real)]);
    assert.deepEqual(
      b.others.map((o) => o.text),
      ['Linux version 5.10.0-1-amd64 (x@y) (gcc 10) #1 SMP Debian'],
    );
  });

  it('counts memory in every RAM range and throws not-found when there is no banner', () => {
    assert.throws(
      () => findBanner(bufferMemory(Buffer.alloc(1 << 20))),
      (e: unknown) => e instanceof VigilError && e.kind === 'not-found',
    );
    const ram = Buffer.alloc(1 << 20);
    ram.write(REAL + '\n\0', 0x40, 'latin1');
    assert.deepEqual(findBanner(bufferMemory(ram, 0x100000n)).paddrs, [0x100040n]);
  });

  it('stays bounded when a guest floods memory with banners', () => {
    const one = Buffer.from('Linux version 9.9.9-evil (a) (b) #1 x\n\0', 'latin1');
    const ram = Buffer.alloc(8 << 20);
    for (let at = 0; at + one.length < ram.length; at += one.length) one.copy(ram, at);
    const started = Date.now();
    const b = findBanner(bufferMemory(ram));
    assert.ok(Date.now() - started < 5000);
    assert.ok(b.paddrs.length <= 4096);
  });

  it('reads a banner at a known address and parses releases', () => {
    const ram = Buffer.alloc(4096);
    ram.write(REAL + '\n\0', 100, 'latin1');
    const b = readBannerAt(bufferMemory(ram), 100n);
    assert.equal(b.text, REAL);
    assert.deepEqual(b.terminatedPaddrs, [100n]);
    assert.throws(
      () => readBannerAt(bufferMemory(ram), 101n),
      (e: unknown) => e instanceof VigilError && e.kind === 'malformed',
    );
    assert.equal(bannerRelease('Linux version 6.12.0+ (a) (b) #3 SMP'), '6.12.0+');
    assert.equal(bannerRelease('Linux version 6.1\x1b[0m (a)'), '6.1\\x1b[0m');
  });
});
