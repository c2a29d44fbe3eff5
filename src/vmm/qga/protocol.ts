// The wire format of qemu-guest-agent as the host reads it: newline-delimited JSON replies, and a 0xFF byte
// the agent sends ahead of a guest-sync-delimited reply so that a client can drop whatever stale bytes came
// before it. The agent runs inside the guest and its replies are attacker-controlled, so the reader keeps
// bounded memory whatever arrives: JSON strings beyond their caps are cut short (and the line marked
// truncated; base64 output is the only bulky thing the agent sends), and a line whose structure (everything
// outside strings) exceeds its cap is dropped as a whole.

/** The byte that precedes a guest-sync-delimited reply; it also resets the reader's line. */
export const SYNC_DELIMITER = 0xff;

export interface ReaderLimits {
  /** Bytes kept of any one JSON string (a cut never splits an escape sequence). */
  maxString: number;
  /** Bytes kept of all the long strings of one line together (beyond their first 64 bytes). */
  maxStrings: number;
  /**
   * Bytes of one line's structure: everything outside strings, and the first 64 bytes of every string, so
   * that keys are never cut (a line beyond this is dropped whole, never silently changed).
   */
  maxStructure: number;
}

export type ReaderOutput =
  /** A complete line; `truncated` when one of its strings was cut to the limits. */
  | { kind: 'line'; text: string; truncated: boolean }
  /** A line dropped because its structure exceeded `maxStructure`; `bytes` counts what arrived of it. */
  | { kind: 'oversized'; bytes: number }
  /** A 0xFF sync delimiter (any partial line before it was discarded). */
  | { kind: 'delimiter' };

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;
const LETTER_U = 0x75;
/** Room a cut needs for the longest escape sequence (\uXXXX). */
const ESCAPE_ROOM = 6;
/** Bytes of every string that count as structure rather than against `maxStrings`. */
const SHORT_STRING = 64;

export const DEFAULT_READER_LIMITS: ReaderLimits = {
  maxString: 64 * 1024,
  maxStrings: 1 << 20,
  maxStructure: 64 * 1024,
};

export class ReplyReader {
  limits: ReaderLimits;
  #parts: Buffer[] = [];
  #kept = 0;
  #structure = 0;
  #strings = 0;
  #seen = 0;
  #inString = false;
  #stringKept = 0;
  /** Bytes still to take as part of an escape sequence (after a backslash, after \u). */
  #escape = 0;
  /** Whether the escape sequence being read is kept (its backslash was). */
  #escapeKept = false;
  #dropping = false;
  #truncated = false;
  #oversized = false;

  constructor(limits: ReaderLimits = DEFAULT_READER_LIMITS) {
    this.limits = limits;
  }

  /** Bytes held for the line being read. */
  get pending(): number {
    return this.#kept;
  }

  /** Forget the line being read. */
  reset(): void {
    this.#parts = [];
    this.#kept = 0;
    this.#structure = 0;
    this.#strings = 0;
    this.#seen = 0;
    this.#inString = false;
    this.#stringKept = 0;
    this.#escape = 0;
    this.#escapeKept = false;
    this.#dropping = false;
    this.#truncated = false;
    this.#oversized = false;
  }

