import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WalkIssues } from '../walk.js';
import { hlistNullsChain, isNullsMarker } from './nulls.js';

/** Nodes as a map: address → next. */
const reader = (links: Record<string, bigint>) => (va: bigint) => links[va.toString()];

describe('hlistNullsChain', () => {
  it('ends at an odd nulls marker, not only at NULL', () => {
    const read = reader({ '4096': 8192n, '8192': (7n << 1n) | 1n });
    const issues = new WalkIssues();
    assert.deepEqual([...hlistNullsChain(read, 4096n, { walker: 't', max: 10, issues })], [4096n, 8192n]);
    assert.deepEqual(issues.items, []);
    assert.equal(isNullsMarker(15n), true);
    assert.equal(isNullsMarker(4096n), false);
  });

  it('yields nothing for an empty bucket (marker or NULL as first)', () => {
    const read = reader({});
    assert.deepEqual([...hlistNullsChain(read, 1n, { walker: 't', max: 10 })], []);
    assert.deepEqual([...hlistNullsChain(read, 0n, { walker: 't', max: 10 })], []);
  });

  it('stops a loop and records a cycle issue', () => {
    const read = reader({ '4096': 8192n, '8192': 12288n, '12288': 4096n });
    const issues = new WalkIssues();
    const got = [...hlistNullsChain(read, 4096n, { walker: 'tcp', max: 100, issues })];
    assert.deepEqual(got, [4096n, 8192n, 12288n]);
    assert.equal(issues.items.length, 1);
    assert.equal(issues.items[0]!.kind, 'cycle');
    assert.equal(issues.items[0]!.walker, 'tcp');
  });

  it('stops at its bound on a long chain', () => {
    const read = (va: bigint) => va + 64n; // an endless, never-repeating chain
    const issues = new WalkIssues();
    const got = [...hlistNullsChain(read, 4096n, { walker: 't', max: 50, issues })];
    assert.equal(got.length, 50);
    assert.equal(issues.items[0]!.kind, 'bound');
  });

  it('reports an unreadable node', () => {
    const read = reader({ '4096': 8192n });
    const issues = new WalkIssues();
    assert.deepEqual([...hlistNullsChain(read, 4096n, { walker: 't', max: 10, issues })], [4096n, 8192n]);
    assert.equal(issues.items[0]!.kind, 'unmapped');
  });
});
