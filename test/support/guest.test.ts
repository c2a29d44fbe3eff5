import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseVigilPs } from './guest.js';

describe('vigil-ps output', () => {
  it('parses processes, keeps comm with spaces, drops vigil-ps itself', () => {
    // Lines as lab/scripts/vigil-ps prints them on the lab guest.
    const text =
      'self 109\n1 0 0 S init\n2 0 0 S kthreadd\n99 1 1000 S vigil-user-idle\n109 102 0 R vigil-ps\n' +
      '120 1 0 S odd name)x\n';
    assert.deepEqual(parseVigilPs(text), [
      { pid: 1, ppid: 0, uid: 0, state: 'S', comm: 'init' },
      { pid: 2, ppid: 0, uid: 0, state: 'S', comm: 'kthreadd' },
      { pid: 99, ppid: 1, uid: 1000, state: 'S', comm: 'vigil-user-idle' },
      { pid: 120, ppid: 1, uid: 0, state: 'S', comm: 'odd name)x' },
    ]);
  });
  it('refuses output that is not from vigil-ps', () => {
    assert.throws(() => parseVigilPs('sh: vigil-ps: not found\n'));
  });
});
