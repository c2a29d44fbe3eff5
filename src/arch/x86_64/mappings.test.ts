import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { VigilError } from '../../util/errors.js';
import type { PagingMode } from '../types.js';
import { Epoch } from '../epoch.js';
import { PageTableAddressSpace } from './address-space.js';
import { PagingCache } from './cache.js';
import { coalesceMappings, type Mapping } from './mappings.js';
import { PTE } from './paging.js';
import { BufferPhysicalMemory, PageTableBuilder } from './test-memory.js';

const MiB = 1024 * 1024;

function setup(mode: PagingMode) {
  const memory = new BufferPhysicalMemory(16 * MiB);
  const builder = new PageTableBuilder(memory, mode, 8n * BigInt(MiB));
  const space = new PageTableAddressSpace(memory, builder.root, mode, new PagingCache(new Epoch()));
  return { memory, builder, space };
}

const brief = (m: Mapping) => [m.va, m.paddr, m.size, m.writable, m.user, m.nx, m.level];

for (const mode of [4, 5] as const) {
  const direct = mode === 4 ? 0xffff_8880_0000_0000n : 0xff11_0000_0000_0000n;
  describe(`walkMappings, ${mode}-level`, () => {
    test('enumerates present leaves in VA order with their sizes and permissions', () => {
      const { builder, space } = setup(mode);
      // Mapped out of order on purpose; the walk must sort by VA (lower half before upper half).
      builder.map(0xffff_ffff_8100_1000n, 0x20_1000n, 0x1000n, { writable: false });
      builder.map(0xffff_ffff_8100_0000n, 0x20_0000n, 0x1000n, { writable: false });
      builder.map(direct, 0n, 0x4000_0000n, { nx: true });
      builder.map(0x40_0000n, 0x3000n, 0x1000n, { user: true, nx: true });
      builder.map(0xffff_ffff_a000_0000n, 0x60_0000n, 0x20_0000n, { nx: true });
      const got = [...space.walkMappings()].map(brief);
      assert.deepEqual(got, [
        [0x40_0000n, 0x3000n, 0x1000n, true, true, true, 'PT'],
        [direct, 0n, 0x4000_0000n, true, false, true, 'PDPT'],
        [0xffff_ffff_8100_0000n, 0x20_0000n, 0x1000n, false, false, false, 'PT'],
        [0xffff_ffff_8100_1000n, 0x20_1000n, 0x1000n, false, false, false, 'PT'],
        [0xffff_ffff_a000_0000n, 0x60_0000n, 0x20_0000n, true, false, true, 'PD'],
      ]);
    });

    test('restricts to a range, including ranges that start inside a large page', () => {
      const { builder, space } = setup(mode);
      builder.map(0xffff_ffff_8100_0000n, 0x20_0000n, 0x1000n);
      builder.map(0xffff_ffff_8100_1000n, 0x20_1000n, 0x1000n);
      builder.map(0xffff_ffff_8100_2000n, 0x20_2000n, 0x1000n);
      builder.map(0xffff_ffff_a000_0000n, 0x60_0000n, 0x20_0000n);
      const vas = (start: bigint, end: bigint) => [...space.walkMappings({ start, end })].map((m) => m.va);
      assert.deepEqual(vas(0xffff_ffff_8100_1000n, 0xffff_ffff_8100_2000n), [0xffff_ffff_8100_1000n]);
      assert.deepEqual(vas(0xffff_ffff_8100_1fffn, 0xffff_ffff_a000_0001n), [
        0xffff_ffff_8100_1000n,
        0xffff_ffff_8100_2000n,
        0xffff_ffff_a000_0000n,
      ]);
      assert.deepEqual(vas(0xffff_ffff_a010_0000n, 1n << 64n), [0xffff_ffff_a000_0000n]);
      assert.deepEqual(vas(0n, 0xffff_ffff_8100_0000n), []);
      // A range that lies entirely in the non-canonical hole has nothing in it.
      assert.deepEqual(vas(0x0100_0000_0000_0000n, 0x0200_0000_0000_0000n), []);
    });

    test('coalesceMappings merges virtually contiguous pages with equal permissions', () => {
      const { builder, space } = setup(mode);
      builder.mapRange(0xffff_ffff_c000_0000n, 0x30_0000n, 0x3000n, { writable: false });
      builder.map(0xffff_ffff_c000_3000n, 0x50_0000n, 0x1000n, { writable: false });
      builder.map(0xffff_ffff_c000_4000n, 0x50_1000n, 0x1000n, { nx: true });
      builder.map(0xffff_ffff_c000_6000n, 0x50_2000n, 0x1000n, { nx: true });
      const regions = [...coalesceMappings(space.walkMappings())];
      assert.deepEqual(
        regions.map((r) => [r.start, r.end, r.pages, r.writable, r.nx, r.physContiguous, r.paddr]),
        [
          [0xffff_ffff_c000_0000n, 0xffff_ffff_c000_4000n, 4, false, false, false, 0x30_0000n],
          [0xffff_ffff_c000_4000n, 0xffff_ffff_c000_5000n, 1, true, true, true, 0x50_1000n],
          [0xffff_ffff_c000_6000n, 0xffff_ffff_c000_7000n, 1, true, true, true, 0x50_2000n],
        ],
      );
    });
  });
}

