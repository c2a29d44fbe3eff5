import assert from 'node:assert/strict';
import { test } from 'node:test';
import { listModuleKobjects, listModules } from './index.js';
import { FakeKernel, MODULE_AREA } from './test-kernel.js';

test('sysfs view: built-ins have no module, loaded modules point back at their kobject', () => {
  const k = new FakeKernel();
  k.addKobject('printk');
  const ring = k.addModule({ name: 'virtio_ring', base: MODULE_AREA });
  k.addKobject('virtio_ring', ring);
  const kobjs = listModuleKobjects(k);
  assert.deepEqual(
    kobjs.map((o) => [o.name, o.builtin, o.module, o.moduleName, o.anomalies]),
    [
      ['printk', true, undefined, undefined, []],
      ['virtio_ring', false, ring, 'virtio_ring', []],
    ],
  );
  assert.equal(kobjs[1]!.address, ring + k.off('module', 'mkobj.kobj'));
  assert.deepEqual(k.issues.items, []);
});

test('a module hidden from the module list is still in the sysfs view', () => {
  const k = new FakeKernel();
  const hidden = k.addModule({ name: 'rootkit' });
  k.addKobject('rootkit', hidden);
  // list_del: the modules head points at itself again.
  k.writeU64(k.at.modules, k.at.modules);
  k.writeU64(k.at.modules + 8n, k.at.modules);
  assert.deepEqual(listModules(k), []);
  assert.deepEqual(
    listModuleKobjects(k).map((o) => o.moduleName),
    ['rootkit'],
  );
});

test('inconsistent kobjects are flagged: wrong ktype, wrong module name, module not pointing back', () => {
  const k = new FakeKernel();
  const a = k.addModule({ name: 'a' });
  const stray = k.addKobject('b', a); // claims module a, but is named b and is not a's mkobj
  void stray;
  const kobjs = listModuleKobjects(k);
  assert.match(kobjs[0]!.anomalies.join(';'), /named "a"/);
  const other = k.addKobject('c');
  k.writeU64(other + k.off('kobject', 'ktype'), 0xffffffff81234560n);
  const again = listModuleKobjects(k);
  assert.match(again.at(-1)!.anomalies.join(), /not module_ktype/);
});

test('a kobject pointing at a standalone fake module is caught by the back-pointer check', () => {
  const k = new FakeKernel();
  const real = k.addModule({ name: 'x' });
  const kobj = k.addKobject('x');
  // The kobject's module_kobject says mod = real, but real->mkobj is a different kobject.
  k.writeU64(kobj - k.off('module_kobject', 'kobj') + k.off('module_kobject', 'mod'), real);
  const [o] = listModuleKobjects(k);
  assert.equal(o!.moduleName, 'x');
  assert.match(o!.anomalies.join(), /another kobject/);
});

test('a kset list loop stops with a cycle issue', () => {
  const k = new FakeKernel();
  const a = k.addKobject('a');
  k.addKobject('b');
  const entryOff = k.off('kobject', 'entry');
  const b = k.readPointer(a + entryOff)!; // a.entry.next = b.entry
  k.writeU64(b, a + entryOff); // b -> a: loop that never returns to the head
  const kobjs = listModuleKobjects(k);
  assert.deepEqual(
    kobjs.map((o) => o.name),
    ['a', 'b'],
  );
  assert.equal(k.issues.items[0]?.kind, 'cycle');
  assert.equal(k.issues.items[0]?.walker, 'module-kobjects');
});

test('a NULL module_kset or unreadable module is an issue, not an exception', () => {
  const k = new FakeKernel();
  const kobj = k.addKobject('gone');
  k.writeU64(kobj - k.off('module_kobject', 'kobj') + k.off('module_kobject', 'mod'), 0xffff888000001000n);
  const [o] = listModuleKobjects(k);
  assert.match(o!.anomalies.join(), /unreadable/);
  k.writeU64(k.at.moduleKset, 0n);
  assert.deepEqual(listModuleKobjects(k), []);
  assert.equal(k.issues.items.at(-1)?.kind, 'malformed');
  k.writeU64(k.at.moduleKset, 0xffff888000000000n);
  assert.deepEqual(listModuleKobjects(k), []);
  assert.equal(k.issues.items.at(-1)?.kind, 'unmapped');
});
