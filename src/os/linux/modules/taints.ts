// Kernel taint flags: bit numbers and letters as /proc/modules and /proc/sys/kernel/tainted use them.
// The kernel defines them as macros (include/linux/panic.h), so BTF does not carry them; the letters are
// kernel ABI (Documentation/admin-guide/tainted-kernels.rst, the taint_flags[] table in kernel/panic.c).
// `module` marks the flags a module can carry in module->taints (shown as "(OE)" in /proc/modules).
import type { KernelAccess } from './access.js';

export interface TaintFlag {
  bit: number;
  letter: string;
  name: string;
  module: boolean;
}

export const TAINT_FLAGS: readonly TaintFlag[] = [
  { bit: 0, letter: 'P', name: 'TAINT_PROPRIETARY_MODULE', module: true },
  { bit: 1, letter: 'F', name: 'TAINT_FORCED_MODULE', module: true },
  { bit: 2, letter: 'S', name: 'TAINT_CPU_OUT_OF_SPEC', module: false },
  { bit: 3, letter: 'R', name: 'TAINT_FORCED_RMMOD', module: false },
  { bit: 4, letter: 'M', name: 'TAINT_MACHINE_CHECK', module: false },
  { bit: 5, letter: 'B', name: 'TAINT_BAD_PAGE', module: false },
  { bit: 6, letter: 'U', name: 'TAINT_USER', module: false },
  { bit: 7, letter: 'D', name: 'TAINT_DIE', module: false },
  { bit: 8, letter: 'A', name: 'TAINT_OVERRIDDEN_ACPI_TABLE', module: false },
  { bit: 9, letter: 'W', name: 'TAINT_WARN', module: false },
  { bit: 10, letter: 'C', name: 'TAINT_CRAP', module: true },
  { bit: 11, letter: 'I', name: 'TAINT_FIRMWARE_WORKAROUND', module: false },
  { bit: 12, letter: 'O', name: 'TAINT_OOT_MODULE', module: true },
  { bit: 13, letter: 'E', name: 'TAINT_UNSIGNED_MODULE', module: true },
  { bit: 14, letter: 'L', name: 'TAINT_SOFTLOCKUP', module: false },
  { bit: 15, letter: 'K', name: 'TAINT_LIVEPATCH', module: true },
  { bit: 16, letter: 'X', name: 'TAINT_AUX', module: true },
  { bit: 17, letter: 'T', name: 'TAINT_RANDSTRUCT', module: true },
  { bit: 18, letter: 'N', name: 'TAINT_TEST', module: true },
  { bit: 19, letter: 'J', name: 'TAINT_FWCTL', module: true },
];

/**
 * Letters of the flags set in `mask`, in bit order ("OE"). `moduleOnly` keeps the ones /proc/modules
 * shows for a module. Bits the table does not know become "?" so that they are not silently dropped.
 */
export function taintLetters(mask: bigint, moduleOnly = false): string {
  let out = '';
  for (const f of TAINT_FLAGS) {
    if ((mask >> BigInt(f.bit)) & 1n && (!moduleOnly || f.module)) out += f.letter;
  }
  const known = TAINT_FLAGS.reduce((m, f) => m | (1n << BigInt(f.bit)), 0n);
  if (mask & ~known) out += '?';
  return out;
}

/** Names (TAINT_…) of the flags set in `mask`; unknown bits as "bit N". */
export function taintNames(mask: bigint): string[] {
  const out: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (!((mask >> BigInt(bit)) & 1n)) continue;
    out.push(TAINT_FLAGS.find((f) => f.bit === bit)?.name ?? `bit ${bit}`);
  }
  return out;
}

export interface KernelTaint {
  /** tainted_mask: what /proc/sys/kernel/tainted prints (as a number). */
  mask: bigint;
  letters: string;
  names: string[];
}

/** The kernel-wide taint (the `tainted_mask` variable), or undefined when it cannot be read. */
export function kernelTaint(kernel: KernelAccess): KernelTaint | undefined {
  const va = kernel.symbols.address('tainted_mask');
  if (va === undefined) return undefined;
  const mask = kernel.readPointer(va);
  if (mask === undefined) return undefined;
  return { mask, letters: taintLetters(mask), names: taintNames(mask) };
}
