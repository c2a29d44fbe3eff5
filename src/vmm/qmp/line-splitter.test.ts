import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { LineSplitter } from './line-splitter.js';

test('several lines in one chunk and a line split across chunks', () => {
  const s = new LineSplitter();
  assert.deepEqual(s.push(Buffer.from('{"a":1}\r\n{"b":2}\n{"c"')), ['{"a":1}', '{"b":2}']);
  assert.equal(s.pending, 4);
  assert.deepEqual(s.push(Buffer.from(':3')), []);
  assert.deepEqual(s.push(Buffer.from('}\n\n')), ['{"c":3}', '']);
  assert.equal(s.pending, 0);
});

test('a multi-byte UTF-8 character split between chunks survives', () => {
  const s = new LineSplitter();
  const bytes = Buffer.from('"é€"\n');
  assert.deepEqual(s.push(bytes.subarray(0, 2)), []);
  assert.deepEqual(s.push(bytes.subarray(2, 5)), []);
  assert.deepEqual(s.push(bytes.subarray(5)), ['"é€"']);
});

test('the chunk buffer may be reused by the caller', () => {
  const s = new LineSplitter();
  const chunk = Buffer.from('abc');
  s.push(chunk);
  chunk.fill(0x78);
  assert.deepEqual(s.push(Buffer.from('\n')), ['abc']);
});

test('a line over the cap throws bound and resets', () => {
  const s = new LineSplitter(8);
  assert.deepEqual(s.push(Buffer.from('12345678\n')), ['12345678']);
  s.push(Buffer.from('12345'));
  assert.throws(
    () => s.push(Buffer.from('6789')),
    (e: unknown) => e instanceof VigilError && e.kind === 'bound',
  );
  assert.equal(s.pending, 0);
  assert.throws(
    () => s.push(Buffer.from('123456789\n')),
    (e: unknown) => e instanceof VigilError && e.kind === 'bound',
  );
});
