// System call tables: arrays of handler pointers indexed by system call number. The kernel does not export
// their length, so it is the distance to the next symbol (bounded), less the alignment padding after the
// last entry. Debian 6.1 from later point releases dispatches through a switch (x64_sys_call) and keeps
// sys_call_table for tracing and BPF; a write to the table is still tampering, so it is still checked.
import { VigilError } from '../../../util/errors.js';
import type { KernelAccess } from '../modules/access.js';
import type { KernelModule } from '../modules/list.js';
import { CodeAttributor, type CodeLocation } from './attribute.js';

export interface SyscallEntry {
  nr: number;
  address: bigint;
  symbol?: string;
  where: CodeLocation;
  module?: string;
}

export interface SyscallTable {
  /** Symbol of the table: sys_call_table, ia32_sys_call_table, x32_sys_call_table. */
  name: string;
  address: bigint;
  entries: SyscallEntry[];
  /** How the entry count was found. */
  countFrom: 'next-symbol' | 'bound';
}

export const SYSCALL_TABLES = ['sys_call_table', 'ia32_sys_call_table', 'x32_sys_call_table'] as const;
/** x86-64 has ~460 system calls, x32 numbers go to ~550: anything past this is not a syscall table. */
export const MAX_SYSCALLS = 1024;

export interface SyscallTableOptions {
  max?: number;
  /** A module list to attribute against (saves a walk when the caller has one). */
  modules?: readonly KernelModule[];
  attributor?: CodeAttributor;
}

/** Number of 8-byte entries between `start` and the next symbol, bounded by `max`. */
export function tableSlots(
  kernel: KernelAccess,
  start: bigint,
  max: number,
): { count: number; bounded: boolean } {
  for (const s of kernel.symbols.range(start + 1n, start + BigInt(max) * 8n + 1n)) {
    if (s.address > start) return { count: Number((s.address - start) / 8n), bounded: false };
  }
  return { count: max, bounded: true };
}

/** One syscall table by symbol name. */
export function readSyscallTable(
  kernel: KernelAccess,
  name = 'sys_call_table',
  options: SyscallTableOptions = {},
): SyscallTable {
  const address = kernel.sym(name);
  const max = options.max ?? MAX_SYSCALLS;
  const slots = tableSlots(kernel, address, max);
  if (slots.bounded) {
    kernel.issues.add('syscalls', 'bound', `${name}: no symbol follows within ${max} entries; read ${max}`);
  }
  if (slots.count === 0) throw new VigilError('os', 'malformed', `${name} has no entries`);
  const raw = kernel.space.read(address, slots.count * 8);
  let count = slots.count;
  // The slots past the last entry up to the next symbol are alignment padding (zeros).
  while (count > 0 && raw.readBigUInt64LE((count - 1) * 8) === 0n) count--;
  const attributor = options.attributor ?? new CodeAttributor(kernel, options.modules);
  const entries: SyscallEntry[] = [];
  for (let nr = 0; nr < count; nr++) {
    const va = raw.readBigUInt64LE(nr * 8);
    const a = attributor.attribute(va);
    entries.push({
      nr,
      address: va,
      ...(a.symbol !== undefined ? { symbol: a.symbol } : {}),
      where: a.where,
      ...(a.module !== undefined ? { module: a.module } : {}),
    });
  }
  return { name, address, entries, countFrom: slots.bounded ? 'bound' : 'next-symbol' };
}

/** Every syscall table this kernel has (64-bit always; ia32 and x32 when built in and table-based). */
export function listSyscallTables(kernel: KernelAccess, options: SyscallTableOptions = {}): SyscallTable[] {
  const attributor = options.attributor ?? new CodeAttributor(kernel, options.modules);
  return SYSCALL_TABLES.filter((n) => kernel.symbols.has(n)).map((n) =>
    readSyscallTable(kernel, n, { ...options, attributor }),
  );
}

/**
 * What IA32_LSTAR (the 64-bit SYSCALL entry MSR) must hold: entry_SYSCALL_64. The live value is a vCPU
 * register, compared by whoever has the registers.
 */
export function expectedSyscallEntry(kernel: KernelAccess): { symbol: string; address: bigint } {
  return { symbol: 'entry_SYSCALL_64', address: kernel.sym('entry_SYSCALL_64') };
}
