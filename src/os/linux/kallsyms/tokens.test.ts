import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildKallsyms, percpuSymbols, type SpecSymbol } from './test-support.js';
import { DIGIT_TOKENS, looksLikeTokenIndex, tokenTableAtDigits, tokenTableAtIndex } from './tokens.js';

const symbols = (n: number, digits = '0123456789'): SpecSymbol[] =>
  Array.from({ length: n }, (_, i) => ({
    name: `fn_${[...i.toString(digits.length)].map((d) => digits[parseInt(d, digits.length)]).join('')}_x`,
    type: 't',
    address: 0xffffffff81000000n + BigInt(i * 16),
  }));

describe('kallsyms token table', () => {
  const built = buildKallsyms([...percpuSymbols(), ...symbols(400)], 'v6.1');
  const { image, at, tokens } = built;

  it('is found from the digit tokens and its index', () => {
    const hit = image.indexOf(DIGIT_TOKENS);
    assert.ok(hit >= at.tokenTable && hit < at.tokenIndex);
    const t = tokenTableAtDigits(image, hit);
    assert.ok(t);
    assert.equal(t.tableOffset, at.tokenTable);
    assert.equal(t.indexOffset, at.tokenIndex);
    assert.deepEqual(t.tokens, tokens);
    for (let c = 0x30; c <= 0x39; c++) assert.equal(t.tokens[c], String.fromCharCode(c));
  });

  it('is found from the index alone (kernels lacking a digit)', () => {
    const words = new Uint16Array(image.buffer, image.byteOffset, image.length >> 1);
    assert.ok(looksLikeTokenIndex(words, at.tokenIndex >> 1));
    const t = tokenTableAtIndex(image, at.tokenIndex);
    assert.ok(t);
    assert.equal(t.tableOffset, at.tokenTable);
    assert.deepEqual(t.tokens, tokens);
  });

  it('rejects an index that does not point at the strings, or unprintable tokens', () => {
    const hit = image.indexOf(DIGIT_TOKENS);
    const bad = Buffer.from(image);
    bad.writeUInt16LE(bad.readUInt16LE(at.tokenIndex + 2 * 0x40) + 1, at.tokenIndex + 2 * 0x40);
    assert.equal(tokenTableAtDigits(bad, hit), undefined);
    assert.equal(tokenTableAtIndex(bad, at.tokenIndex), undefined);
    const ctrl = Buffer.from(image);
    ctrl[at.tokenTable + ctrl.readUInt16LE(at.tokenIndex + 2 * 0xf0)] = 0x1b;
    assert.equal(tokenTableAtDigits(ctrl, hit), undefined);
    const outOfRange = Buffer.from(image);
    outOfRange.writeUInt16LE(0xffff, at.tokenIndex + 2 * 0xff);
    assert.equal(tokenTableAtDigits(outOfRange, hit), undefined);
    // Cut just before the index: nothing to validate against.
    assert.equal(tokenTableAtDigits(image.subarray(0, at.tokenIndex + 100), hit), undefined);
  });

  it('finds nothing in text that merely contains the digits', () => {
    const text = Buffer.concat([
      Buffer.alloc(64, 0x41),
      DIGIT_TOKENS,
      Buffer.from('abc\0def\0', 'latin1'),
      Buffer.alloc(1024),
    ]);
    assert.equal(tokenTableAtDigits(text, 64), undefined);
  });
});
