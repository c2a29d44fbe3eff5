import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../util/errors.js';
import { requireProgram, run, which } from './proc.js';

describe('host programs', () => {
  it('finds installed programs and names the package of a missing one', () => {
    assert.ok(which('sh'));
    assert.throws(
      () => requireProgram('vigil-no-such-program', 'vigil-pkg'),
      (e: unknown) =>
        e instanceof VigilError && e.kind === 'not-found' && /apt-get install vigil-pkg/.test(e.message),
    );
  });
  it('turns a failing command into a VigilError carrying its last words', async () => {
    assert.equal((await run('sh', ['-c', 'echo out'])).stdout, 'out\n');
    await assert.rejects(
      run('sh', ['-c', 'echo broken >&2; exit 3']),
      (e: unknown) => e instanceof VigilError && /broken/.test(e.message),
    );
  });
});
