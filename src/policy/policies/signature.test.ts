// The signature policy's options: defaults, caps and usage errors.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { parseSignatureOptions } from './signature.js';

describe('options', () => {
  it('defaults, and wrong types are usage errors', () => {
    const o = parseSignatureOptions({});
    assert.equal(o.maxBytesPerProcess, 64 * 1024 * 1024);
    assert.equal(o.scanKernelModules, true);
    assert.equal(o.scanFileMappings, false);
    assert.deepEqual(
      parseSignatureOptions({ ...o }),
      o,
      'parsing is idempotent (the engine parses once, the poll again)',
    );
    assert.equal(
      parseSignatureOptions({ maxBytesPerProcess: 2 ** 40 }).maxBytesPerProcess,
      1024 * 1024 * 1024,
    );
    for (const bad of [
      { rules: 'x.yar' },
      { rules: [''] },
      { maxBytesPerSweep: -1 },
      { scanFileMappings: 'yes' },
      { bogus: 1 },
    ]) {
      assert.throws(
        () => parseSignatureOptions(bad),
        (e: unknown) => e instanceof VigilError && e.kind === 'usage',
      );
    }
    assert.throws(() => parseSignatureOptions({ noDefaultRules: true }), /no "rules" files/);
  });
});
