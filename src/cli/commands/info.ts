// `vigil info`: what vigil can reach of a target — memory source and guest-physical RAM map, vCPU
// registers when there are any (live VMs, QEMU ELF cores), the paging mode, and the kernel banner.
import type { Command } from 'commander';
import { pagingModeFromCr4 } from '../../arch/x86_64/index.js';
import { findBanner } from '../../os/linux/banner.js';
import type { X86Registers } from '../../vmm/types.js';
import { isVigilError } from '../../util/errors.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';

interface InfoReport {
  target: string;
  kind: string;
  memory: string;
  ram: { start: bigint; end: bigint; size: bigint }[];
  ramBytes: bigint;
  vcpus: ({ index: number } & Partial<X86Registers>)[];
  paging?: { levels: 4 | 5; source: 'cr4' };
  banner?: string;
  release?: string;
  bannerError?: string;
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('info')
      .description('memory source, guest-physical RAM map, vCPU registers, paging mode and kernel banner')
      .option('--json', 'print JSON'),
  ).action(async (opts: TargetOptions & { json?: boolean }) => {
    const report = await withTarget(opts, async (t) => {
      const m = t.machine;
      const r: InfoReport = {
        target: t.spec,
        kind: t.kind,
        memory: m.memory.description,
        ram: m.memory.ranges.map((x) => ({ start: x.start, end: x.start + x.size - 1n, size: x.size })),
        ramBytes: m.memory.ranges.reduce((a, x) => a + x.size, 0n),
        vcpus: [],
      };
      for (const cpu of m.vcpus) r.vcpus.push({ index: cpu.index, ...(await cpu.registers()) });
      const cr4 = r.vcpus[0]?.cr4;
      if (cr4 !== undefined && (cr4 & 0x20n) !== 0n)
        r.paging = { levels: pagingModeFromCr4(cr4), source: 'cr4' };
      try {
        const b = findBanner(m.memory);
        r.banner = b.text;
        r.release = b.release;
      } catch (e) {
        if (!isVigilError(e)) throw e;
        r.bannerError = e.message;
      }
      return r;
    });
    print(opts.json ? toJson(report) : human(report));
  });
}

function human(r: InfoReport): string {
  const gib = (n: bigint) => `${(Number(n) / 2 ** 20).toFixed(0)} MiB`;
  let out = `target   ${r.target} (${r.kind})\nmemory   ${r.memory}, ${gib(r.ramBytes)} of RAM\n`;
  out += '\nguest-physical RAM map\n';
  out += renderTable(r.ram, [
    { header: 'START', get: (x) => x.start, align: 'right' },
    { header: 'END', get: (x) => x.end, align: 'right' },
    { header: 'SIZE', get: (x) => gib(x.size), align: 'right' },
  ]);
  if (r.vcpus.length > 0) {
    out += '\nvCPUs\n';
    out += renderTable(r.vcpus, [
      { header: 'CPU', get: (c) => c.index },
      { header: 'RIP', get: (c) => c.rip },
      { header: 'CR0', get: (c) => c.cr0 },
      { header: 'CR3', get: (c) => c.cr3 },
      { header: 'CR4', get: (c) => c.cr4 },
      { header: 'EFER', get: (c) => c.efer },
    ]);
  } else {
    out += '\nvCPUs    none (this memory image carries no registers)\n';
  }
  out += `\npaging   ${r.paging ? `${r.paging.levels}-level (CR4.LA57 ${r.paging.levels === 5 ? 'set' : 'clear'})` : 'unknown without registers (vigil kernel finds it from the kernel)'}\n`;
  out += r.banner ? `kernel   ${r.banner}\n` : `kernel   no banner found: ${r.bannerError}\n`;
  return out;
}
