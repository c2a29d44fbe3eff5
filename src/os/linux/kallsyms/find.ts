// Find and decode the kernel's kallsyms tables in guest-physical memory, with no configuration.
//
// The tables sit in .rodata of the (physically contiguous) kernel image. Their order changed over time:
//   ≤ 6.3:  offsets|addresses, relative_base, num_syms, names, markers, [seqs_of_names], token_table, token_index
//   ≥ 6.4:  num_syms, names, markers, token_table, token_index, offsets|addresses, relative_base, seqs_of_names
//   ≥ 7.0:  as 6.4 but place-relative offsets and no relative_base
// (seqs_of_names came in 6.2, three big-endian bytes per symbol, later four; stable kernels got it too).
// What holds in all of them: num_syms directly precedes names, markers directly follow names, and the
// token table comes after markers with nothing or seqs_of_names in between. So the search finds the
// token table by its shape, then num_syms by walking back and checking markers and names against each
// other, then tries each place the addresses can be and keeps the one that decodes sorted.

import { VigilError } from '../../../util/errors.js';
import type { PhysicalMemory } from '../../../vmm/types.js';
import { kernelImageVirtOf } from '../kaslr.js';
import {
  type AddressMode,
  decodeAddresses,
  hasNegativeOffsets,
  inversions,
  kernelHalfCount,
  placeRelativePositions,
} from './addresses.js';
import { decodeNames, skipEntries } from './names.js';
import { type NamePool, SymbolTable } from './symbol-table.js';
import {
  DIGIT_TOKENS,
  looksLikeTokenIndex,
  TOKEN_INDEX_SIZE,
  tokenTableAtDigits,
  tokenTableAtIndex,
  type TokenTable,
} from './tokens.js';

/** Upper bound on num_syms: allyesconfig kernels have ~400k; 2M leaves room and caps allocations. */
export const MAX_SYMBOLS = 2_000_000;
/** How far before the token table num_syms may be: names (~16 B/symbol) plus seqs_of_names. */
export const MAX_TABLES_SPAN = 48 << 20;
/** Search-key hits to validate before giving up (a real guest has about ten; a hostile one, any number). */
const MAX_TOKEN_CANDIDATES = 20_000;
/** Valid-looking token tables to decode around before giving up. */
const MAX_TABLES_TRIED = 16;
const SCAN_CHUNK = 64 << 10;
/** Bytes read around a token-table candidate: tokens are short, the table is at most 64 KiB. */
const TOKEN_WINDOW_BEFORE = 16 << 10;
const TOKEN_WINDOW_AFTER = 48 << 10;

export interface FoundTokenTable {
  tableAddr: bigint;
  indexAddr: bigint;
  tokens: readonly string[];
}

export interface KallsymsLayout {
  numSyms: number;
  numSymsAddr: bigint;
  namesAddr: bigint;
  namesSize: number;
  markersAddr: bigint;
  seqsOfNames?: { addr: bigint; width: 3 | 4 };
  tokenTableAddr: bigint;
  tokenIndexAddr: bigint;
  addressMode: AddressMode;
  /** Physical address of kallsyms_offsets or kallsyms_addresses. */
  addressesAddr: bigint;
  /** kallsyms_relative_base's value (base-relative modes) or the offsets table's virtual address. */
  base?: bigint;
  addressesPlacement: 'before-num-syms' | 'after-token-index';
}

export interface KallsymsResult {
  symbols: SymbolTable;
  layout: KallsymsLayout;
  stats: {
    /** Milliseconds to find the token table. */
    searchMs: number;
    /** Milliseconds to locate the other tables and decode every symbol. */
    decodeMs: number;
    /** Address pairs out of order (0 in a sane table). */
    inversions: number;
    /** Names with an odd type or an empty name. */
    anomalies: number;
    truncated: number;
  };
}

const align8 = (v: number): number => Math.ceil(v / 8) * 8;

/** Read [start, end) of guest-physical memory, clamped to the RAM range holding `within`. */
function readClamped(mem: PhysicalMemory, start: bigint, end: bigint, within: bigint) {
  const range = mem.ranges.find((r) => within >= r.start && within < r.start + r.size);
  if (!range) throw new VigilError('os', 'unmapped', `0x${within.toString(16)} is not in guest RAM`);
  const s = start < range.start ? range.start : start;
  const rangeEnd = range.start + range.size;
  const e = end > rangeEnd ? rangeEnd : end;
  return { base: s, buf: mem.read(s, Number(e - s)) };
}

