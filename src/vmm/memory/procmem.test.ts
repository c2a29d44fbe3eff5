import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VigilError } from '../../util/errors.js';
import { checkQemu, openProcessMemory, parseMaps } from './procmem.js';
import { patternBytes, scratchDir } from './synthetic.js';

const MiB = 0x100000;
const PID = 4242;
const MAPS = [
  '00100000-00200000 rw-p 00000000 00:00 0 ',
  '00300000-00400000 rw-p 00000000 00:00 0',
  '00500000-00600000 rwxp 00000000 00:00 0', // like the TCG code buffer: not RAM
  '00600000-00680000 rw-s 00000000 00:1b 2                          /dev/shm/vm ram',
  '7ffd1000-7ffd2000 r--p 00000000 00:00 0                          [vvar]',
].join('\n');

/** A BIOS-style IVT: every vector F000:xxxx. */
function ivt(): Buffer {
  const b = Buffer.alloc(1024);
  for (let v = 0; v < 256; v++) {
    b.writeUInt16LE(0xe000 + v, v * 4);
    b.writeUInt16LE(0xf000, v * 4 + 2);
  }
  return b;
}

/** A fake /proc with one "QEMU" whose mem file holds two 1 MiB candidates; the first has an IVT. */
function fakeProc(exe = '/usr/bin/qemu-system-x86_64') {
  const scratch = scratchDir();
  const dir = join(scratch.dir, String(PID));
  mkdirSync(dir);
  symlinkSync(exe, join(dir, 'exe'));
  writeFileSync(join(dir, 'maps'), MAPS);
  const mem = Buffer.alloc(0x680000);
  const first = patternBytes(MiB, 21);
  ivt().copy(first, 0);
  first.copy(mem, 0x100000);
  patternBytes(MiB, 22).copy(mem, 0x300000);
  patternBytes(0x80000, 23).copy(mem, 0x600000);
  writeFileSync(join(dir, 'mem'), mem);
  return { root: scratch.dir, mem, done: scratch.done };
}

const BLOCKS = [
  { name: 'pc.ram', size: BigInt(MiB) },
  { name: 'vga.vram', size: 0x80000n },
];
const SEGMENTS = [
  { start: 0n, size: 0xa0000n, backendOffset: 0n, regionName: 'pc.ram' },
  { start: 0xc0000n, size: 0x40000n, backendOffset: 0xc0000n, regionName: 'pc.ram' },
];

test('parseMaps reads addresses, permissions and paths (with spaces)', () => {
  const maps = parseMaps(MAPS);
  assert.equal(maps.length, 5);
  assert.deepEqual(maps[3], { start: 0x600000n, end: 0x680000n, perms: 'rw-s', path: '/dev/shm/vm ram' });
  assert.equal(maps[0].path, '');
});

test('two mappings of the RAM size: the one holding a BIOS IVT at guest-physical 0 wins', () => {
  const p = fakeProc();
  try {
    const m = openProcessMemory({ pid: PID, blocks: BLOCKS, segments: SEGMENTS, procRoot: p.root });
    assert.deepEqual(m.mappings, [{ name: 'pc.ram', size: BigInt(MiB), hostStart: 0x100000n }]);
    assert.equal(m.live, true);
    assert.match(m.description, /QEMU PID 4242 RAM via \/proc\/4242\/mem/);
    assert.deepEqual(
      m.read(0x9fff0n, 32),
      Buffer.concat([p.mem.subarray(0x19fff0, 0x1a0000), Buffer.alloc(16)]),
    );
    assert.deepEqual(m.readStrict(0xc0000n, 0x40000), p.mem.subarray(0x1c0000, 0x200000));
    m.close();
  } finally {
    p.done();
  }
});

