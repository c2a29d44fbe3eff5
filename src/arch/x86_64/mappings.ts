// What a page-table root maps: every present leaf in ascending virtual-address order, and the same merged
// into regions. Used to find the kernel image, module memory and executable pages.
//
// Page tables are guest data: a hostile or corrupt guest can point an entry back at a table above it
// (a self-map) and multiply the apparent mappings, so the walk is bounded by entries and tables visited.
// Its depth is bounded by the number of levels, so a cycle cannot recurse forever.

import { VigilError } from '../../util/errors.js';
import type { Mapping as BaseMapping, MappingWalkOptions, VaRange } from '../types.js';
import type { PagingCache } from './cache.js';
import { hex, type LevelName, type PagingDef } from './paging.js';

/** A leaf mapping; on x86-64 the level is PT (4 KiB), PD (2 MiB) or PDPT (1 GiB). */
export interface Mapping extends BaseMapping {
  level: LevelName;
}

export type { VaRange };
export type WalkOptions = MappingWalkOptions;

const TWO64 = 1n << 64n;

/** Map a canonical VA range onto the linear (un-sign-extended) space of `vaBits`, inclusive bounds. */
function linearRange(range: VaRange, vaBits: number): [bigint, bigint] | undefined {
  const half = 1n << BigInt(vaBits - 1);
  const lowerMax = half - 1n;
  const upperMin = TWO64 - half;
  const mask = (1n << BigInt(vaBits)) - 1n;
  const { start, end } = range;
  if (start < 0n || end > TWO64 || start >= end) return undefined;
  const last = end - 1n;
  const from = start <= lowerMax ? start : start < upperMin ? half : start & mask;
  const to = last <= lowerMax ? last : last < upperMin ? lowerMax : last & mask;
  return from <= to ? [from, to] : undefined;
}

export function* walkMappings(
  cache: PagingCache,
  root: number,
  def: PagingDef,
  range: VaRange | undefined,
  options: WalkOptions,
): Generator<Mapping> {
  const maxEntries = options.maxEntries ?? 1 << 20;
  const maxTables = options.maxTables ?? 1 << 16;
  const span = linearRange(range ?? { start: 0n, end: TWO64 }, def.vaBits);
  if (span === undefined) return;
  const [from, to] = span;
  const levels = def.levels;
  const depth = levels.length;
  const shifts = levels.map((l) => BigInt(l.shift));
  const sizes = levels.map((l) => 1n << BigInt(l.shift));
  // Frame bits of a leaf at each level as a mask on the entry's low word (large pages: PAT is bit 12).
  const frameMaskLo = levels.map((l) => 0xfffff000 & ~(2 ** l.shift - 1));
  const leafAt = levels.map((l) => (l.leaf === 'always' ? 2 : l.leaf === 'ps' ? 1 : 0));
  // Linear addresses at or above `half` are the upper half: sign-extend by adding `extend`.
  const half = 1n << BigInt(def.vaBits - 1);
  const extend = (1n << 64n) - (1n << BigInt(def.vaBits));
  const canonical = (linear: bigint): bigint => (linear >= half ? linear + extend : linear);

  // One frame per level: the table, the next index, the last index, the linear VA of index 0, and the
  // permissions accumulated above it.
  const tables: Uint32Array[] = new Array<Uint32Array>(depth);
  const next = new Int32Array(depth);
  const last = new Int32Array(depth);
  const bases: bigint[] = new Array<bigint>(depth).fill(0n);
  const perms = new Int32Array(depth + 1);
  let tablesRead = 0;
  let entries = 0;

  const enter = (d: number, pa: number, base: bigint): boolean => {
    if (++tablesRead > maxTables) {
      throw new VigilError(
        'arch',
        'bound',
        `page-table walk stopped after ${maxTables} tables (at VA ${hex(canonical(base))}): ` +
          'the tables may be hostile or self-referencing; narrow the range or raise maxTables',
      );
    }
    const t = cache.table(pa);
    if (t === undefined) return false; // a table outside RAM maps nothing we can read
    const end = base + (sizes[d]! << 9n) - 1n;
    tables[d] = t;
    bases[d] = base;
    next[d] = from > base ? Number((from - base) >> shifts[d]!) : 0;
    last[d] = to < end ? Number((to - base) >> shifts[d]!) : 511;
    return true;
  };

  if (!enter(0, root, 0n)) {
    throw new VigilError('arch', 'unmapped', `page-table root at PA ${hex(root)} is outside guest RAM`);
  }
  perms[0] = 3; // writable and user until a level says otherwise; NX clear
  let d = 0;
  while (d >= 0) {
    if (next[d]! > last[d]!) {
      d--;
      continue;
    }
    const index = next[d]!++;
    const t = tables[d]!;
    const elo = t[index << 1]!;
    if ((elo & 1) === 0) continue;
    const ehi = t[(index << 1) | 1]!;
    // R/W and U/S (entry bits 1, 2) narrow the permissions; XD (bit 63) sets NX for everything below.
    const p = (perms[d]! & ((elo >>> 1) & 3)) | (perms[d]! & 4) | ((ehi >>> 31) << 2);
    const va = bases[d]! + BigInt(index) * sizes[d]!;
    const leaf = leafAt[d]!;
    if (leaf === 0 || (leaf === 1 && (elo & 0x80) === 0)) {
      // PS where it is reserved makes the CPU fault: nothing is mapped below such an entry.
      if ((elo & 0x80) === 0 && enter(d + 1, (ehi & 0xfffff) * 4294967296 + ((elo & 0xfffff000) >>> 0), va)) {
        perms[d + 1] = p;
        d++;
      }
      continue;
    }
    if (++entries > maxEntries) {
      throw new VigilError(
        'arch',
        'bound',
        `page-table walk stopped after ${maxEntries} mappings (at VA ${hex(canonical(va))}): ` +
          'the tables may be hostile or self-referencing; narrow the range or raise maxEntries',
      );
    }
    yield {
      va: canonical(va),
      paddr: BigInt((ehi & 0xfffff) * 4294967296 + ((elo & frameMaskLo[d]!) >>> 0)),
      size: sizes[d]!,
      writable: (p & 1) !== 0,
      user: (p & 2) !== 0,
      nx: (p & 4) !== 0,
      level: levels[d]!.name,
    };
  }
}

/** A run of virtually contiguous mappings with the same permissions. */
export interface Region {
  start: bigint;
  /** Exclusive. */
  end: bigint;
  writable: boolean;
  user: boolean;
  nx: boolean;
  /** Number of leaf mappings merged. */
  pages: number;
  /** Guest-physical address of the first page. */
  paddr: bigint;
  /** Whether the whole region is also contiguous in guest-physical memory. */
  physContiguous: boolean;
}

/** Merge mappings (in VA order, as walkMappings yields them) into regions of equal permissions. */
export function* coalesceMappings(mappings: Iterable<Mapping>): Generator<Region> {
  let cur: Region | undefined;
  for (const m of mappings) {
    if (
      cur !== undefined &&
      m.va === cur.end &&
      m.writable === cur.writable &&
      m.user === cur.user &&
      m.nx === cur.nx
    ) {
      cur.physContiguous &&= m.paddr === cur.paddr + (cur.end - cur.start);
      cur.end += m.size;
      cur.pages++;
      continue;
    }
    if (cur !== undefined) yield cur;
    cur = {
      start: m.va,
      end: m.va + m.size,
      writable: m.writable,
      user: m.user,
      nx: m.nx,
      pages: 1,
      paddr: m.paddr,
      physContiguous: true,
    };
  }
  if (cur !== undefined) yield cur;
}
