// presentPages over synthetic page tables: the page walk the signature gatherer and program-integrity share.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Epoch } from '../../../arch/epoch.js';
import { PageTableAddressSpace, PagingCache } from '../../../arch/x86_64/index.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../../../arch/x86_64/test-memory.js';
import { VigilError } from '../../../util/errors.js';
import { presentPages } from './present-pages.js';

/** 4 MiB of guest RAM, tables from 3 MiB, one user address space. */
function setup() {
  const mem = new BufferPhysicalMemory(4 << 20);
  const b = new PageTableBuilder(mem, 4, 0x30_0000n);
  const space = new PageTableAddressSpace(mem, b.root, 4, new PagingCache(Epoch.frozen()));
  return { mem, b, space };
}
const user = { user: true, nx: true };
const pairs = (it: Iterable<{ va: bigint; pfn: number }>) => [...it].map((p) => [p.va, p.pfn]);

describe('present pages of a range', () => {
  it('yields each present 4 KiB page with its frame in address order, skipping absent ones', () => {
    const { b, space } = setup();
    b.map(0x1000_3000n, 0x9000n, 0x1000n, user);
    b.map(0x1000_0000n, 0x5000n, 0x1000n, user);
    b.map(0x1000_1000n, 0x20000n, 0x1000n, user);
    b.map(0x1000_5000n, 0x6000n, 0x1000n, user); // outside the range
    assert.deepEqual(pairs(presentPages(space, 0x1000_0000n, 0x1000_5000n)), [
      [0x1000_0000n, 0x5],
      [0x1000_1000n, 0x20],
      [0x1000_3000n, 0x9],
    ]);
  });

  it('splits a large page and keeps only its pages inside the range', () => {
    const { b, space } = setup();
    b.map(0x4000_0000n, 0x20_0000n, 0x20_0000n, user);
    assert.deepEqual(pairs(presentPages(space, 0x4000_4000n, 0x4000_7000n)), [
      [0x4000_4000n, 0x204],
      [0x4000_5000n, 0x205],
      [0x4000_6000n, 0x206],
    ]);
  });

  it('an unaligned start names the first page (with the frame it lies in); the next ones start aligned', () => {
    const { b, space } = setup();
    b.map(0x1000_0000n, 0x5000n, 0x1000n, user);
    b.map(0x1000_1000n, 0x8000n, 0x1000n, user);
    assert.deepEqual(pairs(presentPages(space, 0x1000_0800n, 0x1000_2000n)), [
      [0x1000_0800n, 0x5],
      [0x1000_1000n, 0x8],
    ]);
  });

  it('hostile tables (a table pointing at itself) stop at walk.maxEntries with a bound error', () => {
    const { mem, b, space } = setup();
    b.map(0x1000_0000n, 0x5000n, 0x1000n, user);
    const pt = mem.readU64(b.entryAddress(0x1000_0000n, 'PD')) & 0x000f_ffff_ffff_f000n;
    for (let i = 0n; i < 512n; i++) mem.writeU64(pt + i * 8n, pt | 0x7n);
    const got: bigint[] = [];
    assert.throws(
      () => {
        for (const p of presentPages(space, 0x1000_0000n, 0x1020_0000n, { maxEntries: 16 })) got.push(p.va);
      },
      (e: unknown) => e instanceof VigilError && e.kind === 'bound',
    );
    assert.equal(got.length, 16, 'the pages before the bound were yielded');
    // Without a bound of its own the walk allows a few more mappings than the range has pages.
    assert.equal([...presentPages(space, 0x1000_0000n, 0x1020_0000n)].length, 512);
  });
});
