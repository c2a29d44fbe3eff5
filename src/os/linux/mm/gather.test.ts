// MemoryGatherer without a scanner: what lands in the buffer, in which runs, and how few physical reads.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Epoch } from '../../../arch/epoch.js';
import { PageTableAddressSpace, PagingCache } from '../../../arch/x86_64/index.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../../../arch/x86_64/test-memory.js';
import type { PhysicalMemory } from '../../../vmm/types.js';
import { MemoryGatherer } from './gather.js';

const PAGE = 4096;

function setup() {
  const mem = new BufferPhysicalMemory(4 << 20);
  const b = new PageTableBuilder(mem, 4, 0x30_0000n);
  const space = new PageTableAddressSpace(mem, b.root, 4, new PagingCache(Epoch.frozen()));
  /** Frame `pfn` filled with its own number, so the buffer shows which frame landed where. */
  const frame = (pfn: number) => mem.bytes.fill(pfn & 0xff, pfn * PAGE, (pfn + 1) * PAGE);
  return { mem, b, space, frame };
}
const user = { user: true, nx: true };

/** The gatherer's reads only (the page-table walk reads `mem` directly). */
function counting(mem: BufferPhysicalMemory, fresh = false): PhysicalMemory & { reads: [bigint, number][] } {
  const reads: [bigint, number][] = [];
  return {
    description: 'counting',
    ranges: mem.ranges,
    reads,
    read(pa: bigint, length: number, into?: Buffer) {
      reads.push([pa, length]);
      // `fresh`: a source that ignores `into` and returns a buffer of its own.
      return fresh
        ? Buffer.from(mem.bytes.subarray(Number(pa), Number(pa) + length))
        : mem.read(pa, length, into);
    },
    readStrict: (pa: bigint, length: number) => mem.readStrict(pa, length),
    close() {},
  };
}

describe('gathering pages into one buffer', () => {
  it('lays pages out in address order and reads physically contiguous frames at once', () => {
    const { mem, b, space, frame } = setup();
    const frames = [0x10, 0x11, 0x12, 0x30];
    frames.forEach((pfn, i) => {
      b.map(0x1000_0000n + BigInt(i * PAGE), BigInt(pfn * PAGE), 0x1000n, user);
      frame(pfn);
    });
    const src = counting(mem);
    const g = new MemoryGatherer(src, Buffer.alloc(1 << 20), new Set(), 1 << 20);
    assert.equal(g.add(space, { start: 0x1000_0000n, end: 0x1000_4000n }, 0), true);
    const data = g.data;
    assert.deepEqual(
      [0, 1, 2, 3].map((i) => data[i * PAGE]),
      frames,
    );
    assert.deepEqual(
      g.runs.map((r) => [r.va, r.offset, r.length, r.region]),
      [[0x1000_0000n, 0, 4 * PAGE, 0]],
    );
    assert.deepEqual(src.reads, [
      [0x10000n, 3 * PAGE],
      [0x30000n, PAGE],
    ]);
  });

  it('a new region starts a new run even where the addresses continue', () => {
    const { mem, b, space } = setup();
    b.map(0x1000_0000n, 0x10000n, 0x1000n, user);
    b.map(0x1000_1000n, 0x11000n, 0x1000n, user);
    const src = counting(mem);
    const g = new MemoryGatherer(src, Buffer.alloc(1 << 20), new Set(), 1 << 20);
    g.add(space, { start: 0x1000_0000n, end: 0x1000_1000n }, 0);
    g.add(space, { start: 0x1000_1000n, end: 0x1000_2000n }, 1);
    assert.deepEqual(
      g.runs.map((r) => [r.va, r.offset, r.region]),
      [
        [0x1000_0000n, 0, 0],
        [0x1000_1000n, PAGE, 1],
      ],
    );
    assert.equal(g.data.length, 2 * PAGE);
    assert.equal(src.reads.length, 1, 'the frames are still read together');
  });

  it('copies what a memory source returns in a buffer of its own', () => {
    const { mem, b, space, frame } = setup();
    b.map(0x1000_0000n, 0x21000n, 0x1000n, user);
    b.map(0x1000_1000n, 0x40000n, 0x1000n, user);
    frame(0x21);
    frame(0x40);
    const g = new MemoryGatherer(counting(mem, true), Buffer.alloc(1 << 20), new Set(), 1 << 20);
    g.add(space, { start: 0x1000_0000n, end: 0x1000_2000n }, 0);
    assert.deepEqual([g.data[0], g.data[PAGE], g.data[2 * PAGE - 1]], [0x21, 0x40, 0x40]);
  });

  it('a range start inside a page takes the whole page', () => {
    const { mem, b, space, frame } = setup();
    b.map(0x1000_0000n, 0x22000n, 0x1000n, user);
    frame(0x22);
    const g = new MemoryGatherer(mem, Buffer.alloc(1 << 20), new Set(), 1 << 20);
    g.add(space, { start: 0x1000_0123n, end: 0x1000_1000n }, 0);
    assert.deepEqual(
      g.runs.map((r) => [r.va, r.length]),
      [[0x1000_0000n, PAGE]],
    );
  });
});
