// x86-64 IA-32e paging described as data (Intel SDM vol. 3A §4.5): the levels of 4- and 5-level paging,
// what each entry bit means, and how a virtual address splits into table indices. The walker and the
// mapping enumerator read these tables instead of hard-coding a level count.

import { VigilError } from '../../util/errors.js';
import type { PagingMode } from '../types.js';

export type LevelName = 'PML5' | 'PML4' | 'PDPT' | 'PD' | 'PT';

export interface PagingLevel {
  readonly name: LevelName;
  /** Lowest virtual-address bit this level's 9-bit index covers. */
  readonly shift: number;
  /** Whether an entry here can map a page: always at PT, with the PS bit at PDPT (1 GiB) and PD (2 MiB). */
  readonly leaf: 'never' | 'ps' | 'always';
}

export interface PagingDef {
  readonly mode: PagingMode;
  /** Implemented virtual-address bits; bit vaBits-1 is sign-extended through bit 63. */
  readonly vaBits: number;
  /** From the root (CR3) down to the page table. */
  readonly levels: readonly PagingLevel[];
}

const lower: readonly PagingLevel[] = [
  { name: 'PML4', shift: 39, leaf: 'never' }, // PS is reserved here (SDM table 4-15)
  { name: 'PDPT', shift: 30, leaf: 'ps' },
  { name: 'PD', shift: 21, leaf: 'ps' },
  { name: 'PT', shift: 12, leaf: 'always' },
];

export const PAGING: Readonly<Record<PagingMode, PagingDef>> = {
  4: { mode: 4, vaBits: 48, levels: lower },
  5: { mode: 5, vaBits: 57, levels: [{ name: 'PML5', shift: 48, leaf: 'never' }, ...lower] },
};

/** Entry bits (SDM tables 4-14 to 4-20). */
export const PTE = {
  present: 1n << 0n,
  writable: 1n << 1n,
  user: 1n << 2n,
  accessed: 1n << 5n,
  dirty: 1n << 6n,
  /** Page size at PDPT/PD; PAT at PT. */
  ps: 1n << 7n,
  global: 1n << 8n,
  nx: 1n << 63n,
  /** Physical address bits 12..51 (MAXPHYADDR 52). Bits 52..58 are ignored, 59..62 protection keys. */
  addressMask: 0x000f_ffff_ffff_f000n,
} as const;

export const PAGE_SIZE_4K = 0x1000n;
export const PAGE_SIZE_2M = 0x20_0000n;
export const PAGE_SIZE_1G = 0x4000_0000n;

const CR4_PAE = 1n << 5n;
const CR4_LA57 = 1n << 12n;

/** Paging mode from CR4: LA57 (bit 12) selects 5-level. Long-mode paging needs PAE (bit 5). */
export function pagingModeFromCr4(cr4: bigint): PagingMode {
  if ((cr4 & CR4_PAE) === 0n) {
    throw new VigilError(
      'arch',
      'unsupported',
      `CR4 0x${cr4.toString(16)} has PAE clear: not IA-32e (4/5-level) paging, or paging is not set up yet`,
    );
  }
  return (cr4 & CR4_LA57) !== 0n ? 5 : 4;
}

/** The page-table root from CR3: bits 12..51 (drops PCID bits 0..11, the no-flush bit 63 and LAM bits). */
export function rootFromCr3(cr3: bigint): bigint {
  return cr3 & PTE.addressMask;
}

/** True when bits 63..vaBits-1 of `va` are all equal (the CPU raises #GP otherwise). */
export function isCanonical(va: bigint, mode: PagingMode): boolean {
  const top = va >> BigInt(PAGING[mode].vaBits - 1);
  return top === 0n || top === (1n << BigInt(65 - PAGING[mode].vaBits)) - 1n;
}

/** Sign-extend bit vaBits-1 of a VA built from table indices into a canonical 64-bit address. */
export function canonicalize(va: bigint, mode: PagingMode): bigint {
  const bits = BigInt(PAGING[mode].vaBits);
  return BigInt.asUintN(64, BigInt.asIntN(Number(bits), va & ((1n << bits) - 1n)));
}

/** Hex for messages: 0x-prefixed, lower case. */
export const hex = (v: bigint | number): string => `0x${v.toString(16)}`;
