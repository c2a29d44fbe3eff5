import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPhysicalMemory } from '../../arch/x86_64/test-memory.js';
import { TypeRegistry } from '../../os/linux/btf/registry.js';
import { BtfWriter } from '../../os/linux/btf/testkit.js';
import { FakeSpace } from '../../os/linux/tasks/testkit.js';
import { WalkIssues } from '../../os/linux/walk.js';
import {
  checkTextPages,
  diffPages,
  KernelTextSource,
  pageHash,
  type PageCacheKernel,
  type TextPage,
} from './program-integrity.js';

const VMEMMAP = 0xffff_ea00_0000_0000n;
const PAGE = 4096;

/** The types the page-cache reader looks up by name, laid out our own way (offsets come from BTF). */
function types(): TypeRegistry {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const uint = w.int('unsigned int', 4);
  const ulong = w.int('long unsigned int', 8);
  const u8 = w.int('unsigned char', 1);
  const vp = w.ptr(0);
  const xarray = w.struct('xarray', 16, [
    ['xa_flags', uint, 32],
    ['xa_head', vp, 64],
  ]);
  w.struct('xa_node', 32 + 64 * 8, [
    ['shift', u8, 0],
    ['offset', u8, 8],
    ['parent', vp, 64],
    ['slots', w.array(vp, int, 64), 256],
  ]);
  // struct page: flags, then (in the kernel, inside unions) compound_head, mapping, index.
  w.struct('page', 64, [
    ['flags', ulong, 0],
    ['index', ulong, 64],
    ['compound_head', ulong, 128],
    ['mapping', vp, 256],
  ]);
  w.struct('address_space', 72, [
    ['host', vp, 0],
    ['i_pages', xarray, 128],
  ]);
  return TypeRegistry.fromBlob(w.blob());
}

/** A kernel with 64 frames of RAM, struct pages in a fake vmemmap and one file's page cache. */
function setup() {
  const t = types();
  const space = new FakeSpace();
  const memory = new BufferPhysicalMemory(64 * PAGE);
  const k: PageCacheKernel = {
    types: t,
    space,
    issues: new WalkIssues(),
    kaslr: { vmemmapBase: VMEMMAP },
    memory,
  };
  const AS = 0xffff_8880_0200_0000n;
  const ANON_VMA = 0xffff_8880_0300_0000n;
  const pageVa = (pfn: number) => VMEMMAP + BigInt(pfn) * 64n;
  const putPage = (pfn: number, f: { mapping?: bigint; index?: number; head?: number }) => {
    const b = Buffer.alloc(64);
    b.writeBigUInt64LE(BigInt(f.index ?? 0), t.offsetof('page', 'index'));
    b.writeBigUInt64LE(f.head === undefined ? 0n : pageVa(f.head) + 1n, t.offsetof('page', 'compound_head'));
    b.writeBigUInt64LE(f.mapping ?? 0n, t.offsetof('page', 'mapping'));
    space.write(pageVa(pfn), b);
  };
  const fill = (pfn: number, seed: number) => {
    for (let i = 0; i < PAGE; i++) memory.bytes[pfn * PAGE + i] = (i * 7 + seed) & 0xff;
  };
  /** The file's i_pages: one leaf node, slot i = entry. */
  const cache = (slots: Record<number, bigint>) => {
    const node = 0xffff_8880_0400_0000n;
    const nb = Buffer.alloc(32 + 64 * 8);
    for (const [i, e] of Object.entries(slots)) nb.writeBigUInt64LE(e, 32 + Number(i) * 8);
    space.write(node, nb);
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(node + 2n);
    space.write(AS + BigInt(t.offsetof('address_space', 'i_pages') + t.offsetof('xarray', 'xa_head')), head);
  };
  const anon = (pfn: number) => putPage(pfn, { mapping: ANON_VMA | 1n, index: 0x400 + pfn });
  return { k, space, memory, AS, pageVa, putPage, fill, cache, anon };
}

