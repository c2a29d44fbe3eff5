// The present 4 KiB pages of a virtual range and their frames, through one address space's page tables.
// The one page walk the memory detectors share: the signature gatherer and the program-integrity check.
import type { AddressSpace, MappingWalkOptions } from '../../../arch/types.js';

const PAGE = 4096;

export interface PresentPage {
  va: bigint;
  pfn: number;
}

/**
 * Present 4 KiB pages of [start, end) and their frames, in address order: large pages split, and only
 * their pages inside the range (one may start before it and end after it). Swapped-out and never-touched
 * pages have no mapping and are skipped. The walk stops with VigilError 'bound' after `walk.maxEntries`
 * mappings (by default a few more than the range has pages).
 */
export function* presentPages(
  space: Pick<AddressSpace, 'walkMappings'>,
  start: bigint,
  end: bigint,
  walk: MappingWalkOptions = {},
): Generator<PresentPage> {
  const max = Number((end - start) / BigInt(PAGE)) + 16;
  for (const m of space.walkMappings({ start, end }, { maxEntries: Math.min(max, 1 << 22), ...walk })) {
    const from = m.va > start ? m.va : start;
    const to = m.va + m.size < end ? m.va + m.size : end;
    // Each step adds one page to both sides: the frame number follows without more bigint arithmetic.
    let pfn = Number((m.paddr + (from - m.va)) / 4096n);
    for (let va = from; va < to; va += 0x1000n) yield { va, pfn: pfn++ };
  }
}
