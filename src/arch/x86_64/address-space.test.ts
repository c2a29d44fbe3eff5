import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { VigilError } from '../../util/errors.js';
import type { PagingMode } from '../types.js';
import { Epoch } from '../epoch.js';
import { MAX_READ_LENGTH, PageTableAddressSpace } from './address-space.js';
import { PagingCache } from './cache.js';
import { PTE, type LevelName } from './paging.js';
import { BufferPhysicalMemory, PageTableBuilder } from './test-memory.js';

const MiB = 1024 * 1024;
const KERNEL_4 = 0xffff_ffff_8100_0000n; // typical kernel text, 4-level
const KERNEL_5 = 0xff11_0000_0100_0000n; // a 5-level direct-map address

/** 16 MiB of RAM, tables from 8 MiB up, data pages below. */
function setup(mode: PagingMode, opts: { epoch?: Epoch; tlbEntries?: number; tablePages?: number } = {}) {
  const memory = new BufferPhysicalMemory(16 * MiB);
  const builder = new PageTableBuilder(memory, mode, 8n * BigInt(MiB));
  const epoch = opts.epoch ?? new Epoch();
  const cache = new PagingCache(epoch, { tlbEntries: opts.tlbEntries, tablePages: opts.tablePages });
  const space = new PageTableAddressSpace(memory, builder.root, mode, cache);
  return { memory, builder, epoch, cache, space };
}

/** Fill a physical page with a recognisable pattern. */
function stamp(memory: BufferPhysicalMemory, pa: bigint, tag: number, length = 0x1000): Buffer {
  const data = Buffer.alloc(length);
  for (let i = 0; i < length; i++) data[i] = (tag * 31 + i) & 0xff;
  memory.write(pa, data);
  return data;
}

function unmapped(re: RegExp) {
  return (e: unknown) =>
    e instanceof VigilError && e.origin === 'arch' && e.kind === 'unmapped' && re.test(e.message);
}

