// Parsers for QEMU's HMP memory reports: `info mtree -f` (the guest-physical map as the CPU sees it) and
// `info ramblock` (RAM blocks and their sizes). Both are host-side text from our own QEMU, not guest data,
// but they are still parsed strictly: a line we do not understand is skipped, never guessed at.

import { VigilError } from '../../util/errors.js';
import type { RamSegment } from './layout.js';

/** A guest-physical range from `info mtree -f` that a RAM region (a backend) serves. */
export interface MtreeSegment extends RamSegment {
  /** The memory region's name: the backend id ("mem", "pc.ram", "ram-node0"…), "vga.vram", "pc.bios"… */
  readonly regionName: string;
  /** 'rom' is RAM mapped read-only (the BIOS shadow below 1 MiB is the backend's own bytes). */
  readonly kind: 'ram' | 'rom';
}

/** Bound on the lines we look at: a real report has a few hundred. */
const MAX_LINES = 200_000;

// "  0000000000100000-000000000fffffff (prio 0, ram): mem @0000000000100000"
const RANGE = /^\s+([0-9a-f]{1,16})-([0-9a-f]{1,16}) \(prio -?\d+, ([a-z/-]+)\): (.*)$/;
const OFFSET = / @([0-9a-f]{16})(?=\s|$)/;

const KINDS: Record<string, 'ram' | 'rom' | undefined> = {
  ram: 'ram',
  'nv-ram': 'ram',
  rom: 'rom',
  'nv-rom': 'rom',
  // ramd (device RAM such as a VFIO BAR), romd (pflash) and i/o are not guest RAM.
};

/** The lines of the FlatView that renders the system memory address space. */
function systemFlatView(text: string): string[] {
  const lines = text.split(/\r?\n/, MAX_LINES);
  const views: { names: string[]; root: string; body: string[] }[] = [];
  for (const line of lines) {
    if (/^FlatView #\d+/.test(line)) {
      views.push({ names: [], root: '', body: [] });
      continue;
    }
    const view = views[views.length - 1];
    if (!view) continue;
    const as = /^ AS "([^"]*)", root: (.*)$/.exec(line);
    if (as) {
      view.names.push(as[1]);
      view.root = as[2].trim();
    } else {
      view.body.push(line);
    }
  }
  if (views.length === 0) {
    throw new VigilError('vmm', 'malformed', 'not `info mtree -f` output: no "FlatView" section');
  }
  const view =
    views.find((v) => v.names.includes('memory')) ??
    views.find((v) => v.names.includes('cpu-memory-0')) ??
    views.find((v) => v.root === 'system');
  if (!view) {
    throw new VigilError(
      'vmm',
      'malformed',
      '`info mtree -f` output has no view of the "memory" address space',
    );
  }
  return view.body;
}

/** Every RAM-backed range (ram and rom kinds) of the system memory view, in address order. */
export function parseMtreeAll(text: string): MtreeSegment[] {
  const out: MtreeSegment[] = [];
  for (const line of systemFlatView(text)) {
    const m = RANGE.exec(line);
    if (!m) continue;
    const kind = KINDS[m[3]];
    if (!kind) continue;
    const start = BigInt('0x' + m[1]);
    const last = BigInt('0x' + m[2]);
    if (last < start)
      throw new VigilError('vmm', 'malformed', `mtree range ends before it starts: ${line.trim()}`);
    const rest = m[4];
    const off = OFFSET.exec(rest);
    // Without " @offset" the range starts at offset 0 of its region; "owner:" and "[...]" are annotations.
    const name = (off ? rest.slice(0, off.index) : rest.replace(/ (owner:|\[).*$/, '')).trim();
    out.push({
      start,
      size: last - start + 1n,
      backendOffset: off ? BigInt('0x' + off[1]) : 0n,
      regionName: name,
      kind,
    });
  }
  return out.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

/**
 * The guest-physical map of one RAM backend from `info mtree -f` text: the ranges of the system memory
 * view served by the region `backendName` (the memory-backend id: "mem" with `-machine
 * memory-backend=mem`, "pc.ram" for a plain `-m`). Without a name, the region serving the most RAM.
 * Other regions (vga.vram, pc.bios, option ROMs) and I/O are left out.
 */
export function parseMtree(text: string, backendName?: string): MtreeSegment[] {
  const all = parseMtreeAll(text);
  let name = backendName;
  if (name === undefined) {
    const bytes = new Map<string, bigint>();
    for (const s of all)
      if (s.kind === 'ram') bytes.set(s.regionName, (bytes.get(s.regionName) ?? 0n) + s.size);
    let best = 0n;
    for (const [n, b] of bytes) {
      if (b > best) {
        best = b;
        name = n;
      }
    }
    if (name === undefined)
      throw new VigilError('vmm', 'not-found', '`info mtree -f` shows no RAM in the memory view');
  }
  const mine = all.filter((s) => s.regionName === name);
  if (mine.length === 0) {
    const names = [...new Set(all.map((s) => s.regionName))].join(', ');
    throw new VigilError(
      'vmm',
      'not-found',
      `no region "${name}" in the guest-physical map (regions: ${names})`,
    );
  }
  return mine;
}

/** One line of `info ramblock`. */
export interface RamBlock {
  readonly name: string;
  /** Host page size in bytes. */
  readonly pageSize: number;
  /** Offset in QEMU's ram_addr_t space (not a host address). */
  readonly offset: bigint;
  readonly used: bigint;
  readonly total: bigint;
}

const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** Parse `info ramblock`: "name  4 KiB  0x… 0x… 0x…" per block. */
export function parseInfoRamblock(text: string): RamBlock[] {
  const out: RamBlock[] = [];
  for (const line of text.split(/\r?\n/, MAX_LINES)) {
    const m = /^\s*(\S+)\s+(\d+)\s*(B|KiB|MiB|GiB)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*$/.exec(
      line,
    );
    if (!m) continue;
    out.push({
      name: m[1],
      pageSize: Number(m[2]) * (UNITS[m[3]] ?? 1),
      offset: BigInt('0x' + m[4]),
      used: BigInt('0x' + m[5]),
      total: BigInt('0x' + m[6]),
    });
  }
  if (out.length === 0)
    throw new VigilError('vmm', 'malformed', 'not `info ramblock` output: no block lines');
  return out;
}