function* chunks(mem: PhysicalMemory, overlap: number): Generator<{ base: bigint; buf: Buffer }> {
  const scratch = Buffer.alloc(SCAN_CHUNK + overlap);
  for (const r of mem.ranges) {
    const end = r.start + r.size;
    for (let at = r.start; at < end; at += BigInt(SCAN_CHUNK)) {
      const len = Number(end - at < BigInt(SCAN_CHUNK + overlap) ? end - at : BigInt(SCAN_CHUNK + overlap));
      const buf = mem.read(at, len, scratch.subarray(0, len));
      yield { base: at, buf };
    }
  }
}

/** Token tables in guest memory, in physical address order (validated, lazily). */
export function* tokenTableCandidates(mem: PhysicalMemory): Generator<FoundTokenTable> {
  let tried = 0;
  const check = (found: TokenTable | undefined, base: bigint): FoundTokenTable | undefined =>
    found && {
      tableAddr: base + BigInt(found.tableOffset),
      indexAddr: base + BigInt(found.indexOffset),
      tokens: found.tokens,
    };
  const windowAt = (hit: bigint) => {
    const start = (hit - BigInt(TOKEN_WINDOW_BEFORE)) & ~7n;
    return readClamped(mem, start < 0n ? 0n : start, hit + BigInt(TOKEN_WINDOW_AFTER), hit);
  };
  const seen = new Set<bigint>();
  for (const { base, buf } of chunks(mem, DIGIT_TOKENS.length)) {
    for (let i = buf.indexOf(DIGIT_TOKENS); i >= 0 && i < SCAN_CHUNK; i = buf.indexOf(DIGIT_TOKENS, i + 1)) {
      if (++tried > MAX_TOKEN_CANDIDATES)
        throw new VigilError(
          'os',
          'bound',
          `more than ${MAX_TOKEN_CANDIDATES} kallsyms token table candidates`,
        );
      const hit = base + BigInt(i);
      const w = windowAt(hit);
      const found = check(tokenTableAtDigits(w.buf, Number(hit - w.base), Number(w.base & 7n)), w.base);
      if (found && !seen.has(found.tableAddr)) {
        seen.add(found.tableAddr);
        yield found;
      }
    }
  }
  if (seen.size > 0) return;
  // Fallback for kernels whose symbols lack a digit: look for the index itself (slower: every 8 bytes).
  for (const { base, buf } of chunks(mem, TOKEN_INDEX_SIZE)) {
    const even = buf.byteOffset % 2 === 0 ? buf : Buffer.from(buf);
    const words = new Uint16Array(even.buffer, even.byteOffset, even.length >> 1);
    const first = Number((8n - (base & 7n)) & 7n) >> 1;
    for (let w = first; w < SCAN_CHUNK >> 1; w += 4) {
      if (!looksLikeTokenIndex(words, w)) continue;
      if (++tried > MAX_TOKEN_CANDIDATES)
        throw new VigilError(
          'os',
          'bound',
          `more than ${MAX_TOKEN_CANDIDATES} kallsyms token index candidates`,
        );
      const indexAddr = base + BigInt(2 * w);
      const win = readClamped(
        mem,
        (indexAddr - 65536n) & ~7n,
        indexAddr + BigInt(TOKEN_INDEX_SIZE),
        indexAddr,
      );
      const found = check(tokenTableAtIndex(win.buf, Number(indexAddr - win.base)), win.base);
      if (found && !seen.has(found.tableAddr)) {
        seen.add(found.tableAddr);
        yield found;
      }
    }
  }
}

interface NamesCandidate {
  numSyms: number;
  numSymsOffset: number;
  markersOffset: number;
  markers: Uint32Array;
  namesEnd: number;
  seqs?: { offset: number; width: 3 | 4 };
}

/**
 * Check whether num_syms sits at `q` in `buf` (whose end is the token table): markers where the layout
 * puts them, increasing, and the last 256-symbol group of names ending right before them.
 */
