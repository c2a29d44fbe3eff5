import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { VigilError } from '../util/errors.js';
import {
  FileBaselineStore,
  MAX_POLICY_BYTES,
  MemoryBaselineStore,
  StagedBaseline,
  newBaselineDoc,
  parseBaseline,
  serializeBaseline,
  stateRoot,
  vmFileName,
  type KernelIdentity,
} from './baseline.js';

const boot1: KernelIdentity = {
  banner: 'Linux version 6.1.0-28-amd64 (x)',
  kaslrOffset: 0x1c000000n,
  release: '6.1.0-28-amd64',
};
const boot2: KernelIdentity = { ...boot1, kaslrOffset: 0x2e000000n };

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'vigil-baseline-'));
}

test('file round trip: pretty JSON with a header and one top-level key per policy', async () => {
  const dir = await tempDir();
  try {
    const store = new FileBaselineStore(dir);
    const doc = newBaselineDoc('web-1', '2025-01-01T00:00:00.000Z', '9.9.9');
    doc.header.kernel = { release: '6.1.0-28-amd64', banner: boot1.banner, kaslrOffset: '0x1c000000' };
    const b = new StagedBaseline(doc, 'syscall-table', boot1);
    b.set('entries', [1, 2, 3]);
    b.set('hash', 'abc');
    assert.equal(b.commit('2025-01-01T00:00:01.000Z', true), true);
    const m = new StagedBaseline(doc, 'modules', boot1);
    m.set('names', ['virtio_net']);
    m.commit('2025-01-01T00:00:02.000Z', true);
    await store.save('web-1', doc);

    const path = store.pathFor('web-1');
    assert.equal(path, join(dir, 'web-1.json'));
    const text = await readFile(path, 'utf8');
    const json = JSON.parse(text) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json), ['_vigil', 'modules', 'syscall-table'], 'header first, then sorted');
    assert.deepEqual(json._vigil, {
      vigil: '9.9.9',
      vm: 'web-1',
      created: '2025-01-01T00:00:00.000Z',
      updated: '2025-01-01T00:00:00.000Z',
      kernel: { release: '6.1.0-28-amd64', banner: boot1.banner, kaslrOffset: '0x1c000000' },
    });
    assert.match(text, /^\{\n {2}"_vigil": \{\n {4}"vigil": "9\.9\.9",/, 'indented for people');
    assert.ok(text.endsWith('}\n'));
    assert.equal(((await stat(path)).mode & 0o777).toString(8), '600');
    assert.deepEqual(await readdir(dir), ['web-1.json'], 'no temp file left behind');

    const back = await store.load('web-1');
    assert.ok(back);
    assert.equal(serializeBaseline(back), text, 'load and save again gives the same bytes');
    const r = new StagedBaseline(back, 'syscall-table', boot1);
    assert.equal(r.exists, true);
    assert.equal(r.identityChanged, false);
    assert.deepEqual(r.get('entries'), [1, 2, 3]);
    assert.equal(r.learnedAt, '2025-01-01T00:00:01.000Z');
    assert.equal(await store.load('other'), undefined, 'no file: no baseline');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('reset one policy, then everything', async () => {
  const dir = await tempDir();
  try {
    const store = new FileBaselineStore(dir);
    const doc = newBaselineDoc('vm', 't0');
    for (const p of ['a', 'b']) {
      const s = new StagedBaseline(doc, p, undefined);
      s.set('x', p);
      s.commit('t1');
    }
    await store.save('vm', doc);
    assert.equal(await store.reset('vm', 'a'), true);
    assert.deepEqual([...(await store.load('vm'))!.policies.keys()], ['b']);
    assert.equal(await store.reset('vm', 'a'), false, 'nothing left to reset');
    assert.equal(await store.reset('vm'), true);
    assert.equal(await store.load('vm'), undefined);
    assert.equal(await store.reset('vm'), false);

    const mem = new MemoryBaselineStore();
    await mem.save('vm', doc);
    assert.equal(await mem.reset('vm', 'b'), true);
    assert.deepEqual([...(await mem.load('vm'))!.policies.keys()], ['a']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a broken baseline file is a malformed error, not a crash', async () => {
  const dir = await tempDir();
  try {
    const store = new FileBaselineStore(dir);
    await writeFile(store.pathFor('vm'), '{"_vigil": ');
    await assert.rejects(store.load('vm'), (e: unknown) => e instanceof VigilError && e.kind === 'malformed');
    await writeFile(
      store.pathFor('vm'),
      JSON.stringify({ _vigil: { vm: 'vm', created: 'x' }, p: { values: 3 } }),
    );
    await assert.rejects(store.load('vm'), /section "p"/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('identity: a new KASLR slide reads as changed; clear and acceptIdentity adopt the new one', () => {
  const doc = newBaselineDoc('vm', 't0');
  const first = new StagedBaseline(doc, 'p', boot1);
  assert.equal(first.exists, false);
  first.set('addr', '0xffffffff9c000000');
  first.commit('t1', true);
  assert.equal(doc.policies.get('p')!.identity!.kaslrOffset, '0x1c000000');

  assert.equal(new StagedBaseline(doc, 'p', boot1).identityChanged, false);
  const rebooted = new StagedBaseline(doc, 'p', boot2);
  assert.equal(rebooted.identityChanged, true);
  assert.equal(rebooted.get('addr'), '0xffffffff9c000000', 'old values stay readable until replaced');
  rebooted.acceptIdentity();
  assert.equal(rebooted.identityChanged, false);
  rebooted.commit('t2');
  assert.equal(new StagedBaseline(doc, 'p', boot2).identityChanged, false);
  assert.equal(new StagedBaseline(doc, 'p', boot2).get('addr'), '0xffffffff9c000000');

  const again = new StagedBaseline(doc, 'p', boot1);
  assert.equal(again.identityChanged, true);
  again.clear();
  assert.equal(again.get('addr'), undefined);
  assert.deepEqual(again.keys(), []);
  again.commit('t3');
  assert.deepEqual(doc.policies.get('p')!.values, {});
  assert.equal(doc.policies.get('p')!.learned, 't3', 'a cleared baseline is learned anew');
  // A different banner at the same slide is a different kernel too.
  assert.equal(
    new StagedBaseline(doc, 'p', { ...boot1, banner: 'Linux version 6.1.0-29-amd64' }).identityChanged,
    true,
  );
  // Without a current identity nothing can be compared.
  assert.equal(new StagedBaseline(doc, 'p', undefined).identityChanged, false);
});

test('staged writes are invisible until commit and stored values cannot be mutated', () => {
  const doc = newBaselineDoc('vm', 't0');
  const s = new StagedBaseline(doc, 'p', undefined);
  const value = { names: ['a', 'b'] };
  s.set('v', value);
  value.names.push('c');
  assert.deepEqual(s.get('v'), { names: ['a', 'b'] }, 'set copies');
  assert.equal(doc.policies.has('p'), false, 'nothing stored before commit');
  s.commit('t1');
  const stored = new StagedBaseline(doc, 'p', undefined).get<{ names: string[] }>('v')!;
  assert.throws(() => stored.names.push('x'), TypeError);

  const s2 = new StagedBaseline(doc, 'p', undefined);
  s2.delete('v');
  s2.set('w', 1);
  assert.deepEqual(s2.keys(), ['w']);
  assert.deepEqual(new StagedBaseline(doc, 'p', undefined).keys(), ['v'], 'not committed: unchanged');
  assert.equal(
    new StagedBaseline(doc, 'p', undefined).commit('t2'),
    false,
    'an untouched run commits nothing',
  );
});

test('baseline size and value checks', () => {
  const doc = newBaselineDoc('vm', 't0');
  const s = new StagedBaseline(doc, 'p', undefined);
  assert.throws(
    () => s.set('big', 'x'.repeat(MAX_POLICY_BYTES)),
    (e: unknown) => e instanceof VigilError && e.kind === 'bound',
  );
  const half = 'x'.repeat(MAX_POLICY_BYTES / 2);
  s.set('h1', half);
  assert.throws(() => s.set('h2', half), /would exceed/);
  s.set('h1', 'small');
  s.set('h2', half);
  assert.throws(
    () => s.set('n', 10n as never),
    (e: unknown) => e instanceof VigilError && e.kind === 'malformed',
  );
  assert.throws(() => s.set('', 1), /key/);
  assert.throws(() => s.set('u', undefined as never), /not JSON/);
});

test('file names for VM names, and the state root', () => {
  assert.equal(vmFileName('web-1.prod'), 'web-1.prod');
  assert.equal(vmFileName('../etc/passwd'), '%2E%2E%2Fetc%2Fpasswd');
  assert.equal(vmFileName('a b'), 'a%20b');
  assert.notEqual(vmFileName('a/b'), vmFileName('a_b'));
  assert.throws(() => vmFileName(''), VigilError);
  const saved = process.env.VIGIL_STATE;
  try {
    process.env.VIGIL_STATE = '/tmp/vigil-state-x';
    assert.equal(stateRoot(), '/tmp/vigil-state-x');
    assert.equal(new FileBaselineStore().pathFor('vm'), '/tmp/vigil-state-x/baselines/vm.json');
    delete process.env.VIGIL_STATE;
    assert.match(stateRoot(), /\/vigil$/);
  } finally {
    if (saved === undefined) delete process.env.VIGIL_STATE;
    else process.env.VIGIL_STATE = saved;
  }
});

test('parseBaseline rejects a bad kaslrOffset', () => {
  const text = JSON.stringify({
    _vigil: { vm: 'v', created: 't' },
    p: { learned: 't', values: {}, identity: { banner: 'b', kaslrOffset: 'zz' } },
  });
  assert.throws(() => parseBaseline(text, 'x'), /kaslrOffset/);
});
