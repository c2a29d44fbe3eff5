// The kernel image's sections, from the linker's boundary symbols (arch/x86/kernel/vmlinux.lds.S), and
// a hash of kernel text. Text changes at boot (alternatives, static calls, jump labels) and at run time
// (ftrace, kprobes, live patches): the hash is for noticing change over time, not for matching a vendor's
// vmlinux.
import { createHash } from 'node:crypto';
import type { KernelAccess } from '../modules/access.js';
import { VigilError } from '../../../util/errors.js';

export interface KernelSection {
  name: 'text' | 'rodata' | 'data' | 'init' | 'bss';
  start: bigint;
  end: bigint;
  startSymbol: string;
  endSymbol: string;
}

const SECTIONS: readonly [KernelSection['name'], string, string][] = [
  ['text', '_stext', '_etext'],
  ['rodata', '__start_rodata', '__end_rodata'],
  ['data', '_sdata', '_edata'],
  ['init', '__init_begin', '__init_end'],
  ['bss', '__bss_start', '__bss_stop'],
];

/** Sections whose two boundary symbols exist and are in order. */
export function kernelSections(kernel: KernelAccess): KernelSection[] {
  const out: KernelSection[] = [];
  for (const [name, startSymbol, endSymbol] of SECTIONS) {
    const start = kernel.symbols.address(startSymbol);
    const end = kernel.symbols.address(endSymbol);
    if (start !== undefined && end !== undefined && end > start)
      out.push({ name, start, end, startSymbol, endSymbol });
  }
  return out;
}

/** The kernel text range [_stext, _etext): where every syscall and exception handler must point. */
export function kernelTextRange(kernel: KernelAccess): { start: bigint; end: bigint } {
  const s = kernelSections(kernel).find((x) => x.name === 'text');
  if (!s) throw new VigilError('os', 'not-found', 'kernel text boundaries (_stext/_etext) not found');
  return { start: s.start, end: s.end };
}

export interface RangeHash {
  start: bigint;
  end: bigint;
  bytes: number;
  /** Hex SHA-256 over the range; unreadable pages hash as zeros and are counted. */
  sha256: string;
  unreadablePages: number;
  ms: number;
}

/** Largest range hashed: kernel text is ~15 MiB on a distribution kernel. */
export const MAX_HASH_RANGE = 256n << 20n;
const CHUNK = 2n << 20n;
const PAGE = 4096n;

/** SHA-256 over kernel virtual memory [start, end), read through the kernel page tables in 2 MiB chunks. */
export function hashKernelRange(kernel: KernelAccess, start: bigint, end: bigint): RangeHash {
  if (end <= start || end - start > MAX_HASH_RANGE) {
    throw new VigilError(
      'os',
      'bound',
      `range 0x${start.toString(16)}..0x${end.toString(16)} is not hashable`,
    );
  }
  const t0 = performance.now();
  const h = createHash('sha256');
  let unreadablePages = 0;
  for (let at = start; at < end;) {
    const toBoundary = CHUNK - (at % CHUNK);
    const len = end - at < toBoundary ? end - at : toBoundary;
    const n = Number(len);
    const buf = kernel.space.tryRead(at, n);
    if (buf) {
      h.update(buf);
    } else {
      // Somewhere in this chunk a page is not mapped: go page by page so the rest still counts.
      for (let p = at; p < at + len;) {
        const step = PAGE - (p % PAGE) < at + len - p ? PAGE - (p % PAGE) : at + len - p;
        const page = kernel.space.tryRead(p, Number(step));
        if (page) h.update(page);
        else {
          h.update(Buffer.alloc(Number(step)));
          unreadablePages++;
        }
        p += step;
      }
    }
    at += len;
  }
  if (unreadablePages > 0) {
    kernel.issues.add('kernel-text', 'unmapped', `${unreadablePages} pages unreadable while hashing`);
  }
  return {
    start,
    end,
    bytes: Number(end - start),
    sha256: h.digest('hex'),
    unreadablePages,
    ms: performance.now() - t0,
  };
}

/** SHA-256 of kernel text, _stext.._etext. */
export function hashKernelText(kernel: KernelAccess): RangeHash {
  const { start, end } = kernelTextRange(kernel);
  return hashKernelRange(kernel, start, end);
}