function namesAt(buf: Buffer, q: number, tableOffset: number): NamesCandidate | undefined {
  const n = buf.readUInt32LE(q);
  if (n < 1 || n > MAX_SYMBOLS || buf.readUInt32LE(q + 4) !== 0) return undefined;
  const namesStart = q + 8;
  const groups = Math.ceil(n / 256);
  if (namesStart + 2 * n + 4 * groups > tableOffset) return undefined;
  for (const width of [0, 3, 4] as const) {
    const markersOffset = tableOffset - align8(width * n) - align8(4 * groups);
    if (markersOffset < namesStart + 2 * n || buf.readUInt32LE(markersOffset) !== 0) continue;
    const markers = new Uint32Array(groups);
    let ok = true;
    for (let k = 1; k < groups && ok; k++) {
      markers[k] = buf.readUInt32LE(markersOffset + 4 * k);
      ok = markers[k] - markers[k - 1] >= 512;
    }
    if (!ok || namesStart + markers[groups - 1] >= markersOffset) continue;
    const end = skipEntries(buf, namesStart + markers[groups - 1], markersOffset, n - 256 * (groups - 1));
    if (end < 0 || end <= markersOffset - 8) continue;
    if (buf.subarray(end, markersOffset).some((b) => b !== 0)) continue;
    if (width !== 0 && !seqsLookRight(buf, markersOffset + align8(4 * groups), n, width)) continue;
    return {
      numSyms: n,
      numSymsOffset: q,
      markersOffset,
      markers,
      namesEnd: end,
      ...(width !== 0 && { seqs: { offset: markersOffset + align8(4 * groups), width } }),
    };
  }
  return undefined;
}

/** seqs_of_names is a permutation of 0…n-1: sample its head for values in range. */
function seqsLookRight(buf: Buffer, off: number, n: number, width: 3 | 4): boolean {
  const sample = Math.min(n, 256);
  for (let i = 0; i < sample; i++) {
    const v = width === 4 ? buf.readUInt32LE(off + 4 * i) : buf.readUIntBE(off + 3 * i, 3);
    if (v >= n) return false;
  }
  return true;
}

interface AddressCandidate {
  mode: AddressMode;
  placement: KallsymsLayout['addressesPlacement'];
  addr: bigint;
  base?: bigint;
  addresses: BigUint64Array;
  inversions: number;
}

/** A decoded address array is credible if (almost) sorted and mostly in the kernel half. */
function credible(addresses: BigUint64Array, inv: number): boolean {
  return inv <= addresses.length / 1000 && kernelHalfCount(addresses) >= addresses.length / 2;
}

export interface FindKallsymsOptions {
  /**
   * For place-relative tables (Linux 7.0+): the virtual address of kallsyms_offsets is not stored
   * anywhere in the tables. By default it is found through the kernel page tables (init_top_pgt).
   */
  placeRelativeBase?: (
    offsetsAddr: bigint,
    positions: Float64Array,
    indexOf: (name: string) => number,
  ) => bigint;
  /** Bytes before the token table searched first for num_syms (then MAX_TABLES_SPAN). Default 4 MiB. */
  initialSpan?: number;
}

/**
 * Find the kallsyms tables in guest-physical memory and decode every symbol. Throws VigilError
 * 'not-found' if there are none, 'malformed' if what looks like them does not decode.
 */
export function findKallsyms(mem: PhysicalMemory, options: FindKallsymsOptions = {}): KallsymsResult {
  const t0 = performance.now();
  let lastError: unknown;
  let searchMs = 0;
  let tables = 0;
  for (const tokens of tokenTableCandidates(mem)) {
    if (++tables > MAX_TABLES_TRIED) break;
    searchMs = performance.now() - t0;
    const t1 = performance.now();
    try {
      const result = decodeAround(mem, tokens, options);
      return { ...result, stats: { ...result.stats, searchMs, decodeMs: performance.now() - t1 } };
    } catch (e) {
      if (!(e instanceof VigilError)) throw e;
      lastError = e;
    }
  }
  if (lastError) throw lastError;
  throw new VigilError('os', 'not-found', 'no kallsyms token table in guest memory');
}

