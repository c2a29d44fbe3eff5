// GDB remote serial protocol framing: `$payload#cs` where cs is the payload's byte sum mod 256 in two hex
// digits. Binary payloads escape `#`, `$`, `}` and `*` as `}` followed by the byte xor 0x20; replies may
// be run-length encoded as `X*n` (the byte X repeated n-29 more times). Pure functions, no I/O.

import { VigilError } from '../../util/errors.js';

const DOLLAR = 0x24;
const HASH = 0x23;
const ESCAPE = 0x7d;
const STAR = 0x2a;

/** Sum of bytes modulo 256. */
export function checksum(data: Buffer): number {
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum = (sum + data[i]) & 0xff;
  return sum;
}

/** Escape the bytes that cannot appear raw inside a packet. */
export function escapeBinary(data: Buffer): Buffer {
  let extra = 0;
  for (let i = 0; i < data.length; i++) if (needsEscape(data[i])) extra++;
  if (extra === 0) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i];
    if (needsEscape(b)) {
      out[o++] = ESCAPE;
      out[o++] = b ^ 0x20;
    } else {
      out[o++] = b;
    }
  }
  return out;
}

function needsEscape(b: number): boolean {
  return b === DOLLAR || b === HASH || b === ESCAPE || b === STAR;
}

/** Frame a payload: `$` + escaped payload + `#` + checksum. Strings are taken as latin1 bytes. */
export function encodePacket(payload: Buffer | string): Buffer {
  const body = escapeBinary(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload);
  const out = Buffer.allocUnsafe(body.length + 4);
  out[0] = DOLLAR;
  body.copy(out, 1);
  out[body.length + 1] = HASH;
  out.write(checksum(body).toString(16).padStart(2, '0'), body.length + 2, 'latin1');
  return out;
}

/**
 * Decode a packet body as received between `$` and `#`: expand run-length encoding and undo `}` escapes.
 * A run repeats the previous decoded byte. Throws VigilError('vmm', 'malformed') on a dangling escape, a
 * run with nothing to repeat or a count outside the spec's printable range, and 'bound' past `maxBytes`.
 */
export function decodeBody(body: Buffer, maxBytes = 16 * 1024 * 1024): Buffer {
  // Fast path: most replies (hex) carry neither escapes nor runs.
  if (body.indexOf(ESCAPE) < 0 && body.indexOf(STAR) < 0) return body;
  const parts: Buffer[] = [];
  let out = Buffer.allocUnsafe(Math.min(Math.max(body.length * 2, 64), maxBytes));
  let o = 0;
  let total = 0;
  const put = (b: number, n: number): void => {
    if (total + n > maxBytes) {
      throw new VigilError('vmm', 'bound', `GDB packet decodes to more than ${maxBytes} bytes`);
    }
    for (let k = 0; k < n; k++) {
      if (o === out.length) {
        parts.push(out);
        out = Buffer.allocUnsafe(Math.min(out.length * 2, maxBytes));
        o = 0;
      }
      out[o++] = b;
    }
    total += n;
  };
  let last = -1;
  for (let i = 0; i < body.length; i++) {
    const b = body[i];
    if (b === ESCAPE) {
      if (i + 1 >= body.length) throw new VigilError('vmm', 'malformed', 'GDB packet ends inside an escape');
      last = body[++i] ^ 0x20;
      put(last, 1);
    } else if (b === STAR) {
      if (last < 0) throw new VigilError('vmm', 'malformed', 'GDB run-length code with nothing to repeat');
      if (i + 1 >= body.length) throw new VigilError('vmm', 'malformed', 'GDB packet ends inside a run');
      const count = body[++i];
      if (count < 32 || count > 126 || count === DOLLAR || count === HASH) {
        throw new VigilError(
          'vmm',
          'malformed',
          `GDB run-length count byte 0x${count.toString(16)} is invalid`,
        );
      }
      put(last, count - 29);
    } else {
      last = b;
      put(b, 1);
    }
  }
  parts.push(out.subarray(0, o));
  return parts.length === 1 ? parts[0] : Buffer.concat(parts, total);
}

