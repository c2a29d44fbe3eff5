import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { VigilError } from '../../util/errors.js';
import { openDump } from './dump.js';
import { buildElfCore, patternBytes, scratchDir } from './synthetic.js';

const LOW = patternBytes(0x2000, 1);
const MID = patternBytes(0x3000, 2);
const HIGH = patternBytes(0x1000, 3);
const CPU0 = {
  rip: 0xffffffff81000000n,
  rsp: 0xffffc90000003f00n,
  cr0: 0x80050033n,
  cr3: 0x2a58000n,
  cr4: 0x751ef0n,
};
const CPU1 = { ...CPU0, cr3: 0x1234000n, gsBase: 0xffff888007a00000n, kernelGsBase: 0x7f0000001000n };
const CORE = {
  loads: [
    { paddr: 0n, data: LOW },
    { paddr: 0x100000n, data: MID, memsz: 0x5000n },
    { paddr: 0x1_0000_0000n, data: HIGH },
  ],
  cpus: [CPU0, CPU1],
};

function withFile(data: Buffer, fn: (path: string) => void): void {
  const scratch = scratchDir();
  try {
    fn(scratch.file('core', data));
  } finally {
    scratch.done();
  }
}

test('ELF core: PT_LOADs give guest-physical ranges, p_memsz beyond p_filesz reads as zero RAM', () => {
  withFile(buildElfCore(CORE), (path) => {
    const m = openDump(path);
    try {
      assert.equal(m.format, 'elf-core');
      assert.equal(m.live, false);
      assert.match(m.description, /ELF core .* \(3 segments, registers of 2 vCPUs\)/);
      assert.deepEqual(
        m.ranges.map((r) => [r.start, r.size]),
        [
          [0n, 0x2000n],
          [0x100000n, 0x5000n],
          [0x1_0000_0000n, 0x1000n],
        ],
      );
      assert.deepEqual(m.read(0x1000n, 0x1000), LOW.subarray(0x1000));
      assert.deepEqual(
        m.readStrict(0x102ff0n, 0x20),
        Buffer.concat([MID.subarray(0x2ff0), Buffer.alloc(0x10)]),
      );
      assert.deepEqual(m.read(0xfffff000n, 0x2000), Buffer.concat([Buffer.alloc(0x1000), HIGH]));
      assert.throws(() => m.readStrict(0x1ff8n, 16), { kind: 'unmapped' });
    } finally {
      m.close();
    }
  });
});

test('ELF core: QEMU notes give per-vCPU registers with CR3, EFER inferred', () => {
  withFile(buildElfCore(CORE), (path) => {
    const m = openDump(path);
    try {
      assert.equal(m.cpus.length, 2);
      const [a, b] = m.cpus;
      assert.deepEqual(
        [a.index, a.registers.cr3, a.registers.cr0, a.registers.cr4, a.registers.rip, a.registers.rsp],
        [0, CPU0.cr3, CPU0.cr0, CPU0.cr4, CPU0.rip, CPU0.rsp],
      );
      assert.equal(a.registers.efer, 0x500n); // CR0.PG and CR4.PAE in a 64-bit core: long mode
      assert.deepEqual(a.inferred, ['efer']);
      assert.deepEqual(
        [b.index, b.registers.cr3, b.registers.gsBase, b.registers.kernelGsBase],
        [1, CPU1.cr3, CPU1.gsBase, CPU1.kernelGsBase],
      );
      assert.equal(b.registers.cs, 0x10n);
    } finally {
      m.close();
    }
  });
  // QEMU before 7.1 wrote QEMUCPUState without kernel_gs_base.
  withFile(buildElfCore({ ...CORE, stateSize: 432 }), (path) => {
    const m = openDump(path);
    assert.equal(m.cpus[1].registers.kernelGsBase, undefined);
    assert.equal(m.cpus[1].registers.cr3, CPU1.cr3);
    m.close();
  });
});

