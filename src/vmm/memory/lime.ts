// LiME dumps: a chain of 32-byte range headers, each followed by the range's bytes.
//   u32 magic 0x4C694D45 ("EMiL" on disk), u32 version (1), u64 s_addr, u64 e_addr (inclusive), u8[8] reserved
// The chain is untrusted: every header is checked, the count is bounded, and ranges must not overlap.

import { VigilError } from '../../util/errors.js';
import { readUpTo } from './fileio.js';
import { type Segment, hex, normalizeSegments } from './segments.js';

export const LIME_MAGIC = 0x4c694d45;
const HEADER = 32;
const MAX_RANGES = 1 << 16;
const MAX_PHYS = 2n ** 52n;

/** Walk the header chain of a LiME file open at `fd` and return its ranges as segments. */
export function readLime(fd: number, fileSize: number, path: string): Segment[] {
  const out: Segment[] = [];
  const size = BigInt(fileSize);
  let at = 0n;
  while (at < size) {
    const where = `${path}: LiME header ${out.length} at file offset ${hex(at)}`;
    if (out.length >= MAX_RANGES)
      throw new VigilError('vmm', 'bound', `${path}: more than ${MAX_RANGES} LiME ranges`);
    if (at + BigInt(HEADER) > size) throw new VigilError('vmm', 'malformed', `${where} is truncated`);
    const h = readUpTo(fd, HEADER, Number(at));
    const magic = h.readUInt32LE(0);
    if (magic !== LIME_MAGIC) {
      throw new VigilError('vmm', 'malformed', `${where}: bad magic ${hex(magic)} (broken header chain)`);
    }
    const version = h.readUInt32LE(4);
    if (version !== 1)
      throw new VigilError('vmm', 'unsupported', `${where}: LiME version ${version}, want 1`);
    const start = h.readBigUInt64LE(8);
    const last = h.readBigUInt64LE(16);
    if (last < start || last >= MAX_PHYS) {
      throw new VigilError('vmm', 'malformed', `${where}: bad range ${hex(start)}-${hex(last)}`);
    }
    const length = last - start + 1n;
    const data = at + BigInt(HEADER);
    if (data + length > size) {
      throw new VigilError(
        'vmm',
        'malformed',
        `truncated dump: segment ${hex(start)}-${hex(last)} ends past end of file (${where})`,
      );
    }
    out.push({ start, size: length, offset: data });
    at = data + length;
  }
  if (out.length === 0) throw new VigilError('vmm', 'malformed', `${path}: LiME file has no ranges`);
  return normalizeSegments(out);
}
