// Find the kernel's own BTF in guest-physical memory. vmlinux carries it in its .BTF section
// (__start_BTF..__stop_BTF) and the kernel image is physically contiguous, so the blob is too. Other
// hits are module BTF (split BTF: its type ids continue the kernel's, so it does not parse alone),
// copies of the header inside `struct btf` objects, and stale copies: every candidate is validated by
// a full parse, the largest first, and must define `struct task_struct`.
import { VigilError } from '../../../util/errors.js';
import type { PhysicalMemory } from '../../../vmm/types.js';
import { BTF_HEADER_MIN, parseBtfHeader, type BtfHeader } from './parse.js';
import { TypeRegistry } from './registry.js';

export interface BtfCandidate {
  /** Guest-physical address of the header. */
  readonly paddr: bigint;
  readonly header: BtfHeader;
}

export interface FoundBtf {
  readonly paddr: bigint;
  readonly blob: Buffer;
  /** The parsed blob (parsing is part of validation, so it is handed over rather than redone). */
  readonly types: TypeRegistry;
  /** Headers that passed the header checks during the scan. */
  readonly candidates: number;
}

export interface FindBtfOptions {
  /** Bytes per read while scanning (default 1 MiB). */
  readonly chunkSize?: number;
  /** Try this address first, e.g. __start_BTF translated through kallsyms; the scan is skipped if it holds vmlinux BTF. */
  readonly expectPaddr?: bigint;
  /** Plausible headers kept (the largest); a hostile guest can plant many. */
  readonly maxCandidates?: number;
  /** Full parses attempted at most (each reads and parses a whole blob); cheap rejections are free. */
  readonly maxAttempts?: number;
  /** Bytes read for full parses at most: a header can claim ~80 MiB. */
  readonly maxBytes?: number;
}

/** Magic 0xeB9F little-endian, version 1, flags 0. */
const MAGIC = Buffer.from([0x9f, 0xeb, 0x01, 0x00]);
/** 1 MiB reads stay in cache while indexOf runs over them: 256 MiB in ~50 ms here, ~90 ms with 16 MiB. */
const DEFAULT_CHUNK = 1 << 20;

/** Largest claimed blobs first, then lowest address: the order candidates are tried in. */
function bySize(a: BtfCandidate, b: BtfCandidate): number {
  const d = b.header.typeLen + b.header.strLen - (a.header.typeLen + a.header.strLen);
  return d !== 0 ? d : a.paddr < b.paddr ? -1 : a.paddr > b.paddr ? 1 : 0;
}

/**
 * Plausible BTF headers in guest-physical RAM, in address order. Past `maxCandidates`, only the largest
 * are kept: a guest that plants many small headers cannot push the kernel's out of the list.
 */
export function scanBtfHeaders(mem: PhysicalMemory, options: FindBtfOptions = {}): BtfCandidate[] {
  const chunkSize = Math.max(options.chunkSize ?? DEFAULT_CHUNK, 4096);
  const maxCandidates = Math.max(options.maxCandidates ?? 4096, 1);
  const buf = Buffer.allocUnsafe(chunkSize);
  let out: BtfCandidate[] = [];
  for (const range of mem.ranges) {
    const end = range.start + range.size;
    let at = range.start;
    while (end - at >= BigInt(BTF_HEADER_MIN)) {
      const len = Number(end - at < BigInt(chunkSize) ? end - at : BigInt(chunkSize));
      const chunk = mem.read(at, len, buf).subarray(0, len);
      // Headers starting in [0, len - 23) are complete here; the next chunk starts where they stop.
      const limit = len - (BTF_HEADER_MIN - 1);
      for (let p = chunk.indexOf(MAGIC); p >= 0 && p < limit; p = chunk.indexOf(MAGIC, p + 1)) {
        try {
          out.push({ paddr: at + BigInt(p), header: parseBtfHeader(chunk, p) });
        } catch {
          continue; // Not a header: the magic bytes occur by chance.
        }
        if (out.length >= 2 * maxCandidates) out = out.sort(bySize).slice(0, maxCandidates);
      }
      at += BigInt(limit);
    }
  }
  if (out.length > maxCandidates) out = out.sort(bySize).slice(0, maxCandidates);
  return out.sort((a, b) => (a.paddr < b.paddr ? -1 : a.paddr > b.paddr ? 1 : 0));
}

/**
 * Parse the blob at a candidate and keep it only if it is vmlinux BTF. 'skipped' when two one-byte
 * reads (the NULs that open and close the string section) already rule it out.
 */
function tryCandidate(mem: PhysicalMemory, c: BtfCandidate): FoundBtf | 'skipped' | undefined {
  const h = c.header;
  const strStart = c.paddr + BigInt(h.hdrLen + h.strOff);
  if (mem.read(strStart, 1)[0] !== 0 || mem.read(strStart + BigInt(h.strLen - 1), 1)[0] !== 0) {
    return 'skipped';
  }
  // A copy: the snapshot must not change under the parser (a live guest keeps running).
  const blob = Buffer.from(mem.read(c.paddr, h.length));
  let types: TypeRegistry;
  try {
    types = TypeRegistry.fromBlob(blob);
  } catch (e) {
    if (e instanceof VigilError) return undefined;
    throw e;
  }
  if (types.find('struct task_struct') === undefined) return undefined;
  return { paddr: c.paddr, blob, types, candidates: 0 };
}

/**
 * Locate and parse the kernel's BTF: the largest blob that parses on its own and defines
 * `struct task_struct` (ties: the lowest address). Throws VigilError('os', 'not-found').
 */
export function findVmlinuxBtf(mem: PhysicalMemory, options: FindBtfOptions = {}): FoundBtf {
  if (options.expectPaddr !== undefined) {
    try {
      const header = parseBtfHeader(mem.read(options.expectPaddr, BTF_HEADER_MIN));
      const hit = tryCandidate(mem, { paddr: options.expectPaddr, header });
      if (hit && hit !== 'skipped') return { ...hit, candidates: 1 };
    } catch (e) {
      if (!(e instanceof VigilError)) throw e;
    }
  }
  const candidates = scanBtfHeaders(mem, options);
  const maxAttempts = options.maxAttempts ?? 64;
  let bytesLeft = options.maxBytes ?? 1 << 30;
  let attempts = 0;
  for (const c of [...candidates].sort(bySize)) {
    if (attempts >= maxAttempts) break;
    if (c.header.length > bytesLeft) continue;
    const hit = tryCandidate(mem, c);
    if (hit === 'skipped') continue;
    if (hit) return { ...hit, candidates: candidates.length };
    attempts++;
    bytesLeft -= c.header.length;
  }
  throw new VigilError(
    'os',
    'not-found',
    `no vmlinux BTF in guest memory (${candidates.length} BTF headers seen, ${attempts} parsed without success); ` +
      'the kernel may lack CONFIG_DEBUG_INFO_BTF',
  );
}