describe('the page cache through struct page and i_pages', () => {
  it('finds cached frames by index, through large folios, and refuses what is not a struct page', () => {
    const { k, AS, pageVa, putPage, cache, anon } = setup();
    putPage(10, { mapping: AS, index: 0 });
    putPage(12, { mapping: AS, index: 1 });
    // A 4-page folio at indexes 8..11: head frame 16, tails 17..19; the xarray holds it at 8 with siblings.
    putPage(16, { mapping: AS, index: 8 });
    for (const tail of [17, 18, 19]) putPage(tail, { head: 16 });
    anon(20);
    cache({
      0: pageVa(10),
      1: pageVa(12),
      5: 0x31n, // a shadow entry of an evicted page (xa_mk_value)
      7: VMEMMAP + 16n, // not a struct page: inside one
      8: pageVa(16),
      9: (8n << 2n) | 2n, // siblings of slot 8
      10: (8n << 2n) | 2n,
      11: (8n << 2n) | 2n,
      20: VMEMMAP + 64n * 100_000n, // a frame beyond RAM
    });
    const src = new KernelTextSource(k);
    assert.equal(src.cacheFrame(AS, 0), 10);
    assert.equal(src.cacheFrame(AS, 1), 12);
    assert.equal(src.cacheFrame(AS, 2), undefined);
    assert.equal(src.cacheFrame(AS, 5), undefined, 'shadow entries are not pages');
    assert.equal(src.cacheFrame(AS, 7), undefined);
    assert.equal(src.cacheFrame(AS, 20), undefined);
    assert.equal(src.cacheFrame(AS, 8), 16);
    assert.equal(src.cacheFrame(AS, 10), 18, 'a tail of the folio');
    assert.equal(src.cacheFrame(AS, 12), undefined, 'past the folio (frame 20 is not its tail)');
    assert.ok(src.isCachePage(10, AS, 0));
    assert.ok(!src.isCachePage(10, AS, 1), 'right file, wrong index');
    assert.ok(!src.isCachePage(10, AS + 0x1000n, 0), 'another file');
    assert.ok(src.isCachePage(19, AS, 11), 'a tail page: mapping and index from its head');
    assert.ok(!src.isCachePage(20, AS, 12));
    assert.equal(src.isAnonymous(20), true);
    assert.equal(src.isAnonymous(18), false);
    assert.equal(src.badEntries, 2);
  });

  it('a looping xarray stops with an issue and yields no frame twice', () => {
    const { k, space, AS, cache } = setup();
    cache({});
    // Slot 0 of the (shift 0) leaf points back at the leaf as a node: refused, recorded.
    const node = 0xffff_8880_0400_0000n;
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(node + 2n);
    space.write(node + 32n, b);
    const src = new KernelTextSource(k);
    assert.equal(src.cacheFrame(AS, 0), undefined);
    assert.ok(k.issues.items.length >= 1);
    assert.equal(k.issues.items[0]!.walker, 'page-cache');
  });
});

