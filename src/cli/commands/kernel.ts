// `vigil kernel`: what bootstrap learned about the guest kernel from its memory alone — release and banner,
// KASLR and memory layout, paging depth, BTF and symbol table, image sections, taint and the SYSCALL entry
// point — and how long each bootstrap step took. `--hash` adds a SHA-256 of kernel text.
import type { Command } from 'commander';
import type { BootstrapTimings } from '../../os/linux/kernel.js';
import { kernelTaint, type KernelTaint } from '../../os/linux/modules/index.js';
import {
  expectedSyscallEntry,
  hashKernelText,
  kernelSections,
  type KernelSection,
  type RangeHash,
} from '../../os/linux/tables/index.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';
import { reportIssues } from './modules.js';

export interface KernelReport {
  release: string;
  banner: string;
  /** kaslr_offset(): _text minus its link address 0xffffffff81000000. */
  kaslrOffset: bigint;
  /** _text's virtual and physical addresses, and the kernel's phys_base. */
  textVirt: bigint;
  physicalBase: bigint;
  physBase: bigint;
  pageOffsetBase: bigint;
  vmallocBase: bigint;
  vmemmapBase: bigint;
  pagingLevels: 4 | 5;
  /** Physical address of the kernel's top-level page table (init_top_pgt). */
  kernelPgd: bigint;
  cpus: number;
  btf: { paddr: bigint; bytes: number; types: number };
  symbols: number;
  sections: KernelSection[];
  taint: KernelTaint | null;
  syscallEntry: { symbol: string; address: bigint };
  textHash?: RangeHash;
  notes: string[];
  timings: BootstrapTimings;
}

interface KernelOptions extends TargetOptions {
  json?: boolean;
  hash?: boolean;
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('kernel')
      .description(
        'the guest kernel: release, KASLR and memory layout, paging, BTF, symbols, sections, taint',
      )
      .option('--hash', 'also hash kernel text (SHA-256 of _stext.._etext)')
      .option('--json', 'print JSON'),
  ).action(async (opts: KernelOptions) => {
    const { report, issues } = await withTarget(opts, async (t) => {
      const k = await t.kernel();
      const r: KernelReport = {
        release: k.release,
        banner: k.banner.text,
        kaslrOffset: k.kaslr.virtualOffset,
        textVirt: k.kaslr.textVirt,
        physicalBase: k.kaslr.physicalBase,
        physBase: k.kaslr.physBase,
        pageOffsetBase: k.kaslr.pageOffsetBase,
        vmallocBase: k.kaslr.vmallocBase,
        vmemmapBase: k.kaslr.vmemmapBase,
        pagingLevels: k.kaslr.la57 ? 5 : 4,
        kernelPgd: k.kaslr.kernelPgd,
        cpus: k.kaslr.perCpuOffsets.length,
        btf: { paddr: k.btfPaddr, bytes: k.types.data.header.length, types: k.types.count },
        symbols: k.symbols.size,
        sections: kernelSections(k),
        taint: kernelTaint(k) ?? null,
        syscallEntry: expectedSyscallEntry(k),
        notes: k.kaslr.notes,
        timings: k.timings,
      };
      if (opts.hash) r.textHash = hashKernelText(k);
      return { report: r, issues: k.issues.items };
    });
    print(opts.json ? toJson(report) : human(report));
    reportIssues(issues);
  });
}

const h = (v: bigint) => '0x' + v.toString(16);

function human(r: KernelReport): string {
  const lines: [string, string][] = [
    ['release', r.release],
    ['banner', r.banner],
    ['KASLR offset', h(r.kaslrOffset)],
    ['_text', `${h(r.textVirt)} (physical ${h(r.physicalBase)}, phys_base ${h(r.physBase)})`],
    ['page_offset_base', h(r.pageOffsetBase)],
    ['vmalloc_base', h(r.vmallocBase)],
    ['vmemmap_base', h(r.vmemmapBase)],
    ['paging', `${r.pagingLevels}-level, kernel page tables at ${h(r.kernelPgd)}`],
    ['CPUs', String(r.cpus)],
    ['BTF', `${r.btf.bytes} bytes at physical ${h(r.btf.paddr)}, ${r.btf.types} types`],
    ['symbols', String(r.symbols)],
    ['taint', r.taint ? `${r.taint.mask}${r.taint.letters ? ` (${r.taint.letters})` : ''}` : 'unknown'],
    ['SYSCALL entry', `${r.syscallEntry.symbol} at ${h(r.syscallEntry.address)}`],
  ];
  if (r.textHash) {
    lines.push([
      'text SHA-256',
      `${r.textHash.sha256} (${r.textHash.bytes} bytes, ${r.textHash.ms.toFixed(0)} ms)`,
    ]);
  }
  const t = r.timings;
  lines.push([
    'bootstrap',
    `${t.totalMs.toFixed(0)} ms (kallsyms ${t.kallsymsMs.toFixed(0)}, KASLR ${t.kaslrMs.toFixed(0)}, ` +
      `banner ${t.bannerMs.toFixed(0)}, BTF ${t.btfMs.toFixed(0)})`,
  ]);
  for (const n of r.notes) lines.push(['note', n]);
  const width = Math.max(...lines.map(([k]) => k.length));
  let out = lines.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n\n';
  out += renderTable(r.sections, [
    { header: 'SECTION', get: (s) => s.name },
    { header: 'START', get: (s) => s.start, align: 'right' },
    { header: 'END', get: (s) => s.end, align: 'right' },
    { header: 'SIZE', get: (s) => Number(s.end - s.start), align: 'right' },
    { header: 'SYMBOLS', get: (s) => `${s.startSymbol}..${s.endSymbol}` },
  ]);
  return out;
}
