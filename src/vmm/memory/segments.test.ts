import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync } from 'node:fs';
import { VigilError } from '../../util/errors.js';
import { type Segment, SegmentedMemory, normalizeSegments } from './segments.js';
import { patternBytes, scratchDir } from './synthetic.js';

const FILE = patternBytes(0x10000, 7);
const SEGMENTS: Segment[] = [
  { start: 0x3000n, size: 0x1000n, offset: 0x8000n }, // given out of order on purpose
  { start: 0x1000n, size: 0x2000n, offset: 0x0n },
  { start: 0x10000n, size: 0x3000n, offset: 0x4000n, stored: 0x1000n }, // tail is RAM reading as zero
  { start: 0x1_0000_0000n, size: 0x1000n, offset: 0xa000n },
];

/** Byte-at-a-time model of what the reader must return; undefined = hole. */
function modelByte(p: bigint): number | undefined {
  for (const s of SEGMENTS) {
    if (p >= s.start && p < s.start + s.size) {
      const d = p - s.start;
      return d < (s.stored ?? s.size) ? FILE[Number(s.offset + d)] : 0;
    }
  }
  return undefined;
}

function withMemory(fn: (m: SegmentedMemory) => void): void {
  const scratch = scratchDir();
  const path = scratch.file('ram', FILE);
  const m = new SegmentedMemory({
    fd: openSync(path, 'r'),
    description: 'test',
    segments: SEGMENTS,
    sourceName: path,
  });
  try {
    fn(m);
  } finally {
    m.close();
    scratch.done();
  }
}

test('segments are sorted, ranges merge guest-contiguous neighbours', () => {
  withMemory((m) => {
    assert.deepEqual(
      m.ranges.map((r) => [r.start, r.size]),
      [
        [0x1000n, 0x3000n],
        [0x10000n, 0x3000n],
        [0x1_0000_0000n, 0x1000n],
      ],
    );
    assert.equal(m.segments.length, 4); // 0x1000 and 0x3000 are not contiguous in the file
  });
});

test('reads gather across segments, zero-fill holes and unstored tails (random reads vs a model)', () => {
  withMemory((m) => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const bases = [0n, 0x1_0000_0000n - 0x800n];
    for (let i = 0; i < 1500; i++) {
      const p = bases[rand(2)] + BigInt(rand(0x14000));
      const len = rand(i % 10 === 0 ? 0x9000 : 64) + 1;
      const got = m.read(p, len);
      assert.equal(got.length, len);
      let hole: bigint | undefined;
      for (let k = 0; k < len; k++) {
        const want = modelByte(p + BigInt(k));
        if (want === undefined && hole === undefined) hole = p + BigInt(k);
        if (got[k] !== (want ?? 0))
          assert.fail(`byte at ${(p + BigInt(k)).toString(16)}: ${got[k]} != ${want}`);
      }
      assert.equal(m.firstHole(p, len), hole);
    }
  });
});

test('read into a caller buffer returns that buffer and overwrites stale bytes', () => {
  withMemory((m) => {
    const buf = Buffer.alloc(0x2000, 0xee);
    const out = m.read(0x0n, 0x2000, buf);
    assert.equal(out, buf);
    assert.ok(out.subarray(0, 0x1000).every((b) => b === 0)); // hole below 0x1000 zero-filled
    assert.deepEqual(out.subarray(0x1000), FILE.subarray(0, 0x1000));
    const part = m.read(0x1000n, 16, Buffer.alloc(32));
    assert.equal(part.length, 16);
    assert.throws(() => m.read(0x1000n, 16, Buffer.alloc(8)), { kind: 'usage' });
  });
});

test('readStrict throws unmapped naming the first hole byte, and returns data otherwise', () => {
  withMemory((m) => {
    assert.deepEqual(
      m.readStrict(0x2ff0n, 0x20),
      Buffer.concat([FILE.subarray(0x1ff0, 0x2000), FILE.subarray(0x8000, 0x8010)]),
    );
    assert.throws(
      () => m.readStrict(0x3ff0n, 0x20),
      (e: unknown) => e instanceof VigilError && e.kind === 'unmapped' && /0x4000 is not RAM/.test(e.message),
    );
    assert.throws(() => m.readStrict(0x0n, 1), /0x0 is not RAM/);
    // The zero tail of a segment is RAM, not a hole.
    assert.ok(m.readStrict(0x11000n, 0x2000).every((b) => b === 0));
  });
});

test('addresses past any physical RAM read as holes; bad lengths and closed sources are errors', () => {
  withMemory((m) => {
    assert.ok(m.read(2n ** 60n, 8).every((b) => b === 0));
    assert.throws(() => m.readStrict(2n ** 60n, 8), { kind: 'unmapped' });
    assert.throws(() => m.read(0x1000n, -1), { kind: 'usage' });
    assert.throws(() => m.read(0x1000n, 1.5), { kind: 'usage' });
    assert.throws(() => m.read(-1n, 4), { kind: 'usage' });
    assert.equal(m.read(0x1000n, 0).length, 0);
    m.close();
    m.close(); // idempotent
    assert.throws(() => m.read(0x1000n, 4), { kind: 'state' });
  });
});

test('a source shorter than its segments reports a short read', () => {
  const scratch = scratchDir();
  try {
    const path = scratch.file('short', Buffer.alloc(0x1000));
    const segments = [{ start: 0n, size: 0x2000n, offset: 0n }];
    const m = new SegmentedMemory({ fd: openSync(path, 'r'), description: 't', segments, sourceName: path });
    assert.throws(
      () => m.read(0x800n, 0x1000),
      (e: unknown) => e instanceof VigilError && e.kind === 'io',
    );
    m.close();
  } finally {
    scratch.done();
  }
});

test('normalizeSegments rejects overlap, or clips it when asked', () => {
  const a = { start: 0x1000n, size: 0x2000n, offset: 0n };
  const b = { start: 0x2000n, size: 0x2000n, offset: 0x5000n };
  assert.throws(() => normalizeSegments([a, b]), { kind: 'malformed' });
  assert.deepEqual(normalizeSegments([b, a], true), [
    a,
    { start: 0x3000n, size: 0x1000n, offset: 0x6000n, stored: 0x1000n },
  ]);
  assert.deepEqual(normalizeSegments([a, { start: 0x1800n, size: 0x100n, offset: 0n }], true), [a]);
  assert.throws(() => normalizeSegments([{ start: 2n ** 52n, size: 1n, offset: 0n }]), { kind: 'malformed' });
});
