import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../util/errors.js';
import { openDump } from './dump.js';
import { buildLime, patternBytes, scratchDir } from './synthetic.js';

const A = patternBytes(0x9f000, 4);
const B = patternBytes(0x3000, 5);
const GOOD = buildLime([
  { start: 0x1000n, data: A },
  { start: 0x100000n, data: B },
]);

function attempt(data: Buffer) {
  const scratch = scratchDir();
  try {
    const m = openDump(scratch.file('lime', data));
    m.close();
    return m;
  } finally {
    scratch.done();
  }
}

test('LiME: each header gives a range, data follows it', () => {
  const scratch = scratchDir();
  try {
    const m = openDump(scratch.file('x.lime', GOOD));
    assert.equal(m.format, 'lime');
    assert.match(m.description, /LiME dump .*\(2 ranges\)/);
    assert.deepEqual(
      m.ranges.map((r) => [r.start, r.size]),
      [
        [0x1000n, 0x9f000n],
        [0x100000n, 0x3000n],
      ],
    );
    assert.deepEqual(m.read(0x9fff8n, 16), Buffer.concat([A.subarray(-8), Buffer.alloc(8)]));
    assert.deepEqual(m.readStrict(0x102000n, 0x1000), B.subarray(0x2000));
    assert.throws(() => m.readStrict(0xa0000n, 1), { kind: 'unmapped' });
    m.close();
  } finally {
    scratch.done();
  }
});

test('LiME: a broken header chain is rejected at the header that breaks it', () => {
  const second = 32 + A.length;
  const badMagic = Buffer.from(GOOD);
  badMagic.writeUInt32LE(0x12345678, second);
  const badVersion = Buffer.from(GOOD);
  badVersion.writeUInt32LE(2, second + 4);
  const backwards = Buffer.from(GOOD);
  backwards.writeBigUInt64LE(0x100000n - 2n, second + 16);
  const overlap = buildLime([
    { start: 0x1000n, data: Buffer.alloc(0x2000) },
    { start: 0x2000n, data: Buffer.alloc(0x1000) },
  ]);
  const cases: [Buffer, string, RegExp][] = [
    [badMagic, 'malformed', /LiME header 1 at file offset 0x9f020: bad magic 0x12345678/],
    [badVersion, 'unsupported', /LiME version 2/],
    [backwards, 'malformed', /bad range/],
    [
      GOOD.subarray(0, GOOD.length - 1),
      'malformed',
      /truncated dump: segment 0x100000-0x102fff ends past end of file/,
    ],
    [GOOD.subarray(0, second + 20), 'malformed', /LiME header 1 .* is truncated/],
    [overlap, 'malformed', /overlap/],
  ];
  for (const [data, kind, message] of cases) {
    assert.throws(
      () => attempt(data),
      (e: unknown) => e instanceof VigilError && e.kind === kind && message.test(e.message),
      message.source,
    );
  }
});
