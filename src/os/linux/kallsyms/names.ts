// kallsyms_names: one entry per symbol, in address order. An entry is a length (number of compressed
// bytes) then that many token codes; the first decoded character is the symbol type ('T', 'd', …).
// Since Linux 6.1 ("kallsyms: support big kernel symbols") the length is ULEB128 of at most two bytes;
// older kernels wrote one byte but never reached 0x80 (KSYM_NAME_LEN was 128), so one decoder reads both.
// kallsyms_markers holds the offset of every 256th entry: the decoder checks each one.

import { VigilError } from '../../../util/errors.js';
import type { NamePool } from './symbol-table.js';
import { TOKEN_COUNT } from './tokens.js';

/** The kernel truncates names at KSYM_NAME_LEN (512 since 6.1); longer decoded names are cut here too. */
export const MAX_NAME_LENGTH = 512;
/** Cap on the bytes all names expand to (~2 MB for 100k symbols). */
export const MAX_DECODED_BYTES = 256 << 20;

export interface DecodedNames {
  /** Symbol names without the type character, as a pool: name i is pool[starts[i] … starts[i+1]). */
  names: NamePool;
  /** Type character codes, one per symbol. */
  types: Uint8Array;
  /** Bytes of kallsyms_names consumed. */
  size: number;
  /** Entries whose type is not a letter or whose name is empty (a sign of a wrong table). */
  anomalies: number;
  /** Names cut at MAX_NAME_LENGTH. */
  truncated: number;
}

/**
 * The length of the entry at `p` (its prefix is one byte below 0x80, two bytes otherwise), or -1 when
 * the prefix is zero, runs past `end`, is longer than two bytes or not minimal.
 */
export function entryLength(buf: Buffer, p: number, end: number): number {
  if (p >= end) return -1;
  const b = buf[p];
  if (b < 0x80) return b === 0 ? -1 : b;
  if (p + 1 >= end) return -1;
  const hi = buf[p + 1];
  if (hi === 0 || hi >= 0x80) return -1; // kallsyms.c writes two bytes only for lengths >= 0x80
  return (b & 0x7f) | (hi << 7);
}

/** Offset just past `count` entries from `p`, or -1 if an entry is malformed or runs past `end`. */
export function skipEntries(buf: Buffer, p: number, end: number, count: number): number {
  for (let i = 0; i < count; i++) {
    const len = entryLength(buf, p, end);
    if (len < 0) return -1;
    p += (len < 0x80 ? 1 : 2) + len;
    if (p > end) return -1;
  }
  return p;
}

const isTypeLetter = (c: number): boolean => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

/**
 * Decode `count` entries of kallsyms_names held in buf[start, end). `markers`, when given, must match
 * the offset of every 256th entry.
 */
export function decodeNames(
  buf: Buffer,
  start: number,
  end: number,
  count: number,
  tokens: readonly string[],
  markers?: Uint32Array,
): DecodedNames {
  if (tokens.length !== TOKEN_COUNT)
    throw new VigilError('os', 'malformed', `kallsyms token table has ${tokens.length} tokens, not 256`);
  if (!Number.isSafeInteger(count) || count < 0 || count > (end - start) / 2)
    throw new VigilError(
      'os',
      'bound',
      `kallsyms: ${count} symbols cannot fit in ${end - start} bytes of names`,
    );
  if (markers && markers.length < Math.ceil(count / 256))
    throw new VigilError('os', 'malformed', 'kallsyms: fewer markers than 256-symbol groups');
  // Expand every name into one latin1 pool (no JavaScript string per symbol); the first character of
  // each entry, the type, goes to `types` instead.
  const tokenData = new Uint8Array(0x10000 + 256);
  const tokenStart = new Int32Array(TOKEN_COUNT);
  const tokenEnd = new Int32Array(TOKEN_COUNT);
  let longest = 1;
  for (let c = 0, d = 0; c < TOKEN_COUNT; c++) {
    const t = tokens[c];
    if (d + t.length > tokenData.length) throw new VigilError('os', 'bound', 'kallsyms tokens are too long');
    tokenStart[c] = d;
    for (let k = 0; k < t.length; k++) tokenData[d++] = t.charCodeAt(k) & 0xff;
    tokenEnd[c] = d;
    longest = Math.max(longest, t.length);
  }
  let out = Buffer.allocUnsafe(Math.min(4 * (end - start) + 1024, MAX_DECODED_BYTES));
  const types = new Uint8Array(count);
  const starts = new Uint32Array(count + 1);
  let anomalies = 0;
  let truncated = 0;
  let o = 0;
  let p = start;
  for (let i = 0; i < count; i++) {
    if (markers && (i & 0xff) === 0 && markers[i >> 8] !== p - start)
      throw new VigilError('os', 'malformed', `kallsyms: marker ${i >> 8} does not match entry ${i}`);
    const len = entryLength(buf, p, end);
    if (len < 0) throw new VigilError('os', 'malformed', `kallsyms: bad length of name entry ${i}`);
    p += len < 0x80 ? 1 : 2;
    const stop = p + len;
    if (stop > end) throw new VigilError('os', 'malformed', `kallsyms: name entry ${i} runs past the table`);
    const need = o + len * longest;
    if (need > out.length) {
      if (need > MAX_DECODED_BYTES)
        throw new VigilError('os', 'bound', `kallsyms: names expand past ${MAX_DECODED_BYTES} bytes`);
      const bigger = Buffer.allocUnsafe(Math.min(Math.max(need, 2 * out.length), MAX_DECODED_BYTES));
      out.copy(bigger, 0, 0, o);
      out = bigger;
    }
    const nameStart = o;
    let type = -1;
    for (; p < stop; p++) {
      const c = buf[p];
      let s = tokenStart[c];
      const e = tokenEnd[c];
      if (type < 0 && s < e) type = tokenData[s++];
      while (s < e) out[o++] = tokenData[s++];
    }
    if (type < 0) type = 0x3f; // '?': an entry of empty tokens
    if (o - nameStart > MAX_NAME_LENGTH) {
      o = nameStart + MAX_NAME_LENGTH;
      truncated++;
    }
    if (o === nameStart || !isTypeLetter(type)) anomalies++;
    types[i] = type;
    starts[i + 1] = o;
  }
  const names = { pool: Buffer.from(out.subarray(0, o)), starts };
  return { names, types, size: p - start, anomalies, truncated };
}
