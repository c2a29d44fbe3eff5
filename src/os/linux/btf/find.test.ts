import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import type { PhysicalMemory, PhysRange } from '../../../vmm/types.js';
import { findVmlinuxBtf, scanBtfHeaders } from './find.js';
import { BtfWriter, sampleKernel } from './testkit.js';

/** Guest-physical memory over one buffer, with holes that read as zero. */
class BufferMemory implements PhysicalMemory {
  readonly description = 'test buffer';
  reads = 0;
  constructor(
    private readonly bytes: Buffer,
    readonly ranges: readonly PhysRange[],
  ) {}
  read(paddr: bigint, length: number, into?: Buffer): Buffer {
    this.reads++;
    const out = into && into.length >= length ? into.subarray(0, length) : Buffer.alloc(length);
    out.fill(0);
    for (const r of this.ranges) {
      const from = paddr > r.start ? paddr : r.start;
      const end = paddr + BigInt(length) < r.start + r.size ? paddr + BigInt(length) : r.start + r.size;
      if (from >= end || from >= BigInt(this.bytes.length)) continue;
      this.bytes.copy(out, Number(from - paddr), Number(from), Math.min(Number(end), this.bytes.length));
    }
    return out;
  }
  readStrict(paddr: bigint, length: number): Buffer {
    return this.read(paddr, length);
  }
  close(): void {}
}

const RANGES: PhysRange[] = [
  { start: 0n, size: 0xa0000n },
  { start: 0x100000n, size: 0x300000n },
];
const CHUNK = 64 * 1024;
/** The first chunk of the second range ends at 0x110000: this header straddles it. */
const REAL = 0x10fff0;

function plant(ram: Buffer, at: number, blob: Buffer): void {
  blob.copy(ram, at);
}

/** A module-like (split) blob: its members refer to type ids it does not define. */
function splitBlob(): Buffer {
  const w = new BtfWriter();
  const members: [string, number, number][] = [];
  for (let i = 0; i < 2000; i++) members.push([`m${i}`, 90000 + i, i * 64]);
  w.struct('task_struct', 16000, members);
  return w.blob();
}

/** A valid, larger blob that is not vmlinux (no task_struct). */
function otherBlob(): Buffer {
  const w = new BtfWriter();
  for (let i = 0; i < 3000; i++) w.int(`i${i}`, 4);
  return w.blob();
}

function guestRam(): { mem: BufferMemory; real: Buffer } {
  const ram = Buffer.alloc(0x400000);
  const real = sampleKernel().blob;
  // A header copy inside something else (as in the kernel's struct btf): huge claimed sizes, garbage after.
  const fake = Buffer.from(real.subarray(0, 24));
  fake.writeUInt32LE(0x200000, 12);
  fake.writeUInt32LE(0x200000, 16);
  plant(ram, 0x3000, fake);
  plant(ram, 0x120000, splitBlob());
  plant(ram, 0x200000, otherBlob());
  plant(ram, REAL, real);
  plant(ram, 0x380000, real); // a stale copy: same size, higher address
  // The magic in the hole (0xa0000..0x100000) is not RAM and must not be seen.
  plant(ram, 0xb0000, real);
  ram.fill(0xff, 0x3f0000, 0x3f0100); // no NUL here, so a header pointing here fails fast
  return { mem: new BufferMemory(ram, RANGES), real };
}

test('the scan sees every plausible header, including one across a chunk boundary, and not the hole', () => {
  const { mem } = guestRam();
  const found = scanBtfHeaders(mem, { chunkSize: CHUNK }).map((c) => Number(c.paddr));
  assert.deepEqual(found, [0x3000, REAL, 0x120000, 0x200000, 0x380000]);
  // Large chunks see the same.
  assert.deepEqual(
    scanBtfHeaders(mem).map((c) => Number(c.paddr)),
    found,
  );
});

test('findVmlinuxBtf skips impostors and picks the lowest of equal-sized copies', () => {
  const { mem, real } = guestRam();
  const hit = findVmlinuxBtf(mem, { chunkSize: CHUNK });
  assert.equal(hit.paddr, BigInt(REAL));
  assert.deepEqual(hit.blob, real);
  assert.equal(hit.candidates, 5);
  assert.equal(hit.types.sizeof('task_struct'), 128);
});

test('an expected address is tried first and the scan skipped', () => {
  const { mem } = guestRam();
  const hit = findVmlinuxBtf(mem, { expectPaddr: 0x380000n });
  assert.equal(hit.paddr, 0x380000n);
  assert.equal(hit.candidates, 1);
  assert.ok(mem.reads < 10);
  // A wrong hint falls back to the scan.
  assert.equal(findVmlinuxBtf(mem, { expectPaddr: 0x3000n }).paddr, BigInt(REAL));
});

test('no vmlinux BTF is a clear not-found, and the candidate budget is bounded', () => {
  const ram = Buffer.alloc(0x100000);
  plant(ram, 0x1000, otherBlob());
  plant(ram, 0x40000, splitBlob());
  const mem = new BufferMemory(ram, [{ start: 0n, size: 0x100000n }]);
  assert.throws(
    () => findVmlinuxBtf(mem),
    (e) =>
      e instanceof VigilError &&
      e.kind === 'not-found' &&
      /2 BTF headers seen, 2 parsed without success/.test(e.message),
  );
  // A guest full of headers cannot make the scan collect without end.
  const spam = Buffer.alloc(0x10000);
  const header = sampleKernel().blob.subarray(0, 24);
  for (let at = 0; at + 24 <= spam.length; at += 24) header.copy(spam, at);
  const many = new BufferMemory(spam, [{ start: 0n, size: 0x10000n }]);
  assert.equal(scanBtfHeaders(many, { maxCandidates: 100 }).length, 100);
  assert.throws(
    () => findVmlinuxBtf(many, { maxAttempts: 5 }),
    (e) => e instanceof VigilError && /5 parsed without success/.test(e.message),
  );
});

test('many small planted headers cannot push the kernel BTF out of the candidates', () => {
  const ram = Buffer.alloc(0x100000);
  const small = new BtfWriter();
  small.int('x', 4);
  const blob = small.blob();
  for (let i = 0; i < 300; i++) plant(ram, 0x1000 + i * 64, blob);
  plant(ram, 0x80000, sampleKernel().blob);
  const mem = new BufferMemory(ram, [{ start: 0n, size: 0x100000n }]);
  const hit = findVmlinuxBtf(mem, { maxCandidates: 100 });
  assert.equal(hit.paddr, 0x80000n);
  assert.equal(hit.candidates, 100);
});
