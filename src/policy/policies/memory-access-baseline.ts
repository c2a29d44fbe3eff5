// What memory-access keeps in its baseline (hashes of kernel text and rodata per chunk and block, the
// syscall tables, the IDT gates) and reading it back defensively: a stored baseline is input too.
import { createHash } from 'node:crypto';
import type { ImageRange } from '../../os/linux/tables/index.js';
import type { BaselineAccess, JsonValue } from '../baseline.js';

/** Text and rodata are hashed per chunk, and each chunk digested per block to place a change later. */
export const CHUNK_SIZE = 0x10000;
export const BLOCK_SIZE = 0x100;

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * A 32-bit digest (FNV-1a over little-endian 32-bit words) of each BLOCK_SIZE block of `chunk`, packed
 * little-endian: enough to place a change within 256 bytes when only the baseline's digests are known.
 */
export function blockDigests(chunk: Buffer): Buffer {
  const src = chunk.byteOffset % 4 === 0 && chunk.length % 4 === 0 ? chunk : padded(chunk);
  const words = new Uint32Array(src.buffer, src.byteOffset, src.length / 4);
  const perBlock = BLOCK_SIZE / 4;
  const n = Math.ceil(chunk.length / BLOCK_SIZE);
  const out = Buffer.alloc(n * 4);
  for (let blk = 0; blk < n; blk++) {
    let h = 0x811c9dc5;
    const end = Math.min((blk + 1) * perBlock, words.length);
    for (let w = blk * perBlock; w < end; w++) h = Math.imul(h ^ words[w]!, 0x01000193);
    out.writeUInt32LE(h >>> 0, blk * 4);
  }
  return out;
}

function padded(b: Buffer): Buffer {
  const out = Buffer.alloc(Math.ceil(b.length / 4) * 4);
  b.copy(out);
  return out;
}

export interface RangeBaseline {
  start: string;
  end: string;
  chunk: number;
  block: number;
  sha256: string[];
  blocks: string[];
}

export function rangeBaselines(b: BaselineAccess): Record<string, RangeBaseline> | undefined {
  const v = b.get('ranges');
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const out: Record<string, RangeBaseline> = {};
  for (const [name, r] of Object.entries(v)) {
    if (!r || typeof r !== 'object' || Array.isArray(r)) continue;
    const x = r as Record<string, JsonValue>;
    if (
      typeof x.start === 'string' &&
      typeof x.end === 'string' &&
      x.chunk === CHUNK_SIZE &&
      x.block === BLOCK_SIZE &&
      Array.isArray(x.sha256) &&
      x.sha256.every((s) => typeof s === 'string') &&
      Array.isArray(x.blocks) &&
      x.blocks.every((s) => typeof s === 'string')
    ) {
      out[name] = x as unknown as RangeBaseline;
    }
  }
  return out;
}

export const matchesRange = (rb: RangeBaseline | undefined, r: ImageRange): rb is RangeBaseline =>
  rb !== undefined && safeBig(rb.start) === r.start && safeBig(rb.end) === r.end;

export function safeBig(s: unknown): bigint | undefined {
  if (typeof s !== 'string' || !/^(0x[0-9a-f]{1,16}|\d{1,20})$/i.test(s)) return undefined;
  return BigInt(s);
}

export type TableBaseline = Record<string, string[]>;

export function tableBaseline(b: BaselineAccess): TableBaseline | undefined {
  const v = b.get('syscalls');
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const out: TableBaseline = {};
  for (const [name, list] of Object.entries(v)) {
    if (Array.isArray(list) && list.every((x) => typeof x === 'string')) out[name] = list as string[];
  }
  return out;
}

export interface IdtBaseline {
  base: string;
  gates: string[];
}

export function idtBaseline(b: BaselineAccess): IdtBaseline | undefined {
  const v = b.get('idt');
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const x = v as Record<string, JsonValue>;
  if (typeof x.base !== 'string' || !Array.isArray(x.gates) || !x.gates.every((g) => typeof g === 'string')) {
    return undefined;
  }
  return { base: x.base, gates: x.gates as string[] };
}
