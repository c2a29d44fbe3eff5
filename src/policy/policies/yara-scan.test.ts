// Gathering through synthetic page tables and scanning: matches at their virtual addresses, never across holes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Epoch } from '../../arch/epoch.js';
import { PageTableAddressSpace, PagingCache } from '../../arch/x86_64/index.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../../arch/x86_64/test-memory.js';
import { MemoryGatherer } from '../../os/linux/mm/gather.js';
import { compileRules, defaultRulesPath, type CompiledRules } from './yara-rules.js';
import { scanGathered } from './yara-scan.js';

const defaults = (): CompiledRules =>
  compileRules([{ name: 'default.yar', text: readFileSync(defaultRulesPath(), 'utf8') }]);

describe('gathering process memory through page tables', () => {
  const MARK = 'VIGIL-TEST-MALWARE-SIGNATURE-5f3a';
  /** 4 MiB of guest RAM, tables from 3 MiB, one user address space. */
  function setup() {
    const mem = new BufferPhysicalMemory(4 << 20);
    const b = new PageTableBuilder(mem, 4, 0x30_0000n);
    const space = new PageTableAddressSpace(mem, b.root, 4, new PagingCache(Epoch.frozen()));
    return { mem, b, space };
  }
  const user = { user: true, nx: true };

  it('finds strings at their virtual addresses, across pages scattered in RAM, and not across holes', () => {
    const { mem, b, space } = setup();
    // VMA 0x10000000-0x10005000: pages 0,1,3,4 present (2 is not: swapped or never touched), frames
    // out of order in RAM.
    const frames = [0x5000n, 0x20000n, 0, 0x9000n, 0x12000n];
    frames.forEach((pa, i) => pa && b.map(0x1000_0000n + BigInt(i) * 0x1000n, pa as bigint, 0x1000n, user));
    mem.write(0x5000n + 100n, Buffer.from(MARK)); // page 0
    // Split over the boundary of pages 0 and 1 (neighbours in the process, not in RAM).
    mem.write(0x5000n + 0x1000n - 10n, Buffer.from('VIGIL-TEST'));
    mem.write(0x20000n, Buffer.from('-MALWARE-SIGNATURE-5f3a'));
    // Split over the hole (page 2 absent): only a buffer artefact, never a match.
    mem.write(0x9000n, Buffer.from('E-SIGNATURE-5f3a'));
    mem.write(0x20000n + 0x1000n - 17n, Buffer.from('VIGIL-TEST-MALWAR'));
    const g = new MemoryGatherer(mem, Buffer.alloc(1 << 20), new Set(), 1 << 20);
    g.add(space, { start: 0x1000_0000n, end: 0x1000_5000n }, 0);
    assert.equal(g.stats.bytes, 4 * 4096);
    assert.deepEqual(
      g.runs.map((r) => [r.va, r.offset, r.length]),
      [
        [0x1000_0000n, 0, 0x2000],
        [0x1000_3000n, 0x2000, 0x2000],
      ],
    );
    const hits = scanGathered(defaults(), g.data, g.runs, 16);
    assert.equal(hits.length, 1);
    const marker = hits[0]!;
    assert.equal(marker.rule, 'vigil_test_marker');
    assert.equal(marker.meta.technique, 'T1027');
    assert.deepEqual(
      marker.strings.map((s) => [s.identifier, s.va, s.excerpt]),
      [
        ['$marker', 0x1000_0000n + 100n, MARK],
        ['$marker', 0x1000_1000n - 10n, MARK],
      ],
    );
    assert.equal(marker.matchCount, 2, 'the match across the hole is not counted');
  });

  it('reads each physical page once per sweep, honours the budget, and splits large pages', () => {
    const { mem, b, space } = setup();
    b.map(0x2000_0000n, 0x7000n, 0x1000n, user);
    b.map(0x3000_0000n, 0x7000n, 0x1000n, user); // the same frame in a second process
    b.map(0x4000_0000n, 0x20_0000n, 0x20_0000n, user); // a 2 MiB page; the VMA covers 3 pages of it
    mem.write(0x7000n, Buffer.from(MARK));
    mem.write(0x20_0000n + 0x5000n + 7n, Buffer.from(MARK));
    const seen = new Set<number>();
    const buf = Buffer.alloc(1 << 20);
    const first = new MemoryGatherer(mem, buf, seen, 1 << 20);
    first.add(space, { start: 0x2000_0000n, end: 0x2000_1000n }, 0);
    assert.equal(scanGathered(defaults(), first.data, first.runs, 16).length, 1);
    const second = new MemoryGatherer(mem, buf, seen, 1 << 20);
    second.add(space, { start: 0x3000_0000n, end: 0x3000_1000n }, 0);
    assert.equal(second.stats.bytes, 0);
    assert.equal(second.stats.sharedPages, 1);
    const large = new MemoryGatherer(mem, buf, seen, 1 << 20);
    large.add(space, { start: 0x4000_4000n, end: 0x4000_7000n }, 3);
    assert.deepEqual(
      large.runs.map((r) => [r.va, r.length, r.region]),
      [[0x4000_4000n, 0x3000, 3]],
    );
    const hit = scanGathered(defaults(), large.data, large.runs, 16)[0]!;
    assert.equal(hit.strings[0]!.va, 0x4000_5007n);
    // Budget: two pages, then full.
    const small = new MemoryGatherer(mem, buf, new Set(), 0x2000);
    assert.equal(small.add(space, { start: 0x4000_0000n, end: 0x4020_0000n }, 0), false);
    assert.equal(small.stats.bytes, 0x2000);
    assert.equal(small.stats.truncated, true);
  });

  it('hostile page tables (a table pointing at itself) stop at a bound and are reported, not looped on', () => {
    const { mem, b, space } = setup();
    b.map(0x1000_0000n, 0x5000n, 0x1000n, user);
    // Every entry of the PT that maps 0x10000000 now points at the PT itself: 512 "pages" per table.
    const ptEntry = b.entryAddress(0x1000_0000n, 'PD');
    const pt = mem.readU64(ptEntry) & 0x000f_ffff_ffff_f000n;
    for (let i = 0n; i < 512n; i++) mem.writeU64(pt + i * 8n, pt | 0x7n);
    const g = new MemoryGatherer(mem, Buffer.alloc(1 << 20), new Set(), 1 << 20);
    g.add(space, { start: 0x1000_0000n, end: 0x1020_0000n }, 0, { maxEntries: 16 });
    assert.equal(g.stats.walkErrors.length, 1);
    assert.ok(g.stats.bytes <= 4096, 'every alias of the one frame counts once');
  });
});
