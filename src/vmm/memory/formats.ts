// Which kind of memory image a file is, from its first bytes. Formats we know but do not read are named
// in the error, so a user learns what to convert rather than seeing garbage parsed as RAM.

import { VigilError } from '../../util/errors.js';

export type ImageFormat = 'elf-core' | 'lime' | 'raw';

/** Raw images are whole pages of RAM, and no machine boots in less than a megabyte. */
export const RAW_MIN = 1 << 20;
export const RAW_ALIGN = 4096;
/** Bytes of the file sniffFormat wants to see. */
export const SNIFF_BYTES = 4096;

const KNOWN: { magic: Buffer; what: string }[] = [
  {
    magic: Buffer.from('KDUMP   '),
    what: 'a kdump-compressed dump (convert it to ELF with makedumpfile -E)',
  },
  {
    magic: Buffer.from('makedumpfile'),
    what: 'a makedumpfile flattened dump (rearrange it with makedumpfile -R)',
  },
  { magic: Buffer.from('PAGEDU64'), what: 'a Windows crash dump' },
  { magic: Buffer.from('PAGEDUMP'), what: 'a Windows crash dump' },
  { magic: Buffer.from('QEVM'), what: 'a QEMU migration stream, not a memory image' },
  { magic: Buffer.from([0x1f, 0x8b]), what: 'gzip-compressed (decompress it first)' },
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), what: 'xz-compressed (decompress it first)' },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), what: 'zstd-compressed (decompress it first)' },
  { magic: Buffer.from([0x04, 0x22, 0x4d, 0x18]), what: 'lz4-compressed (decompress it first)' },
  { magic: Buffer.from('BZh'), what: 'bzip2-compressed (decompress it first)' },
];

function looksLikeText(head: Buffer): boolean {
  if (head.length === 0) return false;
  for (const b of head) {
    if (!(b === 9 || b === 10 || b === 13 || (b >= 0x20 && b < 0x7f))) return false;
  }
  return true;
}

/** Decide the format of a file of `size` bytes starting with `head` (up to SNIFF_BYTES). */
export function sniffFormat(head: Buffer, size: number, path: string): ImageFormat {
  if (size === 0) throw new VigilError('vmm', 'malformed', `${path} is empty: not a memory dump`);
  if (head.length >= 4 && head.readUInt32BE(0) === 0x7f454c46) return 'elf-core';
  if (head.length >= 4 && head.readUInt32LE(0) === 0x4c694d45) return 'lime';
  for (const k of KNOWN) {
    if (head.length >= k.magic.length && head.subarray(0, k.magic.length).equals(k.magic)) {
      throw new VigilError('vmm', 'unsupported', `${path} is ${k.what}`);
    }
  }
  if (looksLikeText(head))
    throw new VigilError('vmm', 'malformed', `${path} looks like text: not a memory dump`);
  if (size < RAW_MIN || size % RAW_ALIGN !== 0) {
    throw new VigilError(
      'vmm',
      'malformed',
      `${path} is not a memory dump: not ELF or LiME, and as a raw image it would have to be at least ` +
        `1 MiB and a multiple of 4 KiB (it is ${size} bytes)`,
    );
  }
  return 'raw';
}
