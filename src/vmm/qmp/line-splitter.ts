// Splits a byte stream into newline-terminated lines without trusting the peer: a line longer than the cap
// is an error rather than an unbounded buffer, and chunks are only concatenated once a line is complete.

import { VigilError } from '../../util/errors.js';

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

export class LineSplitter {
  readonly maxLineBytes: number;
  #parts: Buffer[] = [];
  #partBytes = 0;

  constructor(maxLineBytes = DEFAULT_MAX_LINE_BYTES) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new VigilError('vmm', 'usage', `line cap must be a positive integer, got ${maxLineBytes}`);
    }
    this.maxLineBytes = maxLineBytes;
  }

  /** Bytes held for a line not yet terminated. */
  get pending(): number {
    return this.#partBytes;
  }

  /**
   * Feed one chunk; returns the complete lines it finishes (without the newline, a trailing CR removed).
   * Throws VigilError('vmm', 'bound') when a line exceeds the cap; the splitter is then reset.
   */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      this.#checkCap(piece.length);
      let line: Buffer;
      if (this.#parts.length === 0) {
        line = piece;
      } else {
        this.#parts.push(piece);
        line = Buffer.concat(this.#parts, this.#partBytes + piece.length);
        this.#parts = [];
        this.#partBytes = 0;
      }
      const end = line.length > 0 && line[line.length - 1] === 0x0d ? line.length - 1 : line.length;
      lines.push(line.toString('utf8', 0, end));
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#checkCap(rest.length);
      // Copy: the caller may reuse its chunk buffer.
      this.#parts.push(Buffer.from(rest));
      this.#partBytes += rest.length;
    }
    return lines;
  }

  reset(): void {
    this.#parts = [];
    this.#partBytes = 0;
  }

  #checkCap(more: number): void {
    if (this.#partBytes + more > this.maxLineBytes) {
      const total = this.#partBytes + more;
      this.reset();
      throw new VigilError('vmm', 'bound', `line of more than ${this.maxLineBytes} bytes (${total} so far)`);
    }
  }
}
