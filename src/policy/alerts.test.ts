import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AlertTracker, makeAlert } from './alerts.js';
import { finding } from './testkit.js';

const keys = (fs: { key: string }[]) => fs.map((f) => f.key);

test('a poll finding raises once, stays quiet while it persists, and raises again after clearing', () => {
  const t = new AlertTracker();
  assert.deepEqual(keys(t.poll('p', [finding('a'), finding('b')], true).raise), ['a', 'b']);
  const second = t.poll('p', [finding('a'), finding('b')], true);
  assert.deepEqual(second.raise, []);
  assert.deepEqual(second.cleared, []);
  const third = t.poll('p', [finding('b')], true);
  assert.deepEqual(third.raise, []);
  assert.deepEqual(third.cleared, ['a']);
  assert.deepEqual(keys(t.poll('p', [finding('a'), finding('b')], true).raise), ['a'], 'a is back');
  assert.deepEqual([...t.active('p')].sort(), ['a', 'b']);
});

test('duplicate keys within one poll raise once; streams are independent', () => {
  const t = new AlertTracker();
  assert.deepEqual(keys(t.poll('p', [finding('a'), finding('a')], true).raise), ['a']);
  assert.deepEqual(keys(t.poll('q', [finding('a')], true).raise), ['a']);
});

test('an incomplete poll raises new keys but clears nothing', () => {
  const t = new AlertTracker();
  t.poll('p', [finding('a')], true);
  const partial = t.poll('p', [finding('b')], false);
  assert.deepEqual(keys(partial.raise), ['b']);
  assert.deepEqual(partial.cleared, []);
  assert.deepEqual(t.poll('p', [finding('a'), finding('b')], true).raise, [], 'a never cleared: no re-raise');
  assert.deepEqual(t.poll('p', [], true).cleared.sort(), ['a', 'b']);
  assert.equal(t.active('p').size, 0);
});

test('active keys are capped and the overflow counted', () => {
  const t = new AlertTracker({ maxActiveKeys: 3 });
  const many = Array.from({ length: 10 }, (_, i) => finding(`k${i}`));
  const out = t.poll('p', many, true);
  assert.equal(out.raise.length, 3);
  assert.equal(out.overflow, 7);
  assert.equal(t.active('p').size, 3);
  // An incomplete poll merging old keys stays under the cap as well.
  t.poll('p', [finding('x'), finding('y')], false);
  assert.equal(t.active('p').size, 3);
});

test('event findings raise each time, except the same key inside the dedupe window', () => {
  const t = new AlertTracker({ eventDedupeMs: 1000 });
  assert.equal(t.event('e', [finding('a')], 0).raise.length, 1);
  const dup = t.event('e', [finding('a'), finding('b')], 500);
  assert.deepEqual(keys(dup.raise), ['b']);
  assert.equal(dup.suppressed, 1);
  // The window runs from the raise at 0, not from the suppressed duplicate at 500.
  assert.equal(t.event('e', [finding('a')], 1000).raise.length, 1);
  assert.equal(t.event('e', [finding('a')], 1999).raise.length, 0);
  assert.equal(t.event('e', [finding('a')], 2000).raise.length, 1);
});

test('event dedupe state stays bounded under a storm of distinct keys', () => {
  const t = new AlertTracker({ eventDedupeMs: 1_000_000, maxActiveKeys: 100 });
  for (let i = 0; i < 10_000; i++) t.event('e', [finding(`k${i}`)], i);
  // The newest key is still deduplicated; the oldest was evicted, so it raises again.
  assert.equal(t.event('e', [finding('k9999')], 10_001).raise.length, 0);
  assert.equal(t.event('e', [finding('k0')], 10_002).raise.length, 1);
});

test('makeAlert: UUID, ISO time, defaults and override, sanitised text', () => {
  const f = finding('k\u001b[31m', { summary: 'evil\nline\u202e', severity: 'low', technique: undefined });
  const a = makeAlert(f, {
    vm: 'vm1',
    policy: 'p',
    time: Date.UTC(2025, 0, 1),
    defaultSeverity: 'high',
    technique: 'T1014',
  });
  assert.match(a.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(a.time, '2025-01-01T00:00:00.000Z');
  assert.equal(a.severity, 'low');
  assert.equal(a.technique, 'T1014');
  assert.equal(a.summary, 'evil\\x0aline\\u202e');
  assert.equal(a.key, 'k\\x1b[31m');
  assert.equal(a.vm, 'vm1');
  const b = makeAlert(f, {
    vm: 'vm1',
    policy: 'p',
    time: 0,
    defaultSeverity: 'high',
    severityOverride: 'critical',
  });
  assert.equal(b.severity, 'critical');
  assert.notEqual(b.id, a.id);
  const bad = makeAlert(finding('z', { severity: 'nope' as never }), {
    vm: 'v',
    policy: 'p',
    time: 0,
    defaultSeverity: 'medium',
  });
  assert.equal(bad.severity, 'medium', 'an invalid severity falls back to the policy default');
});