describe('comparing program text with its file', () => {
  it('diffPages finds the first difference and counts the bytes', () => {
    const a = Buffer.alloc(PAGE, 0x90);
    assert.equal(diffPages(a, Buffer.from(a)), undefined);
    const b = Buffer.from(a);
    b.set([0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3], 0x120);
    assert.deepEqual(diffPages(b, a), { first: 0x120, count: 6 });
  });

  it('shared pages pass, private copies are compared, absent pages fall back to the baseline', () => {
    const { k, memory, AS, pageVa, putPage, fill, cache, anon } = setup();
    // File pages 0..3 cached at frames 10, 12, 14 (index 3 is not cached); a folio at 8..11.
    putPage(10, { mapping: AS, index: 0 });
    putPage(12, { mapping: AS, index: 1 });
    putPage(14, { mapping: AS, index: 2 });
    putPage(16, { mapping: AS, index: 8 });
    for (const tail of [17, 18, 19]) putPage(tail, { head: 16 });
    cache({ 0: pageVa(10), 1: pageVa(12), 2: pageVa(14), 8: pageVa(16) });
    for (const pfn of [10, 12, 14, 16, 17, 18, 19]) fill(pfn, pfn);
    // The process: index 0 shares frame 10; index 1 is a private copy with the same bytes (frame 11);
    // index 2 a patched copy (frame 13); index 3 a copy the cache cannot vouch for (frame 15); index 9
    // a patched copy of a folio page (frame 21); index 10 the folio's own tail (frame 18).
    for (const pfn of [11, 13, 15, 21]) anon(pfn);
    memory.bytes.copy(memory.bytes, 11 * PAGE, 12 * PAGE, 13 * PAGE);
    memory.bytes.copy(memory.bytes, 13 * PAGE, 14 * PAGE, 15 * PAGE);
    memory.bytes.set([0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3], 13 * PAGE + 0x40);
    fill(15, 99);
    memory.bytes.copy(memory.bytes, 21 * PAGE, 17 * PAGE, 18 * PAGE);
    memory.bytes[21 * PAGE + 0x800] = 0xcc;
    const base = 0x40_0000n;
    const pages: TextPage[] = [
      { va: base, pfn: 10 },
      { va: base + 0x1000n, pfn: 11 },
      { va: base + 0x2000n, pfn: 13 },
      { va: base + 0x3000n, pfn: 15 },
      { va: base + 0x9000n, pfn: 21 },
      { va: base + 0xa000n, pfn: 18 },
    ];
    const src = new KernelTextSource(k);
    const r = checkTextPages(src, AS, base, 0n, pages, undefined, true);
    assert.equal(r.shared, 2);
    assert.equal(r.identicalCopies, 1);
    assert.equal(r.unchecked, 1, 'index 3: not cached, no baseline');
    assert.deepEqual(
      r.differing.map((d) => [d.va, d.fileOffset, d.against, d.cachePfn, d.diff]),
      [
        [
          base + 0x2000n,
          0x2000,
          'page-cache',
          14,
          {
            first: 0x40,
            count: diffPages(memory.read(13n * 4096n, PAGE), memory.read(14n * 4096n, PAGE))!.count,
          },
        ],
        [base + 0x9000n, 0x9000, 'page-cache', 17, { first: 0x800, count: 1 }],
      ],
    );
    assert.equal(r.differing[0]!.processBytes!.subarray(0x40, 0x46).toString('hex'), 'b801000000c3');
    assert.deepEqual(
      r.sharedPages.map((s) => [s.fileOffset, s.pfn]),
      [
        [0, 10],
        [0xa000, 18],
      ],
    );

    // The map may start further into the file: vm_pgoff 8 puts index 8 at its start.
    const shifted = checkTextPages(src, AS, 0x50_0000n, 8n, [{ va: 0x50_2000n, pfn: 18 }]);
    assert.equal(shifted.shared, 1);

    // With a baseline: index 3's learned hash decides.
    const good = new Map([[0x3000, pageHash(memory.read(15n * 4096n, PAGE))]]);
    const withGood = checkTextPages(src, AS, base, 0n, [{ va: base + 0x3000n, pfn: 15 }], good);
    assert.equal(withGood.identicalCopies, 1);
    assert.equal(withGood.unchecked, 0);
    const bad = new Map([[0x3000, pageHash(Buffer.alloc(PAGE))]]);
    const withBad = checkTextPages(src, AS, base, 0n, [{ va: base + 0x3000n, pfn: 15 }], bad);
    assert.deepEqual(
      withBad.differing.map((d) => [d.fileOffset, d.against]),
      [[0x3000, 'baseline']],
    );
  });

  it('a benign guest: every page shared or an identical copy, nothing differs', () => {
    const { k, AS, pageVa, putPage, fill, cache, anon, memory } = setup();
    const slots: Record<number, bigint> = {};
    const pages: TextPage[] = [];
    for (let i = 0; i < 8; i++) {
      putPage(30 + i, { mapping: AS, index: i });
      fill(30 + i, i);
      slots[i] = pageVa(30 + i);
      pages.push({ va: 0x40_0000n + BigInt(i) * 0x1000n, pfn: 30 + i });
    }
    // One page is a private copy that was written back unchanged (e.g. RELRO-like fix-ups that match).
    anon(45);
    memory.bytes.copy(memory.bytes, 45 * PAGE, 33 * PAGE, 34 * PAGE);
    pages[3] = { va: pages[3]!.va, pfn: 45 };
    cache(slots);
    const r = checkTextPages(new KernelTextSource(k), AS, 0x40_0000n, 0n, pages);
    assert.deepEqual([r.shared, r.identicalCopies, r.unchecked, r.differing.length], [7, 1, 0, 0]);
  });
});