  push(chunk: Buffer): ReaderOutput[] {
    const out: ReaderOutput[] = [];
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart >= 0 && end > runStart) this.#parts.push(Buffer.from(chunk.subarray(runStart, end)));
      runStart = -1;
    };
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (b === NEWLINE || b === SYNC_DELIMITER) {
        flush(i);
        if (b === NEWLINE) out.push(this.#endLine());
        else {
          this.reset();
          out.push({ kind: 'delimiter' });
        }
        continue;
      }
      if (this.#inLongString()) {
        // Bulk path for the bulky part of long strings (base64 output): up to the next byte that matters.
        const end = nextSpecial(chunk, i);
        if (end > i) {
          const n = end - i;
          const take = this.#dropping ? 0 : this.#takeLong(n);
          if (take > 0 && runStart < 0) runStart = i;
          this.#kept += take;
          this.#seen += n;
          if (take < n) flush(i + take);
          i = end - 1;
          continue;
        }
      }
      this.#seen++;
      if (this.#keep(b)) {
        if (runStart < 0) runStart = i;
        this.#kept++;
      } else if (this.#oversized) {
        runStart = -1; // what was kept of this line is gone already
      } else {
        flush(i);
      }
    }
    flush(chunk.length);
    return out;
  }

  /** Inside a string, past its short prefix (or cutting it), not within an escape sequence. */
  #inLongString(): boolean {
    return (
      this.#inString &&
      this.#escape === 0 &&
      !this.#oversized &&
      (this.#dropping || this.#stringKept >= SHORT_STRING)
    );
  }

  /** Of `n` plain bytes of a long string, how many are kept; starts cutting when not all of them are. */
  #takeLong(n: number): number {
    const take = Math.max(
      0,
      Math.min(n, this.limits.maxString - this.#stringKept, this.limits.maxStrings - this.#strings),
    );
    this.#stringKept += take;
    this.#strings += take;
    if (take < n) {
      this.#dropping = true;
      this.#truncated = true;
    }
    return take;
  }

  /** Whether byte `b` of the current line is kept; updates the string and escape state. */
  #keep(b: number): boolean {
    if (this.#oversized) return false;
    if (!this.#inString) {
      if (b === QUOTE) {
        this.#inString = true;
        this.#stringKept = 0;
        this.#dropping = false;
      }
      return this.#keepStructure();
    }
    if (this.#escape > 0) {
      if (this.#escape === 1 && this.#escapeKept && b === LETTER_U) this.#escape = 5;
      this.#escape--;
      return this.#escapeKept && this.#keepString();
    }
    if (b === QUOTE) {
      // The closing quote is structure, kept whatever was cut before it, so that a cut string still parses.
      this.#inString = false;
      return this.#keepStructure();
    }
    if (!this.#dropping) {
      const room = b === BACKSLASH ? ESCAPE_ROOM : 1;
      const long = this.#stringKept + room > SHORT_STRING;
      if (
        this.#stringKept + room > this.limits.maxString ||
        (long && this.#strings + room > this.limits.maxStrings)
      ) {
        this.#dropping = true;
        this.#truncated = true;
      }
    }
    if (b === BACKSLASH) {
      this.#escape = 1;
      this.#escapeKept = !this.#dropping;
    }
    if (this.#dropping) return false;
    return this.#keepString();
  }

  /** Short strings (keys, small values) count as structure: they are never cut, only the line dropped. */
  #keepString(): boolean {
    if (++this.#stringKept <= SHORT_STRING) return this.#keepStructure();
    this.#strings++;
    return true;
  }

  #keepStructure(): boolean {
    if (++this.#structure > this.limits.maxStructure) {
      this.#oversized = true;
      this.#parts = [];
      this.#kept = 0;
      return false;
    }
    return true;
  }

  #endLine(): ReaderOutput {
    const result: ReaderOutput = this.#oversized
      ? { kind: 'oversized', bytes: this.#seen }
      : {
          kind: 'line',
          text: Buffer.concat(this.#parts, this.#kept).toString('utf8'),
          truncated: this.#truncated,
        };
    this.reset();
    return result;
  }
}

/** The first quote, backslash, newline or 0xFF at or after `from` (the chunk's length when none). */
function nextSpecial(chunk: Buffer, from: number): number {
  let end = chunk.length;
  for (const b of [QUOTE, BACKSLASH, NEWLINE, SYNC_DELIMITER]) {
    const at = chunk.indexOf(b, from);
    if (at >= 0 && at < end) end = at;
  }
  return end;
}

/** Characters of base64 that encode `bytes` bytes. */
export const base64Length = (bytes: number): number => 4 * Math.ceil(bytes / 3);

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Decode base64 the agent sent; undefined when it is not base64 (Buffer.from would skip bad characters). */
export function decodeBase64(text: string): Buffer | undefined {
  return BASE64.test(text) ? Buffer.from(text, 'base64') : undefined;
}
