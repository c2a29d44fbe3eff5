// Where the x86-64 kernel really is, from guest-physical memory and the kernel's own symbols alone.
//
// The kernel image is mapped at __START_KERNEL_map (0xffffffff80000000) + an offset, and
// __pa_symbol(x) = x - __START_KERNEL_map + phys_base (modulo 2^64: phys_base "wraps" when the virtual
// KASLR offset exceeds the physical one). One symbol whose physical address we know (an anchor, e.g.
// linux_banner found by its text) gives phys_base; the kernel's own page tables (init_top_pgt) then
// confirm it: they must map _text's virtual address to _text's physical address. Everything else —
// page_offset_base, vmalloc_base, vmemmap_base, the paging depth, per-CPU offsets — is read from the
// kernel's variables at their physical addresses.

import { VigilError } from '../../util/errors.js';
import type { PhysicalMemory } from '../../vmm/types.js';
import type { SymbolTable } from './kallsyms/symbol-table.js';

/** __START_KERNEL_map: the base of the kernel image mapping. */
export const START_KERNEL_MAP = 0xffffffff80000000n;
/** __START_KERNEL: where _text is linked (CONFIG_PHYSICAL_START 0x1000000, the default and Debian's). */
export const START_KERNEL = 0xffffffff81000000n;
/** CONFIG_PHYSICAL_ALIGN's minimum on x86-64: the kernel is placed on 2 MiB boundaries. */
export const KERNEL_ALIGN = 0x200000n;
/** NR_CPUS's upper bound on x86-64 (CONFIG_MAXSMP). */
export const MAX_CPUS = 8192;

const U64 = (1n << 64n) - 1n;
const PFN_MASK = 0x000ffffffffff000n;
const PRESENT = 1n;
const PAGE_SIZE_BIT = 0x80n;
const SIZE_2M = 0x200000n;

/** Defaults of the dynamic memory layout (arch/x86/include/asm/page_64_types.h, pgtable_64_types.h). */
const LAYOUT_DEFAULTS = {
  4: {
    pageOffsetBase: 0xffff888000000000n,
    vmallocBase: 0xffffc90000000000n,
    vmemmapBase: 0xffffea0000000000n,
  },
  5: {
    pageOffsetBase: 0xff11000000000000n,
    vmallocBase: 0xffa0000000000000n,
    vmemmapBase: 0xffd4000000000000n,
  },
} as const;

/** A kernel symbol whose bytes were found at a physical address. */
export interface KernelAnchor {
  symbol: string;
  paddr: bigint;
}

export interface KaslrInfo {
  /** Virtual KASLR offset: _text's address minus __START_KERNEL (kaslr_offset() in the kernel). */
  virtualOffset: bigint;
  /** _text's virtual address. */
  textVirt: bigint;
  /** _text's physical address (the physical load address). */
  physicalBase: bigint;
  /** The kernel's phys_base: paddr = vaddr - __START_KERNEL_map + phys_base (mod 2^64). */
  physBase: bigint;
  pageOffsetBase: bigint;
  vmallocBase: bigint;
  vmemmapBase: bigint;
  /** Physical address of init_top_pgt (swapper_pg_dir): the kernel page-table root without a CR3. */
  kernelPgd: bigint;
  la57: boolean;
  /** __per_cpu_offset[0 … nr_cpu_ids-1]. */
  perCpuOffsets: bigint[];
  /** The anchor the page tables confirmed. */
  anchor: KernelAnchor;
  /** Values that were not in the kernel and took their defaults, and similar remarks. */
  notes: string[];
}

/** Physical address of a kernel-image virtual address. */
export function kernelVirtToPhys(physBase: bigint, va: bigint): bigint {
  return (va - START_KERNEL_MAP + physBase) & U64;
}

/** Kernel-image virtual address of a physical address. */
export function kernelPhysToVirt(physBase: bigint, pa: bigint): bigint {
  return (pa + START_KERNEL_MAP - physBase) & U64;
}

/** Physical address of a direct-map (page_offset_base) virtual address. */
export function directMapToPhys(pageOffsetBase: bigint, va: bigint): bigint {
  return (va - pageOffsetBase) & U64;
}

const readU64 = (mem: PhysicalMemory, pa: bigint): bigint => mem.read(pa, 8).readBigUInt64LE(0);
const readU32 = (mem: PhysicalMemory, pa: bigint): number => mem.read(pa, 4).readUInt32LE(0);

function inRam(mem: PhysicalMemory, pa: bigint, length: number): boolean {
  return mem.ranges.some((r) => pa >= r.start && pa + BigInt(length) <= r.start + r.size);
}

/**
 * The virtual address at which a kernel page-table root maps `pa` inside the kernel image region
 * (__START_KERNEL_map … +1 GiB), or undefined. Works on 2 MiB mappings and on ones split into 4 KiB pages.
 */
