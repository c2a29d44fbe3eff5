import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import {
  FrameReader,
  checksum,
  decodeBody,
  encodePacket,
  encodeRle,
  escapeBinary,
  fromHex,
  isErrorReply,
  leToBigInt,
  type Frame,
} from './packet.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const isKind = (kind: string) => (e: unknown) => e instanceof VigilError && e.kind === kind;

test('checksum and framing follow the spec: $OK#9a', () => {
  assert.equal(checksum(b('OK')), 0x9a);
  assert.equal(encodePacket('OK').toString('latin1'), '$OK#9a');
  assert.equal(encodePacket('').toString('latin1'), '$#00');
  // 'g' = 0x67
  assert.equal(encodePacket('g').toString('latin1'), '$g#67');
  // The checksum wraps modulo 256: 0xff + 0x02 = 0x101 -> 01.
  assert.equal(checksum(Buffer.from([0xff, 0x02])), 0x01);
});

test('binary escapes: # $ } * become } and the byte xor 0x20', () => {
  const raw = Buffer.from([0x23, 0x24, 0x7d, 0x2a, 0x00, 0x41]);
  const esc = escapeBinary(raw);
  assert.deepEqual([...esc], [0x7d, 0x03, 0x7d, 0x04, 0x7d, 0x5d, 0x7d, 0x0a, 0x00, 0x41]);
  assert.deepEqual(decodeBody(esc), raw);
  const framed = encodePacket(raw);
  assert.equal(framed[0], 0x24);
  assert.equal(framed.indexOf(0x23), framed.length - 3, 'the only # is the terminator');
  assert.equal(framed.subarray(-2).toString('latin1'), checksum(esc).toString(16).padStart(2, '0'));
});

test('run-length decoding: "0* " is "0000" (space = 32, 32-29 = 3 more)', () => {
  assert.equal(decodeBody(b('0* ')).toString('latin1'), '0000');
  assert.equal(decodeBody(b('ab*!c')).toString('latin1'), 'abbbbbc'); // '!' = 33 -> 4 more
  assert.equal(decodeBody(b('f*~')).length, 1 + 97); // '~' = 126, the largest count
  // A run repeats the decoded byte of an escape.
  assert.deepEqual([...decodeBody(Buffer.from([0x7d, 0x03, 0x2a, 0x20]))], [0x23, 0x23, 0x23, 0x23]);
});

test('RLE round trip on register-like hex with long zero runs', () => {
  const hex = '40ad0100' + '0'.repeat(200) + 'ffffffff' + '1'.repeat(7) + '2'.repeat(8) + 'abc';
  const enc = encodeRle(b(hex));
  assert.ok(enc.length < hex.length / 2);
  assert.ok(!enc.includes(0x23) && !enc.includes(0x24), 'never # or $ as a count');
  assert.equal(decodeBody(enc).toString('latin1'), hex);
});

test('malformed bodies are rejected, oversize ones bounded', () => {
  assert.throws(() => decodeBody(b('ab}')), isKind('malformed'));
  assert.throws(() => decodeBody(b('*!')), isKind('malformed'));
  assert.throws(() => decodeBody(b('a*')), isKind('malformed'));
  assert.throws(() => decodeBody(Buffer.from([0x61, 0x2a, 0x1f])), isKind('malformed'));
  assert.throws(() => decodeBody(Buffer.from([0x61, 0x2a, 0x80])), isKind('malformed'));
  assert.throws(() => decodeBody(b('a*~a*~'), 100), isKind('bound'));
});

test('FrameReader: acks, packets, notifications and noise, fed one byte at a time', () => {
  const wire = b(
    '+junk$OK#9a-%Stop:T05#' +
      checksum(b('Stop:T05')).toString(16) +
      '$bad#00$0* #' +
      checksum(b('0* ')).toString(16),
  );
  const r = new FrameReader();
  const frames: Frame[] = [];
  for (let i = 0; i < wire.length; i++) frames.push(...r.push(wire.subarray(i, i + 1)));
  assert.deepEqual(
    frames.map((f) =>
      f.type === 'packet' || f.type === 'notification'
        ? [f.type, f.payload.toString('latin1'), f.checksumOk]
        : [f.type],
    ),
    [
      ['ack'],
      ['packet', 'OK', true],
      ['nack'],
      ['notification', 'Stop:T05', true],
      ['packet', 'bad', false],
      ['packet', '0000', true],
    ],
  );
});

test('FrameReader: several packets in one chunk, and the size cap', () => {
  const r = new FrameReader(16);
  const frames = r.push(Buffer.concat([encodePacket('T02thread:01;'), b('+'), encodePacket('OK')]));
  assert.deepEqual(
    frames.map((f) => f.type),
    ['packet', 'ack', 'packet'],
  );
  assert.throws(() => r.push(b('$' + 'x'.repeat(17))), isKind('bound'));
  // It recovers at the next packet.
  assert.equal(r.push(encodePacket('OK'))[0].type, 'packet');
});

test('hex helpers', () => {
  assert.equal(leToBigInt(fromHex('eb928595ffffffff')), 0xffffffff958592ebn);
  assert.equal(leToBigInt(Buffer.alloc(0)), 0n);
  assert.throws(() => fromHex('abc'), isKind('malformed'));
  assert.throws(() => fromHex('zz'), isKind('malformed'));
  assert.ok(isErrorReply('E14'));
  assert.ok(isErrorReply('E.no memory'));
  assert.ok(!isErrorReply('E1'));
  assert.ok(!isErrorReply('OK'));
});