test('samples pick among equal-size mappings and confirm the choice', () => {
  const p = fakeProc();
  try {
    const sample = { paddr: 0xd0000n, bytes: p.mem.subarray(0x3d0000, 0x3d0100) };
    const m = openProcessMemory({
      pid: PID,
      blocks: BLOCKS,
      segments: SEGMENTS,
      samples: [sample],
      procRoot: p.root,
    });
    assert.equal(m.mappings[0].hostStart, 0x300000n);
    m.close();
    const nowhere = { paddr: 0xd0000n, bytes: Buffer.alloc(256, 0x5a) };
    assert.throws(
      () =>
        openProcessMemory({
          pid: PID,
          blocks: BLOCKS,
          segments: SEGMENTS,
          samples: [nowhere],
          procRoot: p.root,
        }),
      (e: unknown) =>
        e instanceof VigilError && e.kind === 'state' && /0 fit\); pass memory samples/.test(e.message),
    );
    // A unique mapping whose bytes disagree with the sample is refused too.
    const vram = [{ start: 0xfd000000n, size: 0x80000n, backendOffset: 0n, regionName: 'vga.vram' }];
    assert.throws(
      () =>
        openProcessMemory({
          pid: PID,
          blocks: BLOCKS,
          segments: vram,
          samples: [{ paddr: 0xfd000000n, bytes: Buffer.alloc(64, 1) }],
          procRoot: p.root,
        }),
      /differs from the sample at 0xfd000000/,
    );
    const ok = openProcessMemory({ pid: PID, blocks: BLOCKS, segments: vram, procRoot: p.root });
    assert.deepEqual(ok.read(0xfd000000n, 8), p.mem.subarray(0x600000, 0x600008));
    ok.close();
  } finally {
    p.done();
  }
});

test('no IVT and no samples: refuse to guess', () => {
  const p = fakeProc();
  try {
    const high = [{ start: 0x1_0000_0000n, size: BigInt(MiB), backendOffset: 0n, regionName: 'pc.ram' }];
    assert.throws(
      () => openProcessMemory({ pid: PID, blocks: BLOCKS, segments: high, procRoot: p.root }),
      /cannot tell which mapping of 0x100000 bytes is RAM block pc.ram in PID 4242 \(2 fit\)/,
    );
  } finally {
    p.done();
  }
});

test('errors: no such PID, not QEMU, no mapping of the size, unknown block', () => {
  const p = fakeProc();
  const bash = fakeProc('/usr/bin/bash');
  try {
    assert.throws(
      () => openProcessMemory({ pid: 4243, blocks: BLOCKS, procRoot: p.root }),
      (e: unknown) =>
        e instanceof VigilError && e.kind === 'not-found' && /no process with PID 4243/.test(e.message),
    );
    assert.throws(
      () => openProcessMemory({ pid: PID, blocks: BLOCKS, procRoot: bash.root }),
      (e: unknown) =>
        e instanceof VigilError && e.kind === 'unsupported' && /not QEMU.*"bash"/.test(e.message),
    );
    assert.throws(
      () => openProcessMemory({ pid: PID, blocks: [{ name: 'pc.ram', size: 0x2000000n }], procRoot: p.root }),
      (e: unknown) =>
        e instanceof VigilError &&
        e.kind === 'not-found' &&
        /no read-write mapping of 0x2000000 bytes.*largest are 0x100000/.test(e.message),
    );
    assert.throws(
      () =>
        openProcessMemory({
          pid: PID,
          blocks: BLOCKS,
          segments: [{ ...SEGMENTS[0], regionName: 'ram-node1' }],
          procRoot: p.root,
        }),
      /names RAM block "ram-node1"/,
    );
    assert.throws(() => openProcessMemory({ pid: -1, blocks: BLOCKS }), { kind: 'usage' });
  } finally {
    p.done();
    bash.done();
  }
});

test('the real /proc: this process is not QEMU, an unused PID does not exist', () => {
  assert.throws(() => checkQemu(process.pid), { kind: 'unsupported' });
  assert.throws(() => checkQemu(0x3ffffff0), { kind: 'not-found' });
});
