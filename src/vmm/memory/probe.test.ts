import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { VigilError } from '../../util/errors.js';
import { openDump } from './dump.js';
import { parseMtree } from './mtree.js';
import { isMappedByAProcess, onRamFileSystem, openMemoryFile } from './probe.js';
import { openRamFile } from './ramfile.js';
import { buildElfCore, buildLime, patternBytes, readFixture, scratchDir } from './synthetic.js';

const MiB = 1 << 20;

test('files that are not memory dumps are refused with the reason', () => {
  const scratch = scratchDir();
  try {
    const cases: [Buffer, string, RegExp][] = [
      [Buffer.alloc(0), 'malformed', /is empty: not a memory dump/],
      [Buffer.from('line of text\n'.repeat(200_000)), 'malformed', /looks like text/],
      [patternBytes(100, 9), 'malformed', /at least 1 MiB and a multiple of 4 KiB \(it is 100 bytes\)/],
      [patternBytes(MiB + 1, 9), 'malformed', /multiple of 4 KiB/],
      [Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), patternBytes(MiB, 1)]), 'unsupported', /gzip/],
      [Buffer.concat([Buffer.from('KDUMP   '), Buffer.alloc(MiB)]), 'unsupported', /kdump-compressed/],
      [Buffer.concat([Buffer.from('QEVM'), Buffer.alloc(MiB)]), 'unsupported', /migration stream/],
    ];
    cases.forEach(([data, kind, message], i) => {
      const path = scratch.file(`f${i}`, data);
      for (const open of [openDump, openMemoryFile]) {
        assert.throws(
          () => open(path),
          (e: unknown) => e instanceof VigilError && e.kind === kind && message.test(e.message),
          message.source,
        );
      }
    });
    assert.throws(() => openDump(scratch.dir), { kind: 'usage' }); // a directory
    assert.throws(() => openDump(`${scratch.dir}/missing`), { kind: 'not-found' });
  } finally {
    scratch.done();
  }
});

test('a raw image is laid out q35-style; ELF and LiME are recognised by content', () => {
  const scratch = scratchDir();
  try {
    const ram = patternBytes(2 * MiB, 11);
    const raw = openMemoryFile(scratch.file('guest.raw', ram), undefined, { live: false });
    assert.deepEqual([raw.format, raw.live], ['raw', false]);
    assert.deepEqual(
      raw.ranges.map((r) => [r.start, r.size]),
      [[0n, BigInt(2 * MiB)]],
    );
    assert.deepEqual(raw.read(0x1ffff0n, 32), Buffer.concat([ram.subarray(-16), Buffer.alloc(16)]));
    raw.close();

    const live = openMemoryFile(scratch.file('ram', ram), 'q35', { live: true });
    assert.deepEqual([live.format, live.live], ['ram-file', true]);
    live.close();

    const elf = openMemoryFile(
      scratch.file('core', buildElfCore({ loads: [{ paddr: 0n, data: ram.subarray(0, 4096) }] })),
    );
    assert.deepEqual([elf.format, elf.live, elf.cpus.length], ['elf-core', false, 0]);
    elf.close();
    const lime = openMemoryFile(
      scratch.file('lime', buildLime([{ start: 0n, data: ram.subarray(0, 4096) }])),
    );
    assert.deepEqual([lime.format, lime.live], ['lime', false]);
    lime.close();
  } finally {
    scratch.done();
  }
});

test(
  'a raw image on tmpfs is taken for live RAM unless told otherwise',
  { skip: !existsSync('/dev/shm') },
  () => {
    const scratch = scratchDir('/dev/shm');
    try {
      const path = scratch.file('ram', patternBytes(MiB, 3));
      assert.equal(onRamFileSystem(path), true);
      const m = openMemoryFile(path);
      assert.deepEqual([m.format, m.live], ['ram-file', true]);
      m.close();
      const d = openMemoryFile(path, undefined, { live: false });
      assert.equal(d.live, false);
      d.close();
    } finally {
      scratch.done();
    }
  },
);

