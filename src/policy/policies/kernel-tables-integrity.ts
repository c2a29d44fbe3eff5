// memory-access's check of the system call tables and the IDT: entry by entry against the baseline and for
// shape (a system call function, a handler in kernel text), and the IDT the CPU uses must be idt_table.
import { hex, type KernelAccess } from '../../os/linux/modules/access.js';
import {
  decodeGate,
  describeCode,
  isSyscallFunction,
  listSyscallTables,
  syscallNames,
  GATE_SIZE,
  IDT_ENTRIES,
  type CodeAttributor,
  type ImageRange,
  type SyscallTable,
} from '../../os/linux/tables/index.js';
import type { BaselineAccess, JsonValue } from '../baseline.js';
import type { Finding } from '../types.js';
import { safeBig, type IdtBaseline, type TableBaseline } from './memory-access-baseline.js';

const TECHNIQUE = 'T1014';
/** CPU_ENTRY_AREA_RO_IDT: the read-only IDT alias IDTR points at (4- and 5-level paging alike). */
export const CEA_IDT = 0xfffffe0000000000n;
const PAGE_MASK = ~0xfffn;

/** Store the system call tables' entries and the IDT's gates as the baseline's `syscalls` and `idt`. */
export function learnTables(k: KernelAccess, b: BaselineAccess): void {
  const tables: Record<string, JsonValue> = {};
  for (const t of listSyscallTables(k)) tables[t.name] = t.entries.map((e) => hex(e.address));
  b.set('syscalls', tables);
  const idt = k.symbols.address('idt_table');
  if (idt !== undefined) {
    const raw = k.space.read(idt, IDT_ENTRIES * GATE_SIZE);
    const gates: string[] = [];
    for (let v = 0; v < IDT_ENTRIES; v++) gates.push(raw.toString('hex', v * GATE_SIZE, (v + 1) * GATE_SIZE));
    b.set('idt', { base: hex(idt), gates });
  }
}

/** sys_call_table entries (and the compat tables') that moved since the baseline or are no syscall function. */
export function syscallFindings(
  k: KernelAccess,
  tables: readonly SyscallTable[],
  base: TableBaseline | undefined,
  text: ImageRange,
  attr: CodeAttributor,
): Finding[] {
  const out: Finding[] = [];
  for (const t of tables) {
    const names = t.name === 'sys_call_table' ? syscallNames(k, t.entries.length) : new Map<number, string>();
    const then = base?.[t.name];
    if (then && then.length !== t.entries.length) {
      out.push({
        key: `syscall-count:${t.name}`,
        severity: 'high',
        technique: TECHNIQUE,
        summary: `${t.name} has ${t.entries.length} entries; the baseline had ${then.length}`,
        evidence: {
          table: t.name,
          address: hex(t.address),
          entries: t.entries.length,
          baseline: then.length,
        },
      });
    }
    for (const e of t.entries) {
      const was = then ? safeBig(then[e.nr]) : undefined;
      const changed = was !== undefined && was !== e.address;
      const shapeOk = isSyscallFunction(k, e.address, text);
      if (!changed && shapeOk) continue;
      const name = names.get(e.nr);
      const label = `${t.name}[${e.nr}]${name ? ` (${name})` : ''}`;
      const now = describeCode(attr, e.address);
      const evidence: Record<string, unknown> = {
        table: t.name,
        nr: e.nr,
        ...(name ? { syscall: name } : {}),
        slot: hex(t.address + BigInt(e.nr * 8)),
        now: now.evidence,
        syscallFunction: shapeOk,
      };
      let summary: string;
      if (changed) {
        const old = describeCode(attr, was);
        evidence.baseline = old.evidence;
        summary = `${label} changed: ${old.text} → ${now.text}`;
      } else {
        summary = `${label} points to ${now.text}, not to a system call function in kernel text`;
      }
      out.push({
        key: `syscall:${t.name}:${e.nr}`,
        severity: 'critical',
        technique: TECHNIQUE,
        summary,
        evidence,
      });
    }
  }
  return out;
}

/** Where a present gate may point: kernel text, or (reserved vectors on 6.1) the early handlers in init text. */
function gateShapeOk(attr: CodeAttributor, handler: bigint): boolean {
  const a = attr.attribute(handler);
  return (
    a.where === 'kernel' ||
    (a.where === 'kernel-init' && (a.symbol ?? '').startsWith('early_idt_handler_array'))
  );
}

/** IDT gates that changed since the baseline or point outside kernel text; the CPU entry area's alias. */
export function idtFindings(k: KernelAccess, base: IdtBaseline | undefined, attr: CodeAttributor): Finding[] {
  const va = k.symbols.address('idt_table');
  if (va === undefined) return [];
  const raw = k.space.read(va, IDT_ENTRIES * GATE_SIZE);
  const out: Finding[] = [];
  for (let v = 0; v < IDT_ENTRIES; v++) {
    const g = decodeGate(raw, v * GATE_SIZE);
    const nowHex = raw.toString('hex', v * GATE_SIZE, (v + 1) * GATE_SIZE);
    const thenHex = base?.gates[v];
    const changed = thenHex !== undefined && /^[0-9a-f]{32}$/.test(thenHex) && thenHex !== nowHex;
    const shapeOk = !g.present || gateShapeOk(attr, g.handler);
    if (!changed && shapeOk) continue;
    const now = describeCode(attr, g.handler);
    const evidence: Record<string, unknown> = {
      vector: v,
      vectorHex: hex(BigInt(v)),
      gate: hex(va + BigInt(v * GATE_SIZE)),
      present: g.present,
      type: g.type,
      dpl: g.dpl,
      ist: g.ist,
      selector: hex(BigInt(g.selector)),
      handler: now.evidence,
      handlerInKernelText: shapeOk,
      raw: nowHex,
    };
    let summary: string;
    if (changed) {
      const was = decodeGate(Buffer.from(thenHex, 'hex'));
      const old = describeCode(attr, was.handler);
      evidence.baseline = { raw: thenHex, handler: old.evidence, dpl: was.dpl, type: was.type };
      summary = `IDT vector ${hex(BigInt(v))} changed: ${old.text} → ${now.text}`;
    } else {
      summary = `IDT vector ${hex(BigInt(v))} points to ${now.text}, outside kernel text`;
    }
    out.push({ key: `idt:${v}`, severity: 'critical', technique: TECHNIQUE, summary, evidence });
  }
  // IDTR points at the CPU entry area's read-only alias: it must map idt_table's own page.
  const alias = k.space.translate(CEA_IDT);
  const real = k.space.translate(va & PAGE_MASK);
  if (alias !== undefined && real !== undefined && alias !== real) {
    const mirror = k.space.tryRead(CEA_IDT, IDT_ENTRIES * GATE_SIZE);
    const differs = mirror !== undefined && !mirror.equals(raw);
    out.push({
      key: 'idt-alias',
      severity: differs ? 'critical' : 'high',
      technique: TECHNIQUE,
      summary:
        `the IDT the CPU uses (CPU entry area ${hex(CEA_IDT)} → physical ${hex(alias)}) is not idt_table's ` +
        `page (${hex(real)})${differs ? ' and its gates differ' : ''}`,
      evidence: {
        alias: hex(CEA_IDT),
        aliasPhysical: hex(alias),
        idtTable: hex(va),
        idtTablePhysical: hex(real),
        differs,
      },
    });
  }
  return out;
}
