import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stringifyJson, toJsonSafe } from './json.js';
import { ECS_VERSION, toSchema } from './schema.js';
import { makeAlert } from './test-support.js';

test('toJsonSafe: bigint as hex, bytes as hex, Map/Set/Date, cycles and undefined', () => {
  const cyclic: Record<string, unknown> = { name: 'loop' };
  cyclic.self = cyclic;
  const shared = { x: 1 };
  const out = toJsonSafe({
    addr: 0xffffffff81000000n,
    neg: -16n,
    bytes: Buffer.from([0xde, 0xad]),
    map: new Map([['k', 1n]]),
    set: new Set(['a']),
    when: new Date(0),
    cyclic,
    twice: [shared, shared],
    gone: undefined,
    inf: Infinity,
    arr: [undefined, () => 1],
  });
  assert.deepEqual(out, {
    addr: '0xffffffff81000000',
    neg: '-0x10',
    bytes: 'dead',
    map: { k: '0x1' },
    set: ['a'],
    when: '1970-01-01T00:00:00.000Z',
    cyclic: { name: 'loop', self: '[circular]' },
    twice: [{ x: 1 }, { x: 1 }],
    inf: 'Infinity',
    arr: [null, null],
  });
});

test('toJsonSafe bounds depth', () => {
  let deep: Record<string, unknown> = {};
  const root = deep;
  for (let i = 0; i < 100; i++) deep = (deep.next = {}) as Record<string, unknown>;
  const text = JSON.stringify(toJsonSafe(root));
  assert.ok(text.includes('[too deep]'));
  assert.ok(text.length < 1000);
});

test('stringifyJson escapes what terminals act on and stays valid JSON', () => {
  const s = 'a\u202eb\u0085c\u2028d\x1b[31m\n';
  const text = stringifyJson({ s });
  assert.doesNotMatch(text, /[\u202e\u0085\u2028\x1b\n]/);
  assert.equal(JSON.parse(text).s, s);
});

test('toSchema: ECS alert fields and the vigil object', () => {
  const a = makeAlert({
    technique: 'T1014.001',
    evidence: { addr: 0x10n },
    response: [{ action: 'pause', ok: true }],
  });
  const doc = toSchema(a, { hostname: 'hv1' });
  assert.equal(doc['@timestamp'], a.time);
  assert.equal(doc.message, a.summary);
  assert.equal(doc.ecs.version, ECS_VERSION);
  assert.deepEqual(doc.event, {
    kind: 'alert',
    category: ['intrusion_detection'],
    type: ['info'],
    id: a.id,
    module: 'vigil',
    dataset: 'vigil.alert',
    severity: 4,
  });
  assert.deepEqual(doc.rule, { id: 'raw-socket', name: 'raw-socket', ruleset: 'vigil' });
  assert.deepEqual(doc.host, { name: 'web01' });
  assert.equal(doc.observer.hostname, 'hv1');
  assert.deepEqual(doc.threat, {
    framework: 'MITRE ATT&CK',
    technique: { id: ['T1014'], reference: ['https://attack.mitre.org/techniques/T1014/'] },
    subtechnique: { id: ['T1014.001'], reference: ['https://attack.mitre.org/techniques/T1014/001/'] },
  });
  assert.equal(doc.vigil.id, a.id);
  assert.equal(doc.vigil.severity, 'high');
  assert.equal(doc.vigil.key, a.key);
  assert.equal(doc.vigil.technique, 'T1014.001');
  assert.deepEqual(doc.vigil.evidence, { addr: '0x10' });
  assert.deepEqual(doc.vigil.response, [{ action: 'pause', ok: true }]);
});

test('toSchema: no threat for a missing or malformed technique', () => {
  assert.equal(toSchema(makeAlert({ technique: undefined })).threat, undefined);
  const odd = toSchema(makeAlert({ technique: 'not-attack' }));
  assert.equal(odd.threat, undefined);
  assert.equal(odd.vigil.technique, 'not-attack');
  assert.equal(toSchema(makeAlert({ severity: 'critical' })).event.severity, 5);
  assert.equal(toSchema(makeAlert({ severity: 'info' })).event.severity, 1);
});