test('a RAM file laid out by the QEMU memory map (info mtree -f)', () => {
  const scratch = scratchDir();
  try {
    const ram = Buffer.alloc(256 * MiB);
    ram.set(patternBytes(MiB, 5), 0x80000);
    const path = scratch.file('ram', ram);
    const m = openRamFile(path, parseMtree(readFixture('mtree-q35-256m.txt'), 'mem'));
    assert.match(m.description, /RAM file .* \(QEMU memory map\)/);
    assert.deepEqual(m.read(0xffff0n, 32), ram.subarray(0xffff0, 0x100010));
    assert.throws(() => m.readStrict(0xa0000n, 16), { kind: 'unmapped' }); // VGA window
    assert.deepEqual(m.readStrict(0xc0000n, 16), ram.subarray(0xc0000, 0xc0010)); // BIOS shadow is RAM
    m.close();
    // The 3 GiB guest's map does not fit a 256 MiB file.
    assert.throws(
      () => openRamFile(path, parseMtree(readFixture('mtree-q35-3g.txt'))),
      /past the end of RAM file/,
    );
  } finally {
    scratch.done();
  }
});

/** "maj:min" (hex, as /proc/PID/maps prints it) of the file system mounted at `mountPoint`, from mountinfo. */
function deviceOf(mountPoint: string): string | undefined {
  let dev: string | undefined;
  // The last mount at a path is the one on top.
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[4] === mountPoint) {
      const [maj, min] = f[2].split(':').map(Number);
      dev = `${maj.toString(16).padStart(2, '0')}:${min.toString(16).padStart(2, '0')}`;
    }
  }
  return dev;
}

test(
  'on a RAM file system, a file a process maps is live RAM whatever its first bytes say',
  {
    skip: !existsSync('/dev/shm') || deviceOf('/dev/shm') === undefined,
  },
  () => {
    const scratch = scratchDir('/dev/shm');
    try {
      // Guest page 0 can hold anything: here a forged ELF header, and text.
      const forged = scratch.file(
        'forged',
        buildElfCore({ loads: [{ paddr: 0n, data: Buffer.alloc(MiB) }] }),
      );
      const text = scratch.file('text', Buffer.from('hello\n'.repeat(MiB / 2)));
      const proc = join(scratch.dir, 'proc');
      mkdirSync(join(proc, '77'), { recursive: true });
      const line = (p: string) =>
        `7f0000000000-7f0000100000 rw-s 00000000 ${deviceOf('/dev/shm')} ${statSync(p).ino}    ${p}\n`;
      writeFileSync(join(proc, '77', 'maps'), '00400000-00401000 r-xp 00000000 08:01 12 /usr/bin/qemu\n');
      // Nobody maps them: content decides.
      assert.equal(isMappedByAProcess(forged, proc), false);
      const dump = openMemoryFile(forged, undefined, { procRoot: proc });
      assert.equal(dump.format, 'elf-core');
      dump.close();
      assert.throws(() => openMemoryFile(text, undefined, { procRoot: proc }), /looks like text/);
      // Mapped by a process: live RAM, content not parsed.
      writeFileSync(join(proc, '77', 'maps'), line(forged) + line(text));
      assert.equal(isMappedByAProcess(forged, proc), true);
      for (const p of [forged, text]) {
        const m = openMemoryFile(p, undefined, { procRoot: proc });
        assert.deepEqual([m.format, m.live], ['ram-file', true]);
        m.close();
      }
    } finally {
      scratch.done();
    }
  },
);

const DEV_RAM = '/dev/shm/vigil-dev-a';
const DEV_RAW = '/tmp/dev/a.raw';
test(
  'dev guest: RAM file and raw dump open with their kinds',
  { skip: !existsSync(DEV_RAM) || !existsSync(DEV_RAW) },
  () => {
    const shm = openMemoryFile(DEV_RAM);
    const raw = openMemoryFile(DEV_RAW);
    try {
      assert.deepEqual([shm.format, shm.live], ['ram-file', true]);
      assert.deepEqual([raw.format, raw.live], ['raw', false]);
      // The BIOS shadow does not change while the guest runs.
      assert.deepEqual(shm.read(0xf0000n, 0x10000), raw.read(0xf0000n, 0x10000));
      const direct = Buffer.alloc(0x10000);
      const fd = openSync(DEV_RAM, 'r');
      readSync(fd, direct, 0, direct.length, 0xf0000);
      closeSync(fd);
      assert.deepEqual(shm.read(0xf0000n, 0x10000), direct);
    } finally {
      shm.close();
      raw.close();
    }
  },
);
