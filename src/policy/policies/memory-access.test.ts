import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Finding } from '../types.js';
import { KT } from './kernel-testkit.js';
import { memoryAccessPolicy } from './memory-access.js';
import { context, learned } from './memory-access-testkit.js';

describe('memory-access: the policy', () => {
  test('a clean kernel: nothing, and nothing over repeated sweeps', () => {
    const { poll } = learned();
    for (let i = 0; i < 3; i++) assert.deepEqual(poll(), []);
  });

  test('an unreadable text page is zeros, counted and noted', () => {
    const { k, b } = learned();
    k.builder.setEntry(KT, 'PD', 0n); // unmap the first 2 MiB (all of text)
    k.refresh();
    const notes: string[] = [];
    const found = memoryAccessPolicy.poll!(context(k, b, notes)) as Finding[];
    assert.ok(found.length > 0);
    assert.ok(notes.some((n) => n.startsWith('unmapped: kernel-image')));
  });
});