describe('hostile page tables', () => {
  test('a self-referencing PML4 entry maps the tables themselves and the walk stays bounded', () => {
    const { memory, builder, space } = setup(4);
    builder.map(0xffff_ffff_8100_0000n, 0x20_0000n, 0x1000n);
    // Windows-style recursive slot: PML4[0x1ed] -> the PML4 itself.
    memory.writeU64(builder.root + 0x1edn * 8n, builder.root | PTE.present | PTE.writable);
    const slot = 0x1edn;
    const selfVa = 0xffff_0000_0000_0000n | (slot << 39n) | (slot << 30n) | (slot << 21n) | (slot << 12n);
    assert.equal(space.translate(selfVa), builder.root, 'the recursive address maps the PML4 page');

    const all = [...space.walkMappings()];
    assert.ok(all.some((m) => m.va === selfVa && m.paddr === builder.root));
    assert.ok(all.some((m) => m.va === 0xffff_ffff_8100_0000n && m.paddr === 0x20_0000n));
    for (let i = 1; i < all.length; i++) assert.ok(all[i]!.va > all[i - 1]!.va, 'strictly ascending VAs');
  });

  test('a PML4 whose every entry points at itself hits the bound instead of hanging', () => {
    const { memory, builder, space } = setup(4);
    for (let i = 0n; i < 512n; i++) memory.writeU64(builder.root + i * 8n, builder.root | PTE.present);
    // 512^4 apparent 4 KiB pages.
    const started = Date.now();
    let seen = 0;
    assert.throws(
      () => {
        for (const _ of space.walkMappings(undefined, { maxEntries: 50_000 })) seen++;
      },
      (e: unknown) => e instanceof VigilError && e.kind === 'bound' && /after 50000 mappings/.test(e.message),
    );
    assert.equal(seen, 50_000);
    assert.throws(
      () => {
        for (const _ of space.walkMappings(undefined, { maxTables: 100 })) seen++;
      },
      (e: unknown) => e instanceof VigilError && e.kind === 'bound' && /after 100 tables/.test(e.message),
    );
    assert.ok(Date.now() - started < 5000);
  });

  test('a root outside RAM is an error, a lower table outside RAM maps nothing', () => {
    const { memory, builder, space } = setup(4);
    builder.map(0xffff_ffff_8100_0000n, 0x20_0000n, 0x1000n);
    builder.map(0x40_0000n, 0x3000n, 0x1000n);
    builder.setEntry(0x40_0000n, 'PD', PTE.present | 0x7_0000_0000n);
    assert.deepEqual(
      [...space.walkMappings()].map((m) => m.va),
      [0xffff_ffff_8100_0000n],
    );
    const lost = new PageTableAddressSpace(memory, 0x7_0000_0000n, 4, space.cache);
    assert.throws(
      () => [...lost.walkMappings()],
      (e: unknown) =>
        e instanceof VigilError && e.kind === 'unmapped' && /root at PA 0x700000000/.test(e.message),
    );
  });
});