for (const mode of [4, 5] as const) {
  const base = mode === 4 ? KERNEL_4 : KERNEL_5;
  describe(`${mode}-level paging`, () => {
    test('4 KiB page: translate and read', () => {
      const { memory, builder, space } = setup(mode);
      builder.map(base, 0x3000n, 0x1000n);
      const data = stamp(memory, 0x3000n, 1);
      assert.equal(space.translate(base), 0x3000n);
      assert.equal(space.translate(base + 0xabcn), 0x3abcn);
      assert.deepEqual(space.read(base, 0x1000), data);
      assert.deepEqual(space.read(base + 0x10n, 5), data.subarray(0x10, 0x15));
      const t = space.translateDetailed(base + 0x10n);
      assert.deepEqual(t, { paddr: 0x3010n, pageSize: 0x1000n, writable: true, user: false, nx: false });
    });

    test('2 MiB page: offset inside the page, PAT bit 12 is not address', () => {
      const { memory, builder, space } = setup(mode);
      const va = base + 0x4000_0000n; // 2 MiB aligned
      builder.map(va, 0x40_0000n, 0x20_0000n);
      const addr = builder.entryAddress(va, 'PD');
      memory.writeU64(addr, memory.readU64(addr) | (1n << 12n)); // PAT for a large page
      stamp(memory, 0x5a_b000n, 2);
      assert.equal(space.translate(va + 0x1a_bcden), 0x5a_bcden);
      const t = space.translateDetailed(va + 0x1a_bcden);
      assert.equal(t.pageSize, 0x20_0000n);
      assert.equal(space.readU32(va + 0x1a_b000n), memory.bytes.readUInt32LE(0x5a_b000));
    });

    test('1 GiB page: offset inside the page', () => {
      const { memory, builder, space } = setup(mode);
      const va = mode === 4 ? 0xffff_8880_0000_0000n : 0xff11_0000_0000_0000n;
      builder.map(va, 0n, 0x4000_0000n);
      const data = stamp(memory, 0x12_3000n, 3);
      assert.equal(space.translate(va + 0x12_3456n), 0x12_3456n);
      assert.equal(space.translateDetailed(va).pageSize, 0x4000_0000n);
      assert.deepEqual(space.read(va + 0x12_3000n, 0x1000), data);
      // Mapped, but past the end of the 16 MiB of RAM.
      assert.equal(space.translate(va + 0x100_0000n), 0x100_0000n);
      assert.throws(
        () => space.read(va + 0x100_0000n, 8),
        unmapped(/maps to PA 0x1000000, which is outside guest RAM/),
      );
    });

    test('NX, protection-key and ignored bits are masked out of the frame', () => {
      const { memory, builder, space } = setup(mode);
      builder.map(base, 0x7000n, 0x1000n, { nx: true });
      const addr = builder.entryAddress(base, 'PT');
      const high = (0xfn << 59n) | (0x7fn << 52n); // protection key 15, all ignored bits
      memory.writeU64(addr, memory.readU64(addr) | high);
      assert.equal(space.translate(base + 8n), 0x7008n);
      assert.equal(space.translateDetailed(base).nx, true);
    });

    test('a physical address up to bit 51 survives (MAXPHYADDR 52)', () => {
      const { builder, space } = setup(mode);
      builder.map(base, 0xf_ffff_ffff_f000n, 0x1000n);
      assert.equal(space.translate(base + 0xfffn), 0xf_ffff_ffff_ffffn);
      assert.throws(() => space.read(base, 1), unmapped(/outside guest RAM/));
    });

    test('a non-present entry at each level is named in the error', () => {
      const names: LevelName[] =
        mode === 5 ? ['PML5', 'PML4', 'PDPT', 'PD', 'PT'] : ['PML4', 'PDPT', 'PD', 'PT'];
      for (const level of names) {
        const { builder, space } = setup(mode);
        builder.map(base, 0x3000n, 0x1000n);
        assert.equal(space.translate(base), 0x3000n);
        builder.setEntry(base, level, builder.entry(base, level) & ~PTE.present);
        space.cache.clear();
        assert.equal(space.translate(base), undefined, level);
        assert.equal(space.tryRead(base, 4), undefined, level);
        assert.throws(
          () => space.translateDetailed(base + 0x10n),
          unmapped(new RegExp(`^VA 0x${(base + 0x10n).toString(16)} not mapped: ${level} entry not present`)),
        );
        assert.throws(() => space.readU64(base), unmapped(new RegExp(`: ${level} entry not present`)));
      }
    });

    test('PS at the top levels is reserved', () => {
      const top: LevelName[] = mode === 5 ? ['PML5', 'PML4'] : ['PML4'];
      for (const level of top) {
        const { builder, space } = setup(mode);
        builder.map(base, 0x3000n, 0x1000n);
        builder.setEntry(base, level, builder.entry(base, level) | PTE.ps);
        assert.equal(space.translate(base), undefined);
        assert.throws(
          () => space.translateDetailed(base),
          unmapped(new RegExp(`${level} entry .* reserved PS bit`)),
        );
      }
    });

    test('a table pointer outside RAM is reported, not read', () => {
      const { builder, space } = setup(mode);
      builder.map(base, 0x3000n, 0x1000n);
      builder.setEntry(base, 'PD', PTE.present | PTE.writable | 0x40_0000_0000n);
      assert.throws(
        () => space.translateDetailed(base),
        unmapped(/PT table at PA 0x4000000000 is outside guest RAM/),
      );
    });

    test('effective permissions: W and U are ANDed over levels, NX is ORed', () => {
      const { builder, space } = setup(mode);
      builder.map(base, 0x3000n, 0x1000n, { writable: true, user: true, nx: false });
      let t = space.translateDetailed(base);
      assert.deepEqual([t.writable, t.user, t.nx], [true, true, false]);

      builder.setEntry(base, 'PD', builder.entry(base, 'PD') & ~PTE.writable);
      builder.setEntry(base, 'PML4', builder.entry(base, 'PML4') & ~PTE.user);
      builder.setEntry(base, 'PDPT', builder.entry(base, 'PDPT') | PTE.nx);
      space.cache.clear();
      t = space.translateDetailed(base);
      assert.deepEqual([t.writable, t.user, t.nx], [false, false, true]);
    });

    test('non-canonical addresses are rejected clearly', () => {
      const { space } = setup(mode);
      const bad = mode === 4 ? 0x0000_8000_0000_0000n : 0x0100_0000_0000_0000n;
      const bit = mode === 4 ? 47 : 56;
      assert.equal(space.translate(bad), undefined);
      assert.throws(
        () => space.translateDetailed(bad),
        unmapped(new RegExp(`not canonical: bits 63\\.\\.${bit} must all equal bit ${bit}`)),
      );
      assert.equal(space.tryRead(bad, 1), undefined);
    });

    test('reads cross pages: contiguous physical pages become one memory read', () => {
      const { memory, builder, space } = setup(mode);
      builder.mapRange(base, 0x10_0000n, 0x4000n); // 4 pages, physically contiguous
      const data = stamp(memory, 0x10_0000n, 4, 0x4000);
      space.translate(base); // warm the tables
      const before = memory.reads;
      assert.deepEqual(space.read(base + 0x800n, 0x3000), data.subarray(0x800, 0x3800));
      assert.equal(memory.reads - before, 1);
    });

    test('reads cross into a different physical page', () => {
      const { memory, builder, space } = setup(mode);
      builder.map(base, 0x20_0000n, 0x1000n);
      builder.map(base + 0x1000n, 0x5000n, 0x1000n);
      builder.map(base + 0x2000n, 0x5000n + 0x1000n, 0x1000n); // contiguous with the second
      const a = stamp(memory, 0x20_0000n, 5);
      const b = stamp(memory, 0x5000n, 6, 0x2000);
      space.translate(base);
      const before = memory.reads;
      const got = space.read(base + 0xff0n, 0x20 + 0x1000);
      assert.deepEqual(got, Buffer.concat([a.subarray(0xff0), b.subarray(0, 0x1010)]));
      assert.equal(memory.reads - before, 2, 'one read per physical run');
      assert.equal(space.readU64(base + 0xffcn), got.readBigUInt64LE(0xc));
      assert.equal(space.readU32(base + 0xffen), got.readUInt32LE(0xe));
    });

    test('reads crossing into an unmapped page name that page', () => {
      const { memory, builder, space } = setup(mode);
      builder.map(base, 0x3000n, 0x1000n);
      stamp(memory, 0x3000n, 7);
      const next = base + 0x1000n;
      assert.throws(
        () => space.read(base + 0xff8n, 16),
        unmapped(
          new RegExp(
            `^VA 0x${next.toString(16)} not mapped: PT entry not present .*reading 0x10 bytes at 0x${(base + 0xff8n).toString(16)}`,
          ),
        ),
      );
      assert.equal(space.tryRead(base + 0xff8n, 16), undefined);
      assert.throws(() => space.readU64(base + 0xffcn), unmapped(/PT entry not present/));
      assert.deepEqual(space.tryRead(base + 0xff8n, 8), memory.bytes.subarray(0x3ff8, 0x4000));
    });

    test('readInto fills the caller buffer', () => {
      const { memory, builder, space } = setup(mode);
      builder.mapRange(base, 0x6000n, 0x2000n);
      const data = stamp(memory, 0x6000n, 8, 0x2000);
      const buf = Buffer.alloc(0x1800);
      assert.equal(space.readInto(base + 0x400n, buf), buf);
      assert.deepEqual(buf, data.subarray(0x400, 0x1c00));
      assert.deepEqual(space.read(base, 0), Buffer.alloc(0));
    });

    test('CR3 PCID and no-flush bits are ignored', () => {
      const { memory, builder, cache } = setup(mode);
      builder.map(base, 0x3000n, 0x1000n);
      const space = new PageTableAddressSpace(memory, builder.root | 0x5n | (1n << 63n), mode, cache);
      assert.equal(space.root, builder.root);
      assert.equal(space.translate(base), 0x3000n);
    });
  });
}

