// `vigil modules`: loaded kernel modules from the kernel's `modules` list (what lsmod shows), or with
// --sysfs the /sys/module kobjects (loaded modules and built-ins with sysfs entries). A module on one
// list but not the other is what a hiding rootkit leaves behind.
import type { Command } from 'commander';
import {
  kernelTaint,
  listModuleKobjects,
  listModules,
  type KernelModule,
  type KernelTaint,
  type ModuleKobject,
  type ModuleRegion,
} from '../../os/linux/modules/index.js';
import type { WalkIssue } from '../../os/linux/walk.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';

export interface ModuleRow {
  name: string;
  /** /proc/modules' address column (hex string). */
  base: bigint;
  /** /proc/modules' size column, bytes. */
  size: number;
  /** live, coming, going, unformed (enum module_state without its prefix), or unknown(N). */
  state: string;
  refcount: number | null;
  /** module->taints as a hex string, and its letters as /proc/modules shows them in "(…)". */
  taints: bigint;
  taintFlags: string;
  usedBy: string[];
  /** Address of the struct module. */
  address: bigint;
  regions: ModuleRegion[];
  anomalies: string[];
}

export interface KobjectRow {
  name: string;
  builtin: boolean;
  /** struct module address (null for built-ins). */
  module: bigint | null;
  moduleName: string | null;
  /** Address of the kobject. */
  kobject: bigint;
  anomalies: string[];
}

export function moduleRow(m: KernelModule): ModuleRow {
  return {
    name: m.name,
    base: m.base,
    size: Number(m.size),
    state: m.state.replace(/^MODULE_STATE_/, '').toLowerCase(),
    refcount: m.refcount ?? null,
    taints: m.taints,
    taintFlags: m.taintFlags,
    usedBy: m.usedBy,
    address: m.address,
    regions: m.regions,
    anomalies: m.anomalies,
  };
}

export function kobjectRow(o: ModuleKobject): KobjectRow {
  return {
    name: o.name,
    builtin: o.builtin,
    module: o.module ?? null,
    moduleName: o.moduleName ?? null,
    kobject: o.address,
    anomalies: o.anomalies,
  };
}

interface ModulesOptions extends TargetOptions {
  json?: boolean;
  sysfs?: boolean;
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('modules')
      .description('loaded kernel modules from the module list: name, address, size, state, taints')
      .option('--sysfs', 'list the /sys/module kobjects instead (built-ins included)')
      .option('--json', 'print JSON'),
  ).action(async (opts: ModulesOptions) => {
    const out = await withTarget(opts, async (t) => {
      const k = await t.kernel();
      const kobjects = opts.sysfs ? listModuleKobjects(k).map(kobjectRow) : [];
      const modules = opts.sysfs ? [] : listModules(k).map(moduleRow);
      return { kobjects, modules, taint: kernelTaint(k), issues: k.issues.items };
    });
    if (opts.sysfs) print(opts.json ? toJson(out.kobjects) : kobjectTable(out.kobjects));
    else print(opts.json ? toJson(out.modules) : moduleTable(out.modules, out.taint));
    reportIssues(out.issues);
  });
}

function moduleTable(rows: readonly ModuleRow[], taint: KernelTaint | undefined): string {
  let out = renderTable(rows, [
    { header: 'NAME', get: (m) => m.name },
    { header: 'BASE', get: (m) => m.base, align: 'right' },
    { header: 'SIZE', get: (m) => m.size, align: 'right' },
    { header: 'REFS', get: (m) => m.refcount, align: 'right' },
    { header: 'STATE', get: (m) => m.state },
    { header: 'TAINT', get: (m) => m.taintFlags || '' },
    { header: 'USED BY', get: (m) => m.usedBy.join(','), max: 40 },
    { header: 'NOTES', get: (m) => m.anomalies.join('; '), max: 60 },
  ]);
  if (taint) {
    out += `\nkernel taint: ${taint.mask}${taint.letters ? ` (${taint.letters}: ${taint.names.join(', ')})` : ''}\n`;
  }
  return out;
}

function kobjectTable(rows: readonly KobjectRow[]): string {
  return renderTable(rows, [
    { header: 'NAME', get: (o) => o.name },
    { header: 'KIND', get: (o) => (o.builtin ? 'built-in' : 'module') },
    { header: 'MODULE', get: (o) => o.module, align: 'right' },
    { header: 'NOTES', get: (o) => o.anomalies.join('; '), max: 60 },
  ]);
}

/** Why a walk stopped early, on stderr: the listing may be incomplete (a hostile guest can cause this). */
export function reportIssues(issues: readonly WalkIssue[]): void {
  for (const i of issues) process.stderr.write(`vigil: note: ${i.walker} ${i.kind}: ${i.detail}\n`);
}