/** Run-length encode (what a stub may do to its replies); used to build test input. */
export function encodeRle(data: Buffer): Buffer {
  const out: number[] = [];
  for (let i = 0; i < data.length;) {
    const b = data[i];
    let run = 1;
    while (i + run < data.length && data[i + run] === b && run < 98) run++;
    // A run of n copies is the byte then `*` and chr(n-1+29); counts giving `#` or `$` are not allowed.
    let extra = run - 1;
    if (extra + 29 === HASH || extra + 29 === DOLLAR) extra = 5;
    if (extra >= 3) {
      out.push(b, STAR, extra + 29);
      i += extra + 1;
    } else {
      out.push(b);
      i += 1;
    }
  }
  return Buffer.from(out);
}

export type Frame =
  | { type: 'ack' }
  | { type: 'nack' }
  | { type: 'packet'; payload: Buffer; checksumOk: boolean }
  | { type: 'notification'; payload: Buffer; checksumOk: boolean };

/**
 * Incremental receiver: feed bytes as they arrive, get acks, nacks and packets back. Bytes outside a
 * packet other than `+`/`-` are skipped (line noise, a stub's stray output). A packet body longer than
 * `maxPacketBytes` throws VigilError('vmm', 'bound').
 */
export class FrameReader {
  readonly maxPacketBytes: number;
  #state: 'idle' | 'body' | 'cs1' | 'cs2' = 'idle';
  #kind: 'packet' | 'notification' = 'packet';
  #parts: Buffer[] = [];
  #bodyBytes = 0;
  #cs = '';

  constructor(maxPacketBytes = 4 * 1024 * 1024) {
    this.maxPacketBytes = maxPacketBytes;
  }

  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.#state === 'idle') {
        const b = chunk[i++];
        if (b === 0x2b) frames.push({ type: 'ack' });
        else if (b === 0x2d) frames.push({ type: 'nack' });
        else if (b === DOLLAR || b === 0x25) {
          this.#kind = b === DOLLAR ? 'packet' : 'notification';
          this.#state = 'body';
          this.#parts = [];
          this.#bodyBytes = 0;
        }
      } else if (this.#state === 'body') {
        const end = chunk.indexOf(HASH, i);
        const stop = end < 0 ? chunk.length : end;
        if (this.#bodyBytes + (stop - i) > this.maxPacketBytes) {
          this.#state = 'idle';
          this.#parts = [];
          throw new VigilError('vmm', 'bound', `GDB packet longer than ${this.maxPacketBytes} bytes`);
        }
        if (stop > i) {
          this.#parts.push(Buffer.from(chunk.subarray(i, stop)));
          this.#bodyBytes += stop - i;
        }
        i = stop;
        if (end >= 0) {
          i++;
          this.#state = 'cs1';
          this.#cs = '';
        }
      } else {
        this.#cs += String.fromCharCode(chunk[i++]);
        if (this.#state === 'cs1') {
          this.#state = 'cs2';
          continue;
        }
        this.#state = 'idle';
        const raw = this.#parts.length === 1 ? this.#parts[0] : Buffer.concat(this.#parts, this.#bodyBytes);
        this.#parts = [];
        const expected = /^[0-9a-fA-F]{2}$/.test(this.#cs) ? parseInt(this.#cs, 16) : -1;
        const checksumOk = expected === checksum(raw);
        frames.push({ type: this.#kind, payload: checksumOk ? decodeBody(raw) : raw, checksumOk });
      }
    }
    return frames;
  }
}

// ---- hex helpers ---------------------------------------------------------------------------------------

const HEX = /^[0-9a-fA-F]*$/;

/** Decode an even-length hex string; throws malformed otherwise. */
export function fromHex(hex: string, what = 'hex data'): Buffer {
  if (hex.length % 2 !== 0 || !HEX.test(hex)) {
    throw new VigilError('vmm', 'malformed', `GDB ${what} is not even-length hex: "${hex.slice(0, 40)}"`);
  }
  return Buffer.from(hex, 'hex');
}

export function toHex(data: Buffer): string {
  return data.toString('hex');
}

/** Unsigned little-endian integer of any width (register contents are in target byte order). */
export function leToBigInt(data: Buffer): bigint {
  let v = 0n;
  for (let i = data.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[i]);
  return v;
}

/** A GDB error reply: "E" and two hex digits (or "E." and text, gdb's newer form). */
export function isErrorReply(reply: string): boolean {
  return /^E[0-9a-fA-F]{2}$/.test(reply) || reply.startsWith('E.');
}
