import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { elfLinkage } from './elf.js';
import { parseAptPolicy, parseLdd } from './guest-agent.js';
import { GUEST_MODULES } from './initramfs.js';

describe('qemu-guest-agent for the lab guest', () => {
  it('takes the libraries ldd resolves for qemu-ga, without the vDSO and the loader line', () => {
    // `ldd /usr/sbin/qemu-ga` of qemu-guest-agent 1:7.2+dfsg-7+deb12u18+b3 on bookworm.
    const text = [
      '\tlinux-vdso.so.1 (0x00007fa8a69e3000)',
      '\tlibudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007fa8a68aa000)',
      '\tlibnuma.so.1 => /lib/x86_64-linux-gnu/libnuma.so.1 (0x00007fa8a689d000)',
      '\tliburing.so.2 => /lib/x86_64-linux-gnu/liburing.so.2 (0x00007fa8a6896000)',
      '\tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007fa8a675e000)',
      '\tlibgmodule-2.0.so.0 => /lib/x86_64-linux-gnu/libgmodule-2.0.so.0 (0x00007fa8a6758000)',
      '\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007fa8a6676000)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fa8a6494000)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007fa8a69e5000)',
      '\tlibpcre2-8.so.0 => /lib/x86_64-linux-gnu/libpcre2-8.so.0 (0x00007fa8a63fa000)',
    ].join('\n');
    const { libraries, missing } = parseLdd(text);
    assert.deepEqual(missing, []);
    assert.equal(libraries.length, 8);
    assert.ok(libraries.includes('/lib/x86_64-linux-gnu/libglib-2.0.so.0'));
    assert.ok(!libraries.some((l) => l.includes('ld-linux') || l.includes('vdso')));
    assert.deepEqual(parseLdd('\tlibnuma.so.1 => not found\n').missing, ['libnuma.so.1']);
  });

  it('reads the candidate version from apt-cache policy', () => {
    const text = [
      'qemu-guest-agent:',
      '  Installed: (none)',
      '  Candidate: 1:7.2+dfsg-7+deb12u18+b3',
      '  Version table:',
      '     1:7.2+dfsg-7+deb12u18+b3 500',
    ].join('\n');
    assert.equal(parseAptPolicy(text), '1:7.2+dfsg-7+deb12u18+b3');
    assert.equal(parseAptPolicy('qemu-guest-agent:\n  Installed: (none)\n  Candidate: (none)\n'), undefined);
    assert.equal(parseAptPolicy(''), undefined);
  });

  it('loads virtio_console after the virtio core it depends on', () => {
    const at = (m: string) => GUEST_MODULES.indexOf(m as (typeof GUEST_MODULES)[number]);
    assert.ok(at('virtio_console') > at('virtio'));
    assert.ok(at('virtio_console') > at('virtio_ring'));
  });

  describe('ELF program interpreter', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vigil-elf-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('names the loader of a dynamic executable, none for a static one', () => {
      const interp = '/lib64/ld-linux-x86-64.so.2\0';
      const b = Buffer.alloc(64 + 2 * 56 + interp.length);
      b.writeUInt32BE(0x7f454c46, 0);
      b[4] = 2; // ELFCLASS64
      b[5] = 1;
      b.writeBigUInt64LE(64n, 32); // e_phoff
      b.writeUInt16LE(56, 54);
      b.writeUInt16LE(2, 56);
      b.writeUInt32LE(6, 64); // PT_PHDR
      b.writeUInt32LE(3, 64 + 56); // PT_INTERP
      b.writeBigUInt64LE(BigInt(64 + 2 * 56), 64 + 56 + 8); // p_offset
      b.writeBigUInt64LE(BigInt(interp.length), 64 + 56 + 32); // p_filesz
      b.write(interp, 64 + 2 * 56, 'latin1');
      writeFileSync(join(dir, 'dynamic'), b);
      assert.deepEqual(elfLinkage(join(dir, 'dynamic')), {
        elf64: true,
        interpreter: '/lib64/ld-linux-x86-64.so.2',
      });
      b.writeUInt32LE(1, 64 + 56); // PT_LOAD instead
      writeFileSync(join(dir, 'static'), b);
      assert.deepEqual(elfLinkage(join(dir, 'static')), { elf64: true });
      writeFileSync(join(dir, 'script'), '#!/bin/sh\n');
      assert.deepEqual(elfLinkage(join(dir, 'script')), { elf64: false });
    });
  });
});
