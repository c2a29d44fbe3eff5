import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { indexModules, isStaticElf } from './initramfs.js';

/** A minimal ELF64 header with one program header of the given type. */
function elf(phType: number): Buffer {
  const b = Buffer.alloc(64 + 56);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2; // ELFCLASS64
  b[5] = 1; // little-endian
  b.writeBigUInt64LE(64n, 32); // e_phoff
  b.writeUInt16LE(56, 54); // e_phentsize
  b.writeUInt16LE(1, 56); // e_phnum
  b.writeUInt32LE(phType, 64);
  return b;
}

describe('initramfs inputs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-initramfs-'));
  it('tells static executables from dynamic ones by PT_INTERP', () => {
    writeFileSync(join(dir, 'static'), elf(1));
    writeFileSync(join(dir, 'dynamic'), elf(3));
    writeFileSync(join(dir, 'script'), '#!/bin/sh\n');
    assert.equal(isStaticElf(join(dir, 'static')), true);
    assert.equal(isStaticElf(join(dir, 'dynamic')), false);
    assert.equal(isStaticElf(join(dir, 'script')), false);
  });
  it('indexes modules by name, whatever their compression and dash style', () => {
    const mods = join(dir, 'lib/modules/6.1.0-1-amd64');
    mkdirSync(join(mods, 'kernel/drivers/net'), { recursive: true });
    mkdirSync(join(mods, 'kernel/drivers/virtio'), { recursive: true });
    writeFileSync(join(mods, 'kernel/drivers/net/virtio_net.ko.xz'), '');
    writeFileSync(join(mods, 'kernel/drivers/net/net-failover.ko'), '');
    writeFileSync(join(mods, 'kernel/drivers/virtio/virtio.ko.zst'), '');
    writeFileSync(join(mods, 'kernel/drivers/virtio/README'), '');
    const idx = indexModules(mods);
    assert.deepEqual([...idx.keys()].sort(), ['net_failover', 'virtio', 'virtio_net']);
    assert.equal(idx.get('virtio_net'), join(mods, 'kernel/drivers/net/virtio_net.ko.xz'));
    rmSync(dir, { recursive: true, force: true });
  });
});