/** Locate num_syms, names, markers and addresses around a token table, and decode them. */
export function decodeAround(
  mem: PhysicalMemory,
  tokens: FoundTokenTable,
  options: FindKallsymsOptions = {},
): Omit<KallsymsResult, 'stats'> & { stats: Omit<KallsymsResult['stats'], 'searchMs' | 'decodeMs'> } {
  const tableAddr = tokens.tableAddr;
  if (tableAddr % 4n !== 0n) throw new VigilError('os', 'malformed', 'kallsyms token table is misaligned');
  // Progressively wider windows: the tables of a distribution kernel span ~2 MB.
  let names: NamesCandidate | undefined;
  let win: { base: bigint; buf: Buffer } | undefined;
  for (const span of [Math.min(options.initialSpan ?? 4 << 20, MAX_TABLES_SPAN), MAX_TABLES_SPAN]) {
    const start = tableAddr > BigInt(span) ? tableAddr - BigInt(span) : 0n;
    win = readClamped(mem, start, tableAddr, tableAddr - 1n);
    const tableOffset = Number(tableAddr - win.base);
    // num_syms is 8-aligned in the guest; step back from the last place it could be. A u32 view makes
    // the pre-filter (a plausible count followed by four bytes of padding) cheap.
    const last = tableOffset - 16;
    const first = last - Number((win.base + BigInt(last)) & 7n);
    const buf = win.buf.byteOffset % 4 === 0 ? win.buf : Buffer.from(win.buf);
    const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >> 2);
    for (let q = first; q >= 0; q -= 8) {
      const n = words[q >> 2];
      if (n === 0 || n > MAX_SYMBOLS || words[(q >> 2) + 1] !== 0) continue;
      names = namesAt(buf, q, tableOffset);
      if (names) break;
    }
    // Widen unless found, or the window already reached the start of the RAM range.
    if (names || win.base > start || span === MAX_TABLES_SPAN) break;
  }
  if (!names || !win)
    throw new VigilError('os', 'not-found', 'kallsyms: no num_syms/names/markers before the tokens');
  const { buf, base } = win;
  const n = names.numSyms;
  const decoded = decodeNames(buf, names.numSymsOffset + 8, names.namesEnd, n, tokens.tokens, names.markers);
  if (decoded.anomalies > n / 100)
    throw new VigilError('os', 'malformed', `kallsyms: ${decoded.anomalies} of ${n} names look wrong`);
  const chosen = chooseAddresses(mem, buf, base, names, tokens, decoded.names, options);
  const at = (off: number): bigint => base + BigInt(off);
  const layout: KallsymsLayout = {
    numSyms: n,
    numSymsAddr: at(names.numSymsOffset),
    namesAddr: at(names.numSymsOffset + 8),
    namesSize: decoded.size,
    markersAddr: at(names.markersOffset),
    ...(names.seqs && { seqsOfNames: { addr: at(names.seqs.offset), width: names.seqs.width } }),
    tokenTableAddr: tokens.tableAddr,
    tokenIndexAddr: tokens.indexAddr,
    addressMode: chosen.mode,
    addressesAddr: chosen.addr,
    ...(chosen.base !== undefined && { base: chosen.base }),
    addressesPlacement: chosen.placement,
  };
  return {
    symbols: new SymbolTable(decoded.names, decoded.types, chosen.addresses),
    layout,
    stats: { inversions: chosen.inversions, anomalies: decoded.anomalies, truncated: decoded.truncated },
  };
}