test('ELF core with PN_XNUM takes the header count from section header 0', () => {
  withFile(buildElfCore({ ...CORE, xnum: true }), (path) => {
    const m = openDump(path);
    assert.equal(m.ranges.length, 3);
    assert.deepEqual(m.read(0x1_0000_0000n, 16), HIGH.subarray(0, 16));
    m.close();
  });
});

test('overlapping PT_LOADs (a paging core) keep the first mapping of each byte', () => {
  const core = buildElfCore({
    loads: [
      { paddr: 0x1000n, data: Buffer.alloc(0x2000, 0xaa) },
      { paddr: 0x2000n, data: Buffer.alloc(0x2000, 0xbb) },
    ],
  });
  withFile(core, (path) => {
    const m = openDump(path);
    assert.deepEqual(
      m.ranges.map((r) => [r.start, r.size]),
      [[0x1000n, 0x3000n]],
    );
    assert.deepEqual([...m.read(0x2fffn, 2)], [0xaa, 0xbb]);
    m.close();
  });
});

test('broken ELF files are rejected with what is wrong', () => {
  const good = buildElfCore(CORE);
  const cases: [string, Buffer, string, RegExp][] = [
    [
      'truncated',
      good.subarray(0, good.length - 100),
      'malformed',
      /truncated dump: segment 3 .* ends past end of file/,
    ],
    ['exec', buildElfCore({ ...CORE, type: 2 }), 'malformed', /not a core dump \(e_type 2/],
    ['arm', buildElfCore({ ...CORE, machine: 183 }), 'unsupported', /machine 183, not x86-64/],
    ['i386', buildElfCore({ ...CORE, machine: 3 }), 'unsupported', /not in 64-bit mode/],
    ['header', good.subarray(0, 40), 'malformed', /truncated ELF header/],
    ['no loads', buildElfCore({ loads: [] }), 'malformed', /no PT_LOAD/],
  ];
  const elf32 = Buffer.from(good);
  elf32[4] = 1;
  cases.push(['elf32', elf32, 'unsupported', /32-bit ELF/]);
  // A note whose descsz runs past the PT_NOTE payload.
  const badNote = Buffer.from(good);
  const noteOff = Number(badNote.readBigUInt64LE(64 + 8));
  badNote.writeUInt32LE(0x7fffffff, noteOff + 4);
  cases.push(['note', badNote, 'malformed', /runs past the end of the notes/]);
  // A program header count the file cannot hold.
  const manyPh = Buffer.from(good);
  manyPh.writeUInt16LE(60000, 56);
  cases.push(['phnum', manyPh, 'malformed', /program headers end past end of file/]);
  for (const [name, data, kind, message] of cases) {
    withFile(data, (path) => {
      assert.throws(
        () => openDump(path),
        (e: unknown) => e instanceof VigilError && e.kind === kind && message.test(e.message),
        name,
      );
    });
  }
});

const DEV_ELF = '/tmp/dev/a.elf';
test(
  'dev guest ELF core: CR3 from the QEMU note matches info registers',
  { skip: !existsSync(DEV_ELF) },
  () => {
    const m = openDump(DEV_ELF);
    try {
      assert.equal(m.cpus.length, 1);
      const r = m.cpus[0].registers;
      assert.equal(r.cr3, 0x2a58000n);
      assert.equal(r.cr4 & (1n << 12n), 1n << 12n); // LA57: 5-level paging
      assert.ok(m.ranges.some((x) => x.start <= 0x100000n && x.start + x.size >= 0x10000000n));
      // The kernel banner is somewhere in RAM.
      let found = false;
      const buf = Buffer.alloc(1 << 20);
      for (let p = 0x100000n; p < 0x10000000n && !found; p += 1n << 20n) {
        found = m.read(p, buf.length, buf).includes('Linux version 6.');
      }
      assert.ok(found);
    } finally {
      m.close();
    }
  },
);
