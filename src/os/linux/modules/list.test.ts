import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VigilError } from '../../../util/errors.js';
import { listModules, MAX_MODULE_REGION, moduleAt } from './index.js';
import { FakeKernel, MOD_STATE, MODULE_AREA } from './test-kernel.js';

const onlyVigil = (fn: () => unknown) => {
  try {
    return fn();
  } catch (e) {
    assert.ok(e instanceof VigilError, `threw a non-VigilError: ${String(e)}`);
    return e;
  }
};

for (const layout of ['layout', 'mem'] as const) {
  describe(`module list (${layout === 'layout' ? '6.1 core_layout' : '6.4 mem[]'})`, () => {
    test('lists modules newest first with name, state, base, size, refcount, taints and users', () => {
      const k = new FakeKernel({ layout });
      const ring = k.addModule({ name: 'virtio_ring', base: MODULE_AREA, size: 0xc000n, refcnt: 4 });
      const net = k.addModule({
        name: 'virtio_net',
        base: MODULE_AREA + 0x10000n,
        size: 0x12000n,
        initBase: MODULE_AREA + 0x40000n,
        initSize: 0x2000n,
        taints: (1n << 12n) | (1n << 13n) | (1n << 9n),
        state: MOD_STATE.COMING,
      });
      k.addUse(ring, net);
      const mods = listModules(k);
      assert.deepEqual(
        mods.map((m) => [m.name, m.state, m.base, m.size, m.refcount, m.taintFlags, m.usedBy]),
        [
          ['virtio_net', 'MODULE_STATE_COMING', MODULE_AREA + 0x10000n, 0x14000n, 0, 'OE', []],
          ['virtio_ring', 'MODULE_STATE_LIVE', MODULE_AREA, 0xc000n, 3, '', ['virtio_net']],
        ],
      );
      assert.equal(mods[0]!.address, net);
      assert.equal(mods[0]!.taints, (1n << 12n) | (1n << 13n) | (1n << 9n));
      assert.equal(mods[0]!.regions.length, 2);
      assert.deepEqual(k.issues.items, []);

      assert.equal(moduleAt(k, MODULE_AREA + 0x10010n)?.module.name, 'virtio_net');
      assert.equal(moduleAt(k, MODULE_AREA + 0x10010n)?.offset, 0x10n);
      assert.equal(moduleAt(k, MODULE_AREA + 0x41000n)?.module.name, 'virtio_net'); // init text
      assert.equal(moduleAt(k, MODULE_AREA + 0xbfffn)?.module.name, 'virtio_ring');
      assert.equal(moduleAt(k, MODULE_AREA + 0xc000n), undefined);
      assert.equal(moduleAt(k, 0xffffffff81001000n), undefined);
    });
  });
}