describe('caching', () => {
  test('the cache returns stale data until the epoch is bumped', () => {
    const { memory, builder, space, epoch, cache } = setup(5);
    const va = KERNEL_5;
    builder.map(va, 0x3000n, 0x1000n);
    stamp(memory, 0x3000n, 1);
    const newData = stamp(memory, 0x9000n, 2);
    const oldU64 = space.readU64(va);
    assert.equal(space.translate(va), 0x3000n);

    // The guest remaps the page: the PTE now points at 0x9000.
    builder.setEntry(va, 'PT', PTE.present | PTE.writable | 0x9000n);
    assert.equal(space.translate(va), 0x3000n, 'cached translation until the epoch moves');
    assert.equal(space.readU64(va), oldU64);

    epoch.bump();
    assert.equal(space.translate(va), 0x9000n);
    assert.deepEqual(space.read(va, 0x1000), newData);
    assert.equal(cache.stats.flushes, 1);
  });

  test('page-table pages are cached too: a new PTE page under a cached PD is seen only after a bump', () => {
    const { builder, space, epoch } = setup(4);
    builder.map(KERNEL_4, 0x3000n, 0x1000n);
    assert.equal(space.translate(KERNEL_4 + 0x1000n), undefined);
    builder.map(KERNEL_4 + 0x1000n, 0x4000n, 0x1000n); // same PT page, a new entry
    assert.equal(space.translate(KERNEL_4 + 0x1000n), undefined, 'the cached PT page is stale');
    epoch.bump();
    assert.equal(space.translate(KERNEL_4 + 0x1000n), 0x4000n);
  });

  test('a frozen epoch (dump) keeps its cache', () => {
    const { builder, space, epoch } = setup(4, { epoch: Epoch.frozen() });
    builder.map(KERNEL_4, 0x3000n, 0x1000n);
    assert.equal(space.translate(KERNEL_4), 0x3000n);
    builder.setEntry(KERNEL_4, 'PT', PTE.present | 0x9000n);
    epoch.bump();
    assert.equal(space.translate(KERNEL_4), 0x3000n);
  });

  test('an epoch with a time limit invalidates by itself', () => {
    let now = 0;
    const { builder, space } = setup(4, { epoch: new Epoch({ maxAgeMs: 100, clock: () => now }) });
    builder.map(KERNEL_4, 0x3000n, 0x1000n);
    assert.equal(space.translate(KERNEL_4), 0x3000n);
    builder.setEntry(KERNEL_4, 'PT', PTE.present | 0x9000n);
    now = 99;
    assert.equal(space.translate(KERNEL_4), 0x3000n);
    now = 100;
    assert.equal(space.translate(KERNEL_4), 0x9000n);
  });

  test('translations are keyed by root: two roots share one cache without mixing', () => {
    const { memory, builder, cache } = setup(4);
    builder.map(0x40_0000n, 0x3000n, 0x1000n, { user: true });
    const other = new PageTableBuilder(memory, 4, 12n * BigInt(MiB));
    other.map(0x40_0000n, 0x7000n, 0x1000n, { user: true });
    const a = new PageTableAddressSpace(memory, builder.root, 4, cache);
    const b = new PageTableAddressSpace(memory, other.root, 4, cache);
    for (let i = 0; i < 3; i++) {
      assert.equal(a.translate(0x40_0123n), 0x3123n);
      assert.equal(b.translate(0x40_0123n), 0x7123n);
    }
  });

  test('warm translations hit the TLB; a 1-entry TLB and a 1-page table cache still translate right', () => {
    const { builder, space, cache } = setup(5);
    builder.mapRange(KERNEL_5, 0x10_0000n, 0x10000n);
    for (let i = 0n; i < 16n; i++) space.translate(KERNEL_5 + i * 0x1000n);
    const misses = cache.stats.tlbMisses;
    for (let i = 0n; i < 16n; i++)
      assert.equal(space.translate(KERNEL_5 + i * 0x1000n + 5n), 0x10_0005n + i * 0x1000n);
    assert.equal(cache.stats.tlbMisses, misses, 'no misses when warm');

    const tiny = setup(5, { tlbEntries: 1, tablePages: 1 });
    tiny.builder.mapRange(KERNEL_5, 0x10_0000n, 0x10000n);
    tiny.builder.map(0x1000n, 0x20_0000n, 0x1000n);
    for (let r = 0; r < 2; r++) {
      for (let i = 0n; i < 16n; i++) {
        assert.equal(tiny.space.translate(KERNEL_5 + i * 0x1000n), 0x10_0000n + i * 0x1000n);
        assert.equal(tiny.space.translate(0x1010n), 0x20_0010n);
      }
    }
  });

  test('one cache serves one memory', () => {
    const { cache, builder } = setup(4);
    const other = new BufferPhysicalMemory(MiB);
    assert.throws(
      () => new PageTableAddressSpace(other, builder.root, 4, cache),
      (e: unknown) => e instanceof VigilError && e.kind === 'usage',
    );
  });
});

