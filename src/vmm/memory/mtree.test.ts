import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseInfoRamblock, parseMtree, parseMtreeAll } from './mtree.js';
import { readFixture as fixture } from './synthetic.js';

const rows = (segs: ReturnType<typeof parseMtree>) =>
  segs.map((s) => [s.start.toString(16), s.size.toString(16), s.backendOffset.toString(16), s.kind]);

test('256 MiB q35 guest (info mtree -f over QMP, CRLF lines): RAM of backend "mem" below 256 MiB', () => {
  const segs = parseMtree(fixture('mtree-q35-256m.txt'), 'mem');
  assert.deepEqual(rows(segs), [
    ['0', 'a0000', '0', 'ram'], // 0xa0000-0xbffff is vga-lowmem (i/o) in the system view
    ['c0000', 'b000', 'c0000', 'rom'], // BIOS shadow: backend RAM mapped read-only
    ['cb000', '3000', 'cb000', 'ram'],
    ['ce000', '1a000', 'ce000', 'rom'],
    ['e8000', '8000', 'e8000', 'ram'],
    ['f0000', '10000', 'f0000', 'rom'],
    ['100000', 'ff00000', '100000', 'ram'],
  ]);
  assert.ok(segs.every((s) => s.regionName === 'mem'));
  // Without a name, the region serving the most RAM is the backend.
  assert.deepEqual(parseMtree(fixture('mtree-q35-256m.txt')), segs);
});

test('3 GiB q35 guest: 2 GiB below 4 GiB, the rest at 4 GiB from backend offset 2 GiB', () => {
  const segs = parseMtree(fixture('mtree-q35-3g.txt'));
  const last = segs[segs.length - 1];
  assert.deepEqual(rows([segs[segs.length - 2], last]), [
    ['100000', '7ff00000', '100000', 'ram'],
    ['100000000', '40000000', '80000000', 'ram'],
  ]);
});

test('parseMtreeAll keeps every RAM-backed region and no I/O', () => {
  const all = parseMtreeAll(fixture('mtree-q35-256m.txt'));
  const names = new Set(all.map((s) => s.regionName));
  assert.deepEqual([...names].sort(), ['mem', 'pc.bios', 'vga.vram']);
  const bios = all.find((s) => s.regionName === 'pc.bios')!;
  assert.deepEqual([bios.start, bios.size, bios.kind], [0xfffc0000n, 0x40000n, 'rom']);
});

test('names with spaces, owner annotations and the system view chosen over the SMM view', () => {
  const text = [
    'FlatView #0',
    ' AS "cpu-smm-0", root: memory',
    ' Root memory region: memory',
    '  0000000000000000-00000000000bffff (prio 0, ram): big ram',
    'FlatView #1',
    ' AS "memory", root: system',
    ' Root memory region: system',
    '  0000000000000000-000000000009ffff (prio 0, ram): big ram owner:{obj path=/objects/m}',
    '  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem',
    '  0000000000100000-0000000000ffffff (prio 0, ram): big ram @0000000000100000 owner:{obj path=/objects/m}',
    '  00000000fd000000-00000000fdffffff (prio 1, ramd): vfio bar',
    '',
  ].join('\n');
  assert.deepEqual(
    parseMtree(text).map((s) => [s.start, s.size, s.backendOffset, s.regionName]),
    [
      [0n, 0xa0000n, 0n, 'big ram'],
      [0x100000n, 0xf00000n, 0x100000n, 'big ram'],
    ],
  );
});

test('wrong input is rejected with a reason', () => {
  assert.throws(() => parseMtree('address-space: memory\n  0000-ffff (prio 0, ram): x\n'), /FlatView/);
  assert.throws(() => parseMtree('FlatView #0\n AS "I/O", root: io\n'), /"memory" address space/);
  assert.throws(
    () => parseMtree(fixture('mtree-q35-256m.txt'), 'pc.ram'),
    (e: Error) => /no region "pc.ram".*mem/.test(e.message),
  );
});

test('plain -m guest (anonymous RAM): the backend is "pc.ram" and info ramblock gives its size', () => {
  const segs = parseMtree(fixture('mtree-q35-256m-plain.txt'));
  assert.ok(segs.every((s) => s.regionName === 'pc.ram'));
  assert.deepEqual(rows([segs[segs.length - 1]]), [['100000', 'ff00000', '100000', 'ram']]);
  const blocks = parseInfoRamblock(fixture('ramblock-q35-256m-plain.txt'));
  assert.deepEqual(
    blocks.filter((b) => b.name === 'pc.ram').map((b) => [b.used, b.pageSize]),
    [[0x10000000n, 4096]],
  );
  assert.equal(blocks.length, 9);
});

test('info ramblock: names, page sizes, lengths', () => {
  const text =
    '              Block Name    PSize              Offset               Used              Total\r\n' +
    '                  pc.ram    4 KiB  0x0000000000000000 0x0000000010000000 0x0000000010000000\r\n' +
    '   0000:00:01.0/vga.vram    2 MiB  0x0000000010080000 0x0000000001000000 0x0000000001000000\r\n';
  assert.deepEqual(parseInfoRamblock(text), [
    { name: 'pc.ram', pageSize: 4096, offset: 0n, used: 0x10000000n, total: 0x10000000n },
    {
      name: '0000:00:01.0/vga.vram',
      pageSize: 2 << 20,
      offset: 0x10080000n,
      used: 0x1000000n,
      total: 0x1000000n,
    },
  ]);
  assert.throws(() => parseInfoRamblock('nothing here'), { kind: 'malformed' });
});
