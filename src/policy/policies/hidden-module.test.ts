import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Kernel } from '../../os/linux/kernel.js';
import type { SweepContext } from '../policy.js';
import type { Finding } from '../types.js';
import {
  carveModules,
  crossViewModules,
  hiddenModuleFindings,
  hiddenModulePolicy,
  modTreeModules,
  moduleArea,
} from './hidden-module.js';
import { IntegrityTestKernel, MODULE_AREA, MODULE_AREA_SIZE } from './kernel-testkit.js';

const hex = (v: bigint) => '0x' + v.toString(16);
const area = { start: MODULE_AREA, end: MODULE_AREA + MODULE_AREA_SIZE };

function withModules(): IntegrityTestKernel {
  const k = new IntegrityTestKernel();
  k.addModule({ name: 'virtio_ring', base: MODULE_AREA, size: 0x4000n });
  k.addModule({ name: 'virtio_net', base: MODULE_AREA + 0x10000n, size: 0x12000n, structAt: 0xf780n });
  return k;
}

function poll(k: IntegrityTestKernel): { findings: Finding[]; notes: string[] } {
  k.refresh();
  const notes: string[] = [];
  const kernel = k as unknown as Kernel;
  const ctx = {
    requireKernel: () => kernel,
    note: (kind: string, detail: string) => void notes.push(`${kind}: ${detail}`),
  } as unknown as SweepContext<Kernel>;
  return { findings: hiddenModulePolicy.poll!(ctx) as Finding[], notes };
}