describe('argument checks', () => {
  test('lengths are bounded and addresses are unsigned 64-bit', () => {
    const { space } = setup(4);
    assert.throws(
      () => space.read(KERNEL_4, MAX_READ_LENGTH + 1),
      (e: unknown) => e instanceof VigilError && e.kind === 'bound',
    );
    assert.throws(
      () => space.read(KERNEL_4, -1),
      (e: unknown) => e instanceof VigilError && e.kind === 'usage',
    );
    assert.throws(
      () => space.translate(-1n),
      (e: unknown) => e instanceof VigilError && e.kind === 'usage',
    );
    assert.throws(
      () => space.translate(1n << 64n),
      (e: unknown) => e instanceof VigilError && e.kind === 'usage',
    );
  });

  test('a read running off the top of the address space fails cleanly', () => {
    const { builder, space } = setup(4);
    builder.map(0xffff_ffff_ffff_f000n, 0x3000n, 0x1000n);
    assert.equal(space.readU32(0xffff_ffff_ffff_fffcn), 0);
    assert.equal(space.tryRead(0xffff_ffff_ffff_fff0n, 0x20), undefined);
    assert.throws(
      () => space.read(0xffff_ffff_ffff_fff0n, 0x20),
      unmapped(/past the top of the address space/),
    );
  });
});