export function kernelImageVirtOf(
  mem: PhysicalMemory,
  pgd: bigint,
  pa: bigint,
  levels: 4 | 5,
): bigint | undefined {
  const entry = (table: bigint, index: bigint): bigint | undefined => {
    if (!inRam(mem, table, 4096)) return undefined;
    const e = readU64(mem, table + index * 8n);
    return e & PRESENT ? e : undefined;
  };
  let table = pgd;
  // PML5[511] (5-level) → PML4[511] → PDPT[510] cover 0xffffffff80000000 … +1 GiB.
  const path = levels === 5 ? [511n, 511n, 510n] : [511n, 510n];
  for (const index of path) {
    const e = entry(table, index);
    if (e === undefined || e & PAGE_SIZE_BIT) return undefined;
    table = e & PFN_MASK;
  }
  if (!inRam(mem, table, 4096)) return undefined;
  // Frames compared as numbers (physical addresses fit in 52 bits): no BigInt per entry.
  const frameOf = (b: Buffer, i: number): number =>
    (b.readUInt32LE(i * 8 + 4) & 0xfffff) * 0x100000000 + (b.readUInt32LE(i * 8) & 0xfffff000);
  const presentAt = (b: Buffer, i: number): boolean => (b[i * 8] & 1) === 1;
  const paNum = Number(pa);
  const paFrame = paNum - (paNum % 4096);
  const pd = mem.read(table, 4096);
  for (let i = 0; i < 512; i++) {
    if (!presentAt(pd, i)) continue;
    const va2m = START_KERNEL_MAP + BigInt(i) * SIZE_2M;
    if (pd[i * 8] & Number(PAGE_SIZE_BIT)) {
      const base = frameOf(pd, i) - (frameOf(pd, i) % Number(SIZE_2M));
      if (paNum >= base && paNum < base + Number(SIZE_2M)) return va2m + BigInt(paNum - base);
      continue;
    }
    const ptAddr = BigInt(frameOf(pd, i));
    if (!inRam(mem, ptAddr, 4096)) continue;
    const pt = mem.read(ptAddr, 4096);
    for (let j = 0; j < 512; j++)
      if (presentAt(pt, j) && frameOf(pt, j) === paFrame) return va2m + BigInt(j * 4096 + (paNum % 4096));
  }
  return undefined;
}

/** Paging depth the kernel chose, from its variables; undefined when it has none of them (4-level only). */
function declaredLevels(mem: PhysicalMemory, symbols: SymbolTable, physBase: bigint): 4 | 5 | undefined {
  const at = (name: string): bigint | undefined => {
    const va = symbols.address(name);
    return va === undefined ? undefined : kernelVirtToPhys(physBase, va);
  };
  const l5 = at('__pgtable_l5_enabled');
  if (l5 !== undefined) return readU32(mem, l5) !== 0 ? 5 : 4;
  const shift = at('pgdir_shift');
  if (shift !== undefined) return readU32(mem, shift) === 48 ? 5 : 4;
  const p4d = at('ptrs_per_p4d');
  if (p4d !== undefined) return readU32(mem, p4d) === 512 ? 5 : 4;
  return undefined;
}

interface Confirmed {
  anchor: KernelAnchor;
  physBase: bigint;
  kernelPgd: bigint;
  levels: 4 | 5;
}

/** Check one anchor: 2 MiB-aligned load address, and page tables that map _text where it is. */
function confirm(
  mem: PhysicalMemory,
  symbols: SymbolTable,
  anchor: KernelAnchor,
  textVirt: bigint,
  pgdName: string,
): Confirmed | undefined {
  const anchorVirt = symbols.address(anchor.symbol);
  if (anchorVirt === undefined) return undefined;
  const physBase = (anchor.paddr - (anchorVirt - START_KERNEL_MAP)) & U64;
  const textPhys = kernelVirtToPhys(physBase, textVirt);
  if (textPhys % KERNEL_ALIGN !== 0n || !inRam(mem, textPhys, 4096)) return undefined;
  const kernelPgd = kernelVirtToPhys(physBase, symbols.require(pgdName));
  if (!inRam(mem, kernelPgd, 4096)) return undefined;
  const declared = declaredLevels(mem, symbols, physBase);
  const order: (4 | 5)[] = declared === 5 ? [5, 4] : [4, 5];
  for (const levels of order) {
    if (kernelImageVirtOf(mem, kernelPgd, textPhys, levels) !== textVirt) continue;
    if (kernelImageVirtOf(mem, kernelPgd, anchor.paddr, levels) !== anchorVirt) continue;
    return { anchor, physBase, kernelPgd, levels };
  }
  return undefined;
}

