// kallsyms_token_table and kallsyms_token_index: the dictionary every compressed symbol name is written in.
//
// scripts/kallsyms.c emits 256 NUL-terminated tokens back to back (kallsyms_token_table), then, after
// alignment, 256 u16 offsets of each token's start (kallsyms_token_index). Characters that occur in some
// symbol keep their own code as a one-character token, so the table holds "0\0" … "9\0" at codes
// 0x30…0x39 in any real kernel: that run is the fast search key. The index must then point exactly at
// the starts of the strings that precede and follow it, which no other data does by chance.

export const TOKEN_COUNT = 256;
/** Longest token accepted; real tokens are a few characters, the u16 index caps the table at 64 KiB. */
export const MAX_TOKEN_LENGTH = 128;
/** Bytes of the token index. */
export const TOKEN_INDEX_SIZE = TOKEN_COUNT * 2;

/** The search key: tokens 0x30…0x39 are the digits themselves. */
export const DIGIT_TOKENS = Buffer.from('0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00', 'latin1');
const FIRST_DIGIT = 0x30;

export interface TokenTable {
  /** Offset of kallsyms_token_table in the buffer it was parsed from. */
  tableOffset: number;
  /** Offset of kallsyms_token_index in the same buffer. */
  indexOffset: number;
  /** Offset just past the last token's NUL. */
  tableEnd: number;
  /** The 256 tokens as latin1 strings (printable ASCII only). */
  tokens: readonly string[];
}

const isTokenChar = (b: number): boolean => b > 0x20 && b < 0x7f;

/** Length of the NUL-terminated token at `off`, or -1 if it runs off the buffer, is too long or not printable. */
function tokenLength(buf: Buffer, off: number): number {
  const end = Math.min(buf.length, off + MAX_TOKEN_LENGTH + 1);
  for (let p = off; p < end; p++) {
    const b = buf[p];
    if (b === 0) return p - off;
    if (!isTokenChar(b)) return -1;
  }
  return -1;
}

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;

/**
 * Check that a token table starts at `tableOffset` and its index at `indexOffset`: every index entry
 * points at the start of the next string, the strings are printable, the last one ends at `tableEnd`.
 */
function checkTable(buf: Buffer, tableOffset: number, indexOffset: number): TokenTable | undefined {
  if (tableOffset < 0 || indexOffset + TOKEN_INDEX_SIZE > buf.length) return undefined;
  if (buf.readUInt16LE(indexOffset) !== 0) return undefined;
  const tokens: string[] = [];
  let expected = 0;
  for (let i = 0; i < TOKEN_COUNT; i++) {
    if (buf.readUInt16LE(indexOffset + 2 * i) !== expected) return undefined;
    const start = tableOffset + expected;
    const len = tokenLength(buf, start);
    if (len < 0) return undefined;
    tokens.push(buf.toString('latin1', start, start + len));
    expected += len + 1;
    if (expected > 0xffff + 1) return undefined;
  }
  const tableEnd = tableOffset + expected;
  // The index follows the table after .balign 8 (4 on 32-bit builds): nothing else in between.
  if (indexOffset < tableEnd || indexOffset - tableEnd >= 8) return undefined;
  return { tableOffset, indexOffset, tableEnd, tokens };
}

/**
 * Validate a token table around a hit of DIGIT_TOKENS at `digitsOffset` in `buf`. `baseAlign` is the
 * guest address of buffer offset 0 modulo 8, so alignment is judged in the guest's terms.
 */
export function tokenTableAtDigits(buf: Buffer, digitsOffset: number, baseAlign = 0): TokenTable | undefined {
  // Walk the tokens from '0' (0x30) to 0xff to find the end of the table.
  let p = digitsOffset;
  for (let t = FIRST_DIGIT; t < TOKEN_COUNT; t++) {
    const len = tokenLength(buf, p);
    if (len < 0) return undefined;
    p += len + 1;
  }
  for (const align of [8, 4]) {
    const indexOffset = alignUp(p + baseAlign, align) - baseAlign;
    if (indexOffset + TOKEN_INDEX_SIZE > buf.length) continue;
    const digitIndex = buf.readUInt16LE(indexOffset + 2 * FIRST_DIGIT);
    const found = checkTable(buf, digitsOffset - digitIndex, indexOffset);
    if (found && found.tableEnd === p) return found;
  }
  return undefined;
}

/**
 * Validate a token table whose index starts at `indexOffset` (the fallback search, for kernels whose
 * symbols lack some digit). The last token ends just before the index, after < 8 bytes of zero padding.
 */
export function tokenTableAtIndex(buf: Buffer, indexOffset: number): TokenTable | undefined {
  if (indexOffset < 2 || indexOffset + TOKEN_INDEX_SIZE > buf.length) return undefined;
  if (buf.readUInt16LE(indexOffset) !== 0) return undefined;
  const lastIndex = buf.readUInt16LE(indexOffset + 2 * (TOKEN_COUNT - 1));
  for (let pad = 0; pad < 8 && indexOffset - pad >= 2; pad++) {
    const end = indexOffset - pad; // candidate end of the table: bytes [end, indexOffset) are padding
    if (pad > 0 && buf[end] !== 0) break;
    if (buf[end - 1] !== 0) continue;
    let s = end - 2;
    while (s >= 0 && buf[s] !== 0 && end - 1 - s <= MAX_TOKEN_LENGTH) s--;
    const found = checkTable(buf, s + 1 - lastIndex, indexOffset);
    if (found && found.tableEnd === end) return found;
  }
  return undefined;
}

/** Cheap pre-filter for the fallback scan: do 16 u16 at `wordIndex` start like a token index? */
export function looksLikeTokenIndex(view: Uint16Array, wordIndex: number): boolean {
  if (view[wordIndex] !== 0 || wordIndex + 16 > view.length) return false;
  let prev = 0;
  for (let i = 1; i < 16; i++) {
    const v = view[wordIndex + i];
    if (v <= prev || v - prev > MAX_TOKEN_LENGTH + 1) return false;
    prev = v;
  }
  return true;
}
