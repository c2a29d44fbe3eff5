// Parse the text of HMP `info registers` (QEMU's x86 cpu dump) into X86Registers per vCPU. The dump has
// two layouts: long mode ("RAX=<16 hex>", "RIP=", "RFL=") and legacy/real mode ("EAX=<8 hex>", "EIP=",
// "EFL="); segment lines read "FS =<selector> <base> <limit> <flags>", so FS/GS base is the second field.

import { VigilError } from '../../util/errors.js';
import type { X86Registers } from '../types.js';

/** Bigger than any real dump (a few KiB per vCPU); guards the regexes against a runaway input. */
const MAX_TEXT = 16 * 1024 * 1024;
const MAX_CPUS = 4096;

const CPU_HEADER = /^CPU#(\d+)\s*$/;
const SEGMENT = /^(ES|CS|SS|DS|FS|GS|LDT|TR) *=([0-9a-fA-F]{4}) ([0-9a-fA-F]+) ([0-9a-fA-F]+) ([0-9a-fA-F]+)/;
const PAIR = /([A-Z][A-Z0-9]*) *=([0-9a-fA-F]+)(?![0-9a-zA-Z])/g;

/** Map HMP names to X86Registers fields; the 32-bit names fill the same fields when that is all there is. */
const FIELDS: Record<string, keyof X86Registers> = {
  RAX: 'rax',
  RBX: 'rbx',
  RCX: 'rcx',
  RDX: 'rdx',
  RSI: 'rsi',
  RDI: 'rdi',
  RBP: 'rbp',
  RSP: 'rsp',
  RIP: 'rip',
  RFL: 'eflags',
  EAX: 'rax',
  EBX: 'rbx',
  ECX: 'rcx',
  EDX: 'rdx',
  ESI: 'rsi',
  EDI: 'rdi',
  EBP: 'rbp',
  ESP: 'rsp',
  EIP: 'rip',
  EFL: 'eflags',
  CR0: 'cr0',
  CR2: 'cr2',
  CR3: 'cr3',
  CR4: 'cr4',
  EFER: 'efer',
};

const REQUIRED = ['rip', 'rsp', 'cr0', 'cr3', 'cr4', 'efer'] as const;

/**
 * Parse `info registers` / `info registers -a` output. Returns registers keyed by CPU index; a dump
 * without "CPU#n" headers (older QEMU, single CPU) is CPU 0. Throws VigilError('vmm', 'malformed') when a
 * CPU block lacks RIP, RSP, CR0, CR3, CR4 or EFER.
 */
export function parseInfoRegisters(text: string): Map<number, X86Registers> {
  if (text.length > MAX_TEXT) {
    throw new VigilError('vmm', 'bound', `info registers text of ${text.length} characters is over the cap`);
  }
  const blocks = new Map<number, string[]>();
  let current: string[] | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const header = CPU_HEADER.exec(line.trim());
    if (header) {
      const index = Number(header[1]);
      if (blocks.has(index)) throw new VigilError('vmm', 'malformed', `CPU#${index} appears twice`);
      if (blocks.size >= MAX_CPUS) throw new VigilError('vmm', 'bound', `more than ${MAX_CPUS} CPUs in dump`);
      current = [];
      blocks.set(index, current);
      continue;
    }
    if (line.trim().length === 0) continue;
    if (!current) {
      current = [];
      blocks.set(0, current);
    }
    current.push(line);
  }
  const out = new Map<number, X86Registers>();
  for (const [index, lines] of blocks) out.set(index, parseCpuBlock(index, lines));
  if (out.size === 0) throw new VigilError('vmm', 'malformed', 'info registers output holds no CPU');
  return out;
}

function parseCpuBlock(index: number, lines: string[]): X86Registers {
  const regs: Partial<Record<keyof X86Registers, bigint>> = {};
  for (const line of lines) {
    const seg = SEGMENT.exec(line);
    if (seg) {
      const base = BigInt('0x' + seg[3]);
      if (seg[1] === 'FS') regs.fsBase = base;
      else if (seg[1] === 'GS') regs.gsBase = base;
      else if (seg[1] === 'CS') regs.cs = BigInt('0x' + seg[2]);
      continue;
    }
    for (const m of line.matchAll(PAIR)) {
      const field = FIELDS[m[1]];
      // The long-mode names win over the 32-bit ones if a dump ever carries both.
      if (field && (regs[field] === undefined || m[1].startsWith('R'))) regs[field] = BigInt('0x' + m[2]);
    }
  }
  for (const name of REQUIRED) {
    if (regs[name] === undefined) {
      throw new VigilError('vmm', 'malformed', `info registers: CPU#${index} has no ${name.toUpperCase()}`);
    }
  }
  return regs as X86Registers;
}