describe('hidden-module', () => {
  test('the module area follows the KASLR layout', () => {
    const k = new IntegrityTestKernel(); // _end below 0xffffffffa0000000: no KASLR-size image
    assert.deepEqual(moduleArea(k), { start: 0xffffffffa0000000n, end: 0xffffffffff000000n });
  });

  test('clean: four views agree, nothing to report', () => {
    const k = withModules();
    const cv = crossViewModules(k);
    assert.deepEqual(cv.available, ['list', 'sysfs', 'modTree', 'memory']);
    assert.deepEqual(cv.sightings.map((s) => [s.name, s.views]).sort(), [
      ['virtio_net', { list: true, sysfs: true, modTree: true, memory: true }],
      ['virtio_ring', { list: true, sysfs: true, modTree: true, memory: true }],
    ]);
    assert.deepEqual(poll(k), { findings: [], notes: [] });
  });

  test('a module off the list and out of sysfs is found in mod_tree and by carving', () => {
    const k = withModules();
    const m = k.addModule({
      name: 'vk_hidemod',
      base: MODULE_AREA + 0x40000n,
      size: 0x4000n,
      structAt: 0x2280n,
      taints: (1n << 12n) | (1n << 13n),
      list: false,
      sysfs: false,
    });
    const { findings, notes } = poll(k);
    assert.deepEqual(notes, []);
    assert.equal(findings.length, 1);
    const f = findings[0]!;
    assert.equal(f.key, `hidden:vk_hidemod:${hex(m)}`);
    assert.equal(f.severity, 'critical');
    assert.equal(f.technique, 'T1014');
    assert.equal(
      f.summary,
      `module vk_hidemod is hidden: in memory at ${hex(MODULE_AREA + 0x40000n)} (size 0x4000), not on the module list (seen in mod_tree, module memory)`,
    );
    assert.deepEqual(f.evidence, {
      module: 'vk_hidemod',
      address: hex(m),
      state: 'MODULE_STATE_LIVE',
      base: hex(MODULE_AREA + 0x40000n),
      size: '0x4000',
      regions: [{ kind: 'core', base: hex(MODULE_AREA + 0x40000n), size: '0x4000' }],
      taints: 'OE',
      views: { list: false, sysfs: false, modTree: true, memory: true },
    });
  });

  test('carving alone finds a module also removed from mod_tree', () => {
    const k = withModules();
    k.addModule({
      name: 'ghost',
      base: MODULE_AREA + 0x80000n,
      size: 0x2000n,
      list: false,
      sysfs: false,
      modTree: false,
    });
    const f = poll(k).findings;
    assert.deepEqual(
      f.map((x) => [x.evidence.module, x.evidence.views]),
      [['ghost', { list: false, sysfs: false, modTree: false, memory: true }]],
    );
  });

  test('a module being freed (UNFORMED, in no other view) is not reported', () => {
    const k = withModules();
    k.addModule({
      name: 'leaving',
      base: MODULE_AREA + 0x80000n,
      size: 0x2000n,
      state: 3,
      list: false,
      sysfs: false,
      modTree: false,
    });
    assert.deepEqual(poll(k).findings, []);
  });

  test('a live module missing from sysfs (kobject_del only) is partly unlinked', () => {
    const k = withModules();
    k.addModule({ name: 'half', base: MODULE_AREA + 0x80000n, size: 0x2000n, sysfs: false });
    const f = poll(k).findings;
    assert.deepEqual(
      f.map((x) => [x.key, x.severity]),
      [['unlinked:half:sysfs', 'high']],
    );
    assert.match(f[0]!.summary, /module half is on the module list but missing from \/sys\/module/);
  });

  test('carving rejects look-alikes: bad name, outside its own memory, no back-pointer, bad state', () => {
    const k = withModules();
    const base = MODULE_AREA + 0x80000n;
    const good = k.addModule({
      name: 'decoy',
      base,
      size: 0x3000n,
      list: false,
      sysfs: false,
      modTree: false,
    });
    const struct = k.read(good, k.types.sizeof('module'));
    const plant = (at: bigint, edit: (b: Buffer) => void) => {
      const b = Buffer.from(struct);
      b.writeBigUInt64LE(at, Number(k.off('module', 'mkobj.mod')));
      b.writeBigUInt64LE(at, Number(k.off('module', 'core_layout.mtn.mod')));
      edit(b);
      k.write(at, b);
    };
    k.write(good + k.off('module', 'name'), Buffer.from('de coy\0')); // the real one now has a bad name
    plant(base + 0x1400n, (b) => b.writeUInt32LE(7, Number(k.off('module', 'state'))));
    plant(base + 0x1800n, (b) =>
      b.writeBigUInt64LE(MODULE_AREA + 0xf0000n, Number(k.off('module', 'core_layout.base'))),
    );
    plant(base + 0x1c00n, (b) => {
      b.writeBigUInt64LE(0n, Number(k.off('module', 'mkobj.mod')));
      b.writeBigUInt64LE(0n, Number(k.off('module', 'core_layout.mtn.mod')));
    });
    plant(base + 0x2000n, (b) => b.writeBigUInt64LE(0x1234n, Number(k.off('module', 'list'))));
    k.refresh();
    assert.deepEqual(
      carveModules(k, area)
        .map((c) => c.name)
        .sort(),
      ['virtio_net', 'virtio_ring'],
    );
  });

  test('hostile mod_tree and a huge module area are bounded, with issues', () => {
    const k = withModules();
    // In both copies of the latch tree, the first node points right at itself.
    for (const copy of [0n, 8n]) {
      const root = k.readPointer(k.at.modTree + k.off('mod_tree_root', 'root.tree') + copy)!;
      k.writeU64(root + k.off('rb_node', 'rb_right'), root);
    }
    k.refresh();
    assert.equal(modTreeModules(k)!.size, 1);
    assert.ok(k.issues.items.some((i) => i.walker === 'mod_tree' && i.kind === 'cycle'));
    k.refresh();
    const carved = carveModules(k, area, { maxBytes: 0x8000 });
    assert.deepEqual(
      carved.map((c) => c.name),
      ['virtio_ring'],
    );
    assert.ok(k.issues.items.some((i) => i.walker === 'module-carving' && i.kind === 'bound'));
    const { notes } = poll(k);
    assert.ok(notes.some((n) => n.startsWith('cycle: mod_tree')));
  });

  test('hiddenModuleFindings on a cross view without mod_tree', () => {
    const f = hiddenModuleFindings({
      available: ['list', 'sysfs', 'memory'],
      sightings: [
        { address: 0x10n, name: 'a', views: { list: true, sysfs: true, modTree: false, memory: true } },
        { address: 0x20n, name: 'b', views: { list: false, sysfs: true, modTree: false, memory: false } },
      ],
    });
    assert.deepEqual(
      f.map((x) => x.key),
      ['hidden:b:0x20'],
    );
    assert.match(f[0]!.summary, /\(struct module at 0x20\).*seen in \/sys\/module/);
  });
});
