// Which of a process's maps the signature policy scans.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MemoryMap } from '../../os/linux/mm/maps.js';
import { scanReason } from './signature-scan.js';

describe('which maps are scanned', () => {
  const map = (o: Partial<MemoryMap>): MemoryMap => ({
    vma: 0xffff_8880_0000_1000n,
    start: 0x1000_0000n,
    end: 0x1001_0000n,
    flags: 0x73n, // rw-p, may-read/write
    perms: 'rw-p',
    offset: 0n,
    dev: '00:00',
    inode: 0n,
    path: '',
    ...o,
  });
  const file = { file: 0xffff_8880_0000_2000n, path: '/usr/lib/libc.so.6', dev: '08:01', inode: 42n };
  it('private memory and files that are gone, not libraries on disk, I/O maps or the gate page', () => {
    const o = { scanFileMappings: false };
    assert.equal(scanReason(map({}), o), 'anonymous');
    assert.equal(scanReason(map({ label: '[heap]', path: '[heap]' }), o), '[heap]');
    assert.equal(scanReason(map({ ...file }), o), 'file data');
    assert.equal(scanReason(map({ ...file, flags: 0x7bn }), o), 'shared writable file');
    assert.equal(scanReason(map({ ...file, flags: 0x75n }), o), undefined, 'library text');
    assert.equal(scanReason(map({ ...file, flags: 0x75n }), { scanFileMappings: true }), 'file text');
    assert.equal(
      scanReason(map({ ...file, flags: 0x75n, deleted: true }), o),
      'deleted file',
      'memfd / unlinked',
    );
    assert.equal(scanReason(map({ flags: 0x70n }), o), undefined, 'not readable');
    assert.equal(scanReason(map({ flags: 0x4411n, label: '[vvar]' }), o), undefined, 'VM_IO | VM_PFNMAP');
    assert.equal(
      scanReason(map({ start: 0xffff_ffff_ff60_0000n, end: 0xffff_ffff_ff60_1000n, flags: 0x5n }), o),
      undefined,
    );
  });
});
