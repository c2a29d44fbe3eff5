// The interrupt descriptor table: 256 16-byte gate descriptors in the format the CPU defines (Intel SDM
// vol. 3, "IDT Descriptors" for IA-32e mode), so decoding does not depend on the kernel's BTF:
//   bytes 0-1 offset[15:0] · 2-3 segment selector · 4 IST (bits 0-2) · 5 type (bits 0-3), 0 (bit 4),
//   DPL (bits 5-6), present (bit 7) · 6-7 offset[31:16] · 8-11 offset[63:32] · 12-15 reserved.
// The kernel's table is idt_table; the CPU's IDTR points at a read-only alias of the same page in the CPU
// entry area (0xfffffe0000000000), so reading idt_table reads what the CPU uses — unless IDTR itself was
// changed, which only the vCPU's registers show: pass their IDT base when there is one.
import type { KernelAccess } from '../modules/access.js';
import type { KernelModule } from '../modules/list.js';
import { CodeAttributor, type Attribution, type CodeLocation } from './attribute.js';

export const IDT_ENTRIES = 256;
export const GATE_SIZE = 16;

export type GateType = 'interrupt' | 'trap' | 'call' | 'task' | `type ${number}`;

export interface IdtEntry {
  vector: number;
  handler: bigint;
  selector: number;
  present: boolean;
  type: GateType;
  dpl: number;
  /** Interrupt stack table index; 0 = no stack switch. */
  ist: number;
  symbol?: string;
  where: CodeLocation;
  module?: string;
}

const TYPES: Record<number, GateType> = { 0xe: 'interrupt', 0xf: 'trap', 0xc: 'call', 0x5: 'task' };

/** Decode one 16-byte gate descriptor. */
export function decodeGate(b: Buffer, at = 0): Omit<IdtEntry, 'vector' | 'where'> {
  const low = BigInt(b.readUInt16LE(at));
  const mid = BigInt(b.readUInt16LE(at + 6));
  const high = BigInt(b.readUInt32LE(at + 8));
  const attr = b[at + 5]!;
  const type = attr & 0xf;
  return {
    handler: low | (mid << 16n) | (high << 32n),
    selector: b.readUInt16LE(at + 2),
    ist: b[at + 4]! & 7,
    type: TYPES[type] ?? `type ${type}`,
    dpl: (attr >> 5) & 3,
    present: (attr & 0x80) !== 0,
  };
}

export interface IdtOptions {
  /** The IDT's virtual address: idt_table by default; a vCPU's IDTR base when known. */
  base?: bigint;
  modules?: readonly KernelModule[];
  attributor?: CodeAttributor;
}

/** All 256 IDT entries with their handlers attributed. Not-present gates keep their raw fields. */
export function readIdt(kernel: KernelAccess, options: IdtOptions = {}): IdtEntry[] {
  const base = options.base ?? kernel.sym('idt_table');
  const raw = kernel.space.read(base, IDT_ENTRIES * GATE_SIZE);
  const attributor = options.attributor ?? new CodeAttributor(kernel, options.modules);
  const out: IdtEntry[] = [];
  for (let vector = 0; vector < IDT_ENTRIES; vector++) {
    const g = decodeGate(raw, vector * GATE_SIZE);
    const a: Attribution = g.present ? attributor.attribute(g.handler) : { where: 'unknown' };
    out.push({
      vector,
      ...g,
      ...(a.symbol !== undefined ? { symbol: a.symbol } : {}),
      where: a.where,
      ...(a.module !== undefined ? { module: a.module } : {}),
    });
  }
  return out;
}