function chooseAddresses(
  mem: PhysicalMemory,
  buf: Buffer,
  base: bigint,
  names: NamesCandidate,
  tokens: FoundTokenTable,
  symbolNames: NamePool,
  options: FindKallsymsOptions,
): AddressCandidate {
  const n = names.numSyms;
  const q = names.numSymsOffset;
  const tried: AddressCandidate[] = [];
  const consider = (c: Omit<AddressCandidate, 'inversions'>): AddressCandidate | undefined => {
    const cand = { ...c, inversions: inversions(c.addresses) };
    tried.push(cand);
    return credible(cand.addresses, cand.inversions) ? cand : undefined;
  };
  const relative = (
    b: Buffer,
    off: number,
    relBase: bigint,
    placement: AddressCandidate['placement'],
    addr: bigint,
  ): AddressCandidate | undefined => {
    if (relBase < 0xffff800000000000n) return undefined;
    const mode = hasNegativeOffsets(b, off, n) ? 'absolute-percpu' : 'base-relative';
    return consider({
      mode,
      placement,
      addr,
      base: relBase,
      addresses: decodeAddresses(b, off, n, mode, relBase),
    });
  };
  // Before num_syms: [offsets (4n, padded to 8)][relative_base] or [addresses (8n)].
  const offsBefore = q - 8 - align8(4 * n);
  if (offsBefore >= 0) {
    const found = relative(
      buf,
      offsBefore,
      buf.readBigUInt64LE(q - 8),
      'before-num-syms',
      base + BigInt(offsBefore),
    );
    if (found) return found;
  }
  if (q - 8 * n >= 0) {
    const found = consider({
      mode: 'absolute',
      placement: 'before-num-syms',
      addr: base + BigInt(q - 8 * n),
      addresses: decodeAddresses(buf, q - 8 * n, n, 'absolute'),
    });
    if (found) return found;
  }
  // After the token index: [offsets][relative_base] (6.4+), [addresses], or place-relative offsets (7.0+).
  const afterAddr = (tokens.indexAddr + BigInt(TOKEN_INDEX_SIZE) + 7n) & ~7n;
  const after = readClamped(mem, afterAddr, afterAddr + BigInt(align8(4 * n) + 8 * n + 8), afterAddr).buf;
  if (after.length >= align8(4 * n) + 8) {
    const found = relative(after, 0, after.readBigUInt64LE(align8(4 * n)), 'after-token-index', afterAddr);
    if (found) return found;
  }
  if (after.length >= 8 * n) {
    const found = consider({
      mode: 'absolute',
      placement: 'after-token-index',
      addr: afterAddr,
      addresses: decodeAddresses(after, 0, n, 'absolute'),
    });
    if (found) return found;
  }
  // Place-relative offsets (7.0+) after the token index, or, should a kernel put them there, before num_syms.
  const placeRelative = (b: Buffer, off: number, addr: bigint, placement: AddressCandidate['placement']) => {
    if (off < 0 || b.length < off + 4 * n) return undefined;
    const positions = placeRelativePositions(b, off, n);
    // Zeros (or any constant) would pass as sorted: real offsets point back into the text, all different.
    let zeros = 0;
    for (let i = 0; i < n; i++) if (b.readInt32LE(off + 4 * i) === 0) zeros++;
    if (zeros >= n / 2 || inversions(positions) > n / 1000) return undefined;
    const resolve = options.placeRelativeBase ?? defaultPlaceBase(mem);
    let tableVirt: bigint;
    try {
      tableVirt = resolve(addr, positions, (name) => nameIndex(symbolNames, name));
    } catch (e) {
      if (e instanceof VigilError) return undefined;
      throw e;
    }
    const addresses = decodeAddresses(b, off, n, 'place-relative', tableVirt);
    return consider({ mode: 'place-relative', placement, addr, base: tableVirt, addresses });
  };
  const placeAfter = placeRelative(after, 0, afterAddr, 'after-token-index');
  if (placeAfter) return placeAfter;
  const placeBefore = placeRelative(
    buf,
    q - align8(4 * n),
    base + BigInt(q - align8(4 * n)),
    'before-num-syms',
  );
  if (placeBefore) return placeBefore;
  const best = tried.sort((a, b) => a.inversions - b.inversions)[0];
  throw new VigilError(
    'os',
    'malformed',
    `kallsyms: no address table decodes sorted (${tried.length} layouts tried` +
      (best ? `, best ${best.mode} ${best.placement} with ${best.inversions} inversions)` : ')'),
  );
}

/**
 * Place-relative offsets give every symbol's position relative to the offsets table, hence its physical
 * address (the image is physically contiguous). The kernel page tables (init_top_pgt, itself located
 * that way) then tell at which virtual address _text is mapped, which fixes the table's own address.
 */
function defaultPlaceBase(mem: PhysicalMemory) {
  return (offsetsAddr: bigint, positions: Float64Array, index: (name: string) => number): bigint => {
    const text = index('_text') >= 0 ? index('_text') : index('_stext');
    const pgd = index('init_top_pgt') >= 0 ? index('init_top_pgt') : index('swapper_pg_dir');
    if (text < 0 || pgd < 0)
      throw new VigilError('os', 'not-found', 'kallsyms: place-relative table without _text or init_top_pgt');
    const phys = (i: number): bigint => offsetsAddr + BigInt(positions[i]);
    for (const levels of [5, 4] as const) {
      const textVirt = kernelImageVirtOf(mem, phys(pgd), phys(text), levels);
      if (textVirt !== undefined) return textVirt - BigInt(positions[text]);
    }
    throw new VigilError('os', 'not-found', 'kallsyms: the kernel page tables do not map _text');
  };
}

/** Index of the first symbol called `name` in a name pool, or -1 (a linear scan, for a few look-ups). */
function nameIndex({ pool, starts }: NamePool, name: string): number {
  const want = Buffer.from(name, 'latin1');
  for (let i = 0; i + 1 < starts.length; i++)
    if (
      starts[i + 1] - starts[i] === want.length &&
      pool.compare(want, 0, want.length, starts[i], starts[i + 1]) === 0
    )
      return i;
  return -1;
}