/** How far below a known image address the image may start (kernel images are tens of MiB). */
const MAX_IMAGE_SPAN = 256n << 20n;
const BANNER_PREFIX = Buffer.from('Linux version ', 'latin1');

/**
 * Anchors without scanning memory for banners: `inside` is a physical address within the kernel image
 * (the kallsyms tables'). _text is 2 MiB aligned below it, so each aligned candidate is tried and kept
 * if linux_banner's text sits where that placement puts it.
 */
export function imageAnchors(mem: PhysicalMemory, symbols: SymbolTable, inside: bigint): KernelAnchor[] {
  const text = symbols.address('_text') ?? symbols.address('startup_64');
  const banner = symbols.address('linux_banner');
  if (text === undefined || banner === undefined || banner < text) return [];
  const delta = banner - text;
  const out: KernelAnchor[] = [];
  for (
    let textPhys = inside & ~(KERNEL_ALIGN - 1n);
    textPhys >= 0n && inside - textPhys <= MAX_IMAGE_SPAN;
    textPhys -= KERNEL_ALIGN
  ) {
    const paddr = textPhys + delta;
    if (
      inRam(mem, paddr, BANNER_PREFIX.length) &&
      mem.read(paddr, BANNER_PREFIX.length).equals(BANNER_PREFIX)
    )
      out.push({ symbol: 'linux_banner', paddr });
  }
  return out;
}

/** Anchors from the physical addresses of `Linux version …` banners (the symbol linux_banner). */
export function bannerAnchors(paddrs: readonly bigint[]): KernelAnchor[] {
  return paddrs.map((paddr) => ({ symbol: 'linux_banner', paddr }));
}

/**
 * Derive the kernel's placement and memory layout. `anchors` are candidates (several banner copies are
 * usual); the first one the kernel page tables confirm is used.
 */
export function deriveKaslr(
  mem: PhysicalMemory,
  symbols: SymbolTable,
  anchors: KernelAnchor | readonly KernelAnchor[],
): KaslrInfo {
  const list = Array.isArray(anchors) ? anchors : [anchors as KernelAnchor];
  const textVirt = symbols.address('_text') ?? symbols.address('startup_64');
  if (textVirt === undefined) throw new VigilError('os', 'not-found', 'kernel symbols lack _text');
  const pgdName = symbols.has('init_top_pgt') ? 'init_top_pgt' : 'swapper_pg_dir';
  if (!symbols.has(pgdName)) throw new VigilError('os', 'not-found', 'kernel symbols lack init_top_pgt');
  let found: Confirmed | undefined;
  for (const anchor of list.slice(0, 64)) {
    found = confirm(mem, symbols, anchor, textVirt, pgdName);
    if (found) break;
  }
  if (!found)
    throw new VigilError(
      'os',
      'not-found',
      `no anchor (of ${list.length}) places the kernel where its page tables map it`,
    );
  const { physBase, levels } = found;
  const notes: string[] = [];
  const variable = (name: string, fallback: bigint): bigint => {
    const va = symbols.address(name);
    if (va === undefined) {
      notes.push(`${name} not in kallsyms: default 0x${fallback.toString(16)}`);
      return fallback;
    }
    return readU64(mem, kernelVirtToPhys(physBase, va));
  };
  const defaults = LAYOUT_DEFAULTS[levels];
  return {
    virtualOffset: (textVirt - START_KERNEL) & U64,
    textVirt,
    physicalBase: kernelVirtToPhys(physBase, textVirt),
    physBase,
    pageOffsetBase: variable('page_offset_base', defaults.pageOffsetBase),
    vmallocBase: variable('vmalloc_base', defaults.vmallocBase),
    vmemmapBase: variable('vmemmap_base', defaults.vmemmapBase),
    kernelPgd: found.kernelPgd,
    la57: levels === 5,
    perCpuOffsets: perCpuOffsets(mem, symbols, physBase, notes),
    anchor: found.anchor,
    notes,
  };
}

function perCpuOffsets(
  mem: PhysicalMemory,
  symbols: SymbolTable,
  physBase: bigint,
  notes: string[],
): bigint[] {
  const arrayVa = symbols.address('__per_cpu_offset');
  if (arrayVa === undefined) {
    notes.push('__per_cpu_offset not in kallsyms (a uniprocessor kernel?)');
    return [];
  }
  const countVa = symbols.address('nr_cpu_ids');
  const count = countVa === undefined ? 1 : readU32(mem, kernelVirtToPhys(physBase, countVa));
  if (count < 1 || count > MAX_CPUS)
    throw new VigilError('os', 'bound', `nr_cpu_ids is ${count}, outside 1…${MAX_CPUS}`);
  const buf = mem.read(kernelVirtToPhys(physBase, arrayVa), count * 8);
  return Array.from({ length: count }, (_, i) => buf.readBigUInt64LE(i * 8));
}
