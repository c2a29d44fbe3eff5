import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../../../util/errors.js';
import { decodeAddresses, hasNegativeOffsets } from './addresses.js';
import { decodeNames, entryLength, MAX_NAME_LENGTH, skipEntries } from './names.js';
import type { DecodedNames } from './names.js';
import { compressNames, readFixture } from './test-support.js';
import { tokenTableAtDigits } from './tokens.js';

/** Encode names as scripts/kallsyms.c writes kallsyms_names: ULEB128 length, then token codes. */
function encode(list: { type: string; name: string }[]) {
  const { compressed, tokens } = compressNames(list.map((s) => Buffer.from(s.type + s.name, 'latin1')));
  const bytes: number[] = [];
  const markers: number[] = [];
  compressed.forEach((c, i) => {
    if (i % 256 === 0) markers.push(bytes.length);
    if (c.length < 0x80) bytes.push(c.length);
    else bytes.push((c.length & 0x7f) | 0x80, c.length >> 7);
    bytes.push(...c);
  });
  return { names: Buffer.from(bytes), tokens, markers: Uint32Array.from(markers) };
}

const namesOf = (d: DecodedNames): string[] =>
  Array.from({ length: d.types.length }, (_, i) =>
    d.names.pool.toString('latin1', d.names.starts[i], d.names.starts[i + 1]),
  );

const sample = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    type: 'tTdDrRbB'[i % 8],
    name: `${['do_', 'sys_', '__x64_', 'ext4_'][i % 4]}sym_${i}_${'abcdefgh'.slice(0, i % 8)}`,
  }));

describe('kallsyms names', () => {
  it('decodes names compressed the way scripts/kallsyms.c does, checking every marker', () => {
    const list = sample(700);
    const { names, tokens, markers } = encode(list);
    const d = decodeNames(names, 0, names.length, list.length, tokens, markers);
    assert.deepEqual(
      namesOf(d),
      list.map((s) => s.name),
    );
    assert.deepEqual(
      Array.from(d.types, (t) => String.fromCharCode(t)),
      list.map((s) => s.type),
    );
    assert.equal(d.size, names.length);
    assert.equal(d.anomalies, 0);
    // Compression must actually have happened for the test to mean anything.
    assert.ok(names.length < list.reduce((a, s) => a + s.name.length + 2, 0) * 0.8);
  });

  it('reads two-byte (ULEB128) lengths of big symbols and truncates past KSYM_NAME_LEN', () => {
    const long =
      'x'.repeat(300) + Array.from({ length: 200 }, (_, i) => String.fromCharCode(0x41 + (i % 26))).join('');
    const huge =
      'y_' + Array.from({ length: 700 }, (_, i) => String.fromCharCode(0x61 + ((i * 7) % 26))).join('');
    const list = [...sample(3), { type: 't', name: long }, { type: 'T', name: huge }];
    const { names, tokens, markers } = encode(list);
    assert.ok(names.includes(0x80 | 0) || names.some((b) => b >= 0x80), 'a two-byte length is present');
    const d = decodeNames(names, 0, names.length, list.length, tokens, markers);
    assert.equal(namesOf(d)[3], long);
    assert.equal(namesOf(d)[4], huge.slice(0, MAX_NAME_LENGTH));
    assert.equal(d.truncated, 1);
  });

  it('rejects lengths running past the end, zero lengths, bad markers and impossible counts', () => {
    const list = sample(300);
    const { names, tokens, markers } = encode(list);
    const isMalformed = (e: unknown) =>
      e instanceof VigilError && (e.kind === 'malformed' || e.kind === 'bound');
    assert.throws(() => decodeNames(names, 0, names.length - 3, list.length, tokens, markers), isMalformed);
    const zero = Buffer.from(names);
    zero[0] = 0;
    assert.throws(() => decodeNames(zero, 0, zero.length, list.length, tokens), isMalformed);
    const wrong = Uint32Array.from(markers);
    wrong[1] += 1;
    assert.throws(() => decodeNames(names, 0, names.length, list.length, tokens, wrong), isMalformed);
    assert.throws(() => decodeNames(names, 0, names.length, 1e9, tokens), isMalformed);
    assert.throws(() => decodeNames(names, 0, names.length, list.length, tokens.slice(1)), isMalformed);
    const three = Buffer.from([0x81, 0x80, 0x01, 0x41]);
    assert.equal(entryLength(three, 0, three.length), -1, 'ULEB128 of three bytes is refused');
    assert.equal(
      entryLength(Buffer.from([0x85, 0x00]), 0, 2),
      -1,
      'a non-minimal two-byte length is refused',
    );
    assert.equal(entryLength(Buffer.from([0x85, 0x01]), 0, 2), 0x85);
    assert.equal(skipEntries(names, 0, names.length, list.length), names.length);
    assert.equal(skipEntries(names, 0, 10, list.length), -1);
  });

  it('decodes the real Debian 6.1 tables to what the guest /proc/kallsyms listed', () => {
    const manifest = JSON.parse(readFixture('debian-6.1.0-56-amd64.json').toString('utf8'));
    const bin = readFixture('debian-6.1.0-56-amd64.bin');
    const part = (k: string) =>
      bin.subarray(manifest.parts[k].offset, manifest.parts[k].offset + manifest.parts[k].length);
    const truth = readFixture('debian-6.1.0-56-amd64.proc-kallsyms-head.txt')
      .toString('latin1')
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    const tokenBytes = part('tokens');
    const tt = tokenTableAtDigits(tokenBytes, tokenBytes.indexOf('0\x001\x002\x00', 0, 'latin1'));
    assert.ok(tt, 'the real token table validates');
    assert.equal(tt.tableOffset, 0);
    assert.equal(tt.indexOffset, manifest.parts.tokens.indexOffset);
    const count = manifest.parts.names.count;
    const markersBuf = part('markers');
    const markers = Uint32Array.from({ length: markersBuf.length / 4 }, (_, i) =>
      markersBuf.readUInt32LE(4 * i),
    );
    const names = part('names');
    const d = decodeNames(names, 0, names.length, count, tt.tokens, markers);
    const decoded = namesOf(d);
    const offsets = part('offsets');
    assert.ok(hasNegativeOffsets(offsets, 0, count));
    const addresses = decodeAddresses(offsets, 0, count, 'absolute-percpu', BigInt(manifest.relativeBase));
    assert.equal(truth.length, count);
    for (let i = 0; i < count; i++) {
      const [addr, type, name] = truth[i];
      assert.equal(decoded[i], name, `name ${i}`);
      assert.equal(String.fromCharCode(d.types[i]), type, `type of ${name}`);
      assert.equal(addresses[i], BigInt('0x' + addr), `address of ${name}`);
    }
  });
});
