// `vigil syscalls`: the system call table(s) with the function each entry points to and where that is —
// kernel text, a module (a classic hook), or unknown. `--idt` shows the interrupt descriptor table instead.
import type { Command } from 'commander';
import {
  CodeAttributor,
  expectedSyscallEntry,
  listSyscallTables,
  readIdt,
  type CodeLocation,
  type GateType,
} from '../../os/linux/tables/index.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';
import { reportIssues } from './modules.js';

export interface SyscallRow {
  /** sys_call_table, ia32_sys_call_table or x32_sys_call_table. */
  table: string;
  nr: number;
  address: bigint;
  /** "func+0x0" when the address is inside the kernel image. */
  symbol: string | null;
  where: CodeLocation;
  /** The module holding the address, when where is "module". */
  module: string | null;
}

export interface IdtRow {
  vector: number;
  handler: bigint;
  symbol: string | null;
  where: CodeLocation;
  module: string | null;
  present: boolean;
  type: GateType;
  dpl: number;
  ist: number;
  selector: number;
}

interface SyscallsOptions extends TargetOptions {
  json?: boolean;
  idt?: boolean;
  hooked?: boolean;
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('syscalls')
      .description(
        'system call table entries (or --idt: IDT gates) with their targets: kernel, module or unknown',
      )
      .option('--idt', 'show the interrupt descriptor table instead')
      .option('--hooked', 'only entries that do not point into kernel text')
      .option('--json', 'print JSON'),
  ).action(async (opts: SyscallsOptions) => {
    const out = await withTarget(opts, async (t) => {
      const k = await t.kernel();
      const attributor = new CodeAttributor(k);
      const idt: IdtRow[] = !opts.idt
        ? []
        : readIdt(k, { attributor }).map((e) => ({
            vector: e.vector,
            handler: e.handler,
            symbol: e.symbol ?? null,
            where: e.where,
            module: e.module ?? null,
            present: e.present,
            type: e.type,
            dpl: e.dpl,
            ist: e.ist,
            selector: e.selector,
          }));
      const tables = opts.idt ? [] : listSyscallTables(k, { attributor });
      const rows: SyscallRow[] = tables.flatMap((tbl) =>
        tbl.entries.map((e) => ({
          table: tbl.name,
          nr: e.nr,
          address: e.address,
          symbol: e.symbol ?? null,
          where: e.where,
          module: e.module ?? null,
        })),
      );
      return { idt, rows, entry: expectedSyscallEntry(k), issues: k.issues.items };
    });
    const keep = <R extends { where: CodeLocation }>(r: R) => !opts.hooked || r.where !== 'kernel';
    if (opts.idt) {
      const rows = out.idt.filter(keep);
      print(opts.json ? toJson(rows) : idtTable(rows));
    } else {
      const rows = out.rows.filter(keep);
      if (opts.json) print(toJson(rows));
      else {
        print(syscallTable(rows));
        print(
          `\nSYSCALL entry (IA32_LSTAR) should be ${out.entry.symbol} at 0x${out.entry.address.toString(16)}\n`,
        );
      }
    }
    reportIssues(out.issues);
  });
}

const whereCell = (r: { where: CodeLocation; module: string | null }) =>
  r.where === 'module' ? `module ${r.module}` : r.where;

function syscallTable(rows: readonly SyscallRow[]): string {
  const tables = new Set(rows.map((r) => r.table));
  return renderTable(rows, [
    ...(tables.size > 1 ? [{ header: 'TABLE', get: (r: SyscallRow) => r.table }] : []),
    { header: 'NR', get: (r) => r.nr, align: 'right' },
    { header: 'ADDRESS', get: (r) => r.address, align: 'right' },
    { header: 'SYMBOL', get: (r) => r.symbol, max: 50 },
    { header: 'WHERE', get: whereCell },
  ]);
}

function idtTable(rows: readonly IdtRow[]): string {
  return renderTable(rows, [
    { header: 'VEC', get: (r) => r.vector, align: 'right' },
    { header: 'HANDLER', get: (r) => r.handler, align: 'right' },
    { header: 'SYMBOL', get: (r) => r.symbol, max: 50 },
    { header: 'WHERE', get: whereCell },
    { header: 'P', get: (r) => (r.present ? 'P' : '-') },
    { header: 'TYPE', get: (r) => r.type },
    { header: 'DPL', get: (r) => r.dpl, align: 'right' },
    { header: 'IST', get: (r) => r.ist, align: 'right' },
  ]);
}
