import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Epoch, EpochMap } from './epoch.js';

test('bump moves the value', () => {
  const e = new Epoch();
  const v0 = e.value;
  assert.equal(e.bump(), v0 + 1);
  assert.equal(e.value, v0 + 1);
  assert.equal(e.value, v0 + 1, 'reading does not move an epoch without a time limit');
});

test('a frozen epoch never moves', () => {
  const e = Epoch.frozen();
  const v0 = e.value;
  e.bump();
  e.bump();
  assert.equal(e.value, v0);
  assert.equal(e.frozen, true);
});

test('an epoch older than maxAgeMs bumps itself on read', () => {
  let now = 1000;
  const e = new Epoch({ maxAgeMs: 50, clock: () => now });
  const v0 = e.value;
  now += 49;
  assert.equal(e.value, v0);
  assert.equal(e.ageMs, 49);
  now += 1;
  const v1 = e.value;
  assert.equal(v1, v0 + 1);
  assert.equal(e.ageMs, 0, 'the age restarts at the self-bump');
  now += 10;
  e.bump();
  now += 45;
  assert.equal(e.value, v1 + 1, 'an explicit bump restarts the age too');
});

test('maxAgeMs must be positive', () => {
  assert.throws(() => new Epoch({ maxAgeMs: 0 }), RangeError);
});

test('EpochMap forgets everything when the epoch moves, and stays bounded', () => {
  const epoch = new Epoch();
  const m = new EpochMap<string, number>(epoch, 2);
  m.set('a', 1).set('b', 2);
  assert.equal(m.get('a'), 1);
  m.set('c', 3);
  assert.equal(m.size, 2);
  assert.equal(m.has('a'), false, 'the oldest entry went');
  assert.equal(m.get('c'), 3);
  epoch.bump();
  assert.equal(m.get('c'), undefined);
  assert.equal(m.size, 0);

  const frozen = new EpochMap<number, string>(Epoch.frozen());
  frozen.set(1, 'x');
  frozen.epoch.bump();
  assert.equal(frozen.get(1), 'x');
});