describe('module list on hostile memory', () => {
  test('a cycle stops the walk and is recorded', () => {
    const k = new FakeKernel();
    const a = k.addModule({ name: 'a' });
    const b = k.addModule({ name: 'b' });
    // b -> a -> b: a's next points back to b instead of the head.
    k.writeU64(a + k.off('module', 'list'), b + k.off('module', 'list'));
    const mods = onlyVigil(() => listModules(k)) as ReturnType<typeof listModules>;
    assert.deepEqual(
      mods.map((m) => m.name),
      ['b', 'a'],
    );
    assert.equal(k.issues.items[0]?.kind, 'cycle');
    assert.equal(k.issues.items[0]?.walker, 'modules');
  });

  test('a self-loop on one entry is a cycle, not a hang', () => {
    const k = new FakeKernel();
    const a = k.addModule({ name: 'a' });
    k.writeU64(a + k.off('module', 'list'), a + k.off('module', 'list'));
    assert.deepEqual(
      listModules(k).map((m) => m.name),
      ['a'],
    );
    assert.equal(k.issues.items[0]?.kind, 'cycle');
  });

  test('a list longer than the bound stops at the bound', () => {
    const k = new FakeKernel();
    for (let i = 0; i < 20; i++) k.addModule({ name: `m${i}` });
    assert.equal(listModules(k, { max: 5 }).length, 5);
    assert.equal(k.issues.items[0]?.kind, 'bound');
  });

  test('a next pointer into unmapped memory ends the walk with an issue', () => {
    const k = new FakeKernel();
    const a = k.addModule({ name: 'a' });
    k.addModule({ name: 'b' });
    k.writeU64(a + k.off('module', 'list'), 0xffff888000000000n);
    const mods = listModules(k);
    assert.deepEqual(
      mods.map((m) => m.name),
      ['b', 'a'],
    );
    assert.ok(k.issues.items.some((i) => i.kind === 'unmapped'));
  });

  test('a NULL next pointer is malformed', () => {
    const k = new FakeKernel();
    const a = k.addModule({ name: 'a' });
    k.writeU64(a + k.off('module', 'list'), 0n);
    assert.equal(listModules(k).length, 1);
    assert.equal(k.issues.items[0]?.kind, 'malformed');
  });

  test('a size of 2^60 is reported but not used to claim addresses', () => {
    const k = new FakeKernel({ sizeBytes: 8 });
    k.addModule({ name: 'huge', base: MODULE_AREA, size: 1n << 60n });
    k.addModule({ name: 'ok', base: MODULE_AREA + 0x100000n, size: 0x1000n });
    const mods = listModules(k);
    const huge = mods.find((m) => m.name === 'huge')!;
    assert.equal(huge.size, 1n << 60n);
    assert.deepEqual(huge.regions, []);
    assert.match(huge.anomalies.join(), /implausible/);
    assert.ok(1n << 60n > MAX_MODULE_REGION);
    // The address space beyond 'ok' is not attributed to 'huge'.
    assert.equal(moduleAt(k, MODULE_AREA + 0x10n, mods), undefined);
    assert.equal(moduleAt(k, MODULE_AREA + 0x100010n, mods)?.module.name, 'ok');
  });

  test('a region that wraps the address space or sits in user space is not a region', () => {
    const k = new FakeKernel();
    k.addModule({ name: 'wrap', base: 0xfffffffffffff000n, size: 0x10000n });
    k.addModule({ name: 'user', base: 0x400000n, size: 0x1000n });
    const mods = listModules(k);
    for (const m of mods) {
      assert.deepEqual(m.regions, [], m.name);
      assert.match(m.anomalies.join(), /not a kernel address range/);
    }
  });

  test('a name without NUL is cut at the array, sanitised and flagged', () => {
    const k = new FakeKernel();
    const name = Buffer.alloc(56, 0x41);
    name[3] = 0x1b; // ESC: must not reach a terminal raw
    k.addModule({ name });
    const [m] = listModules(k);
    assert.equal(m!.name.length, 55 + '\\x1b'.length);
    assert.ok(!m!.name.includes('\x1b'));
    assert.match(m!.anomalies.join(), /not NUL-terminated/);
  });

  test('an unknown state value is shown as a number', () => {
    const k = new FakeKernel();
    k.addModule({ name: 'odd', state: 77 });
    assert.equal(listModules(k)[0]!.state, 'unknown(77)');
  });

  test('a cycle in a module users list is bounded too', () => {
    const k = new FakeKernel();
    const used = k.addModule({ name: 'used' });
    const user = k.addModule({ name: 'user' });
    k.addUse(used, user);
    const head = used + k.off('module', 'source_list');
    const use = k.readPointer(head)!;
    k.writeU64(use, use); // the use entry loops on itself
    const mods = listModules(k);
    assert.deepEqual(mods.find((m) => m.name === 'used')!.usedBy, ['user']);
    assert.ok(k.issues.items.some((i) => i.walker === 'modules.usedBy' && i.kind === 'cycle'));
  });

  test('a struct module that runs off mapped memory is skipped with an issue', () => {
    const k = new FakeKernel();
    const a = k.addModule({ name: 'a' });
    // The list_head is readable (last 16 bytes of the module area), the struct around it is not.
    k.writeU64(a + k.off('module', 'list'), MODULE_AREA + 0x200000n - 0x10n);
    const mods = onlyVigil(() => listModules(k)) as ReturnType<typeof listModules>;
    assert.deepEqual(
      mods.map((m) => m.name),
      ['a'],
    );
    assert.ok(k.issues.items.some((i) => i.kind === 'unmapped' && /module at/.test(i.detail)));
  });
});
