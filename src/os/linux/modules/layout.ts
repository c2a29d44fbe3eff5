// Where a module's memory is. The layout moved between kernel versions, so it is chosen by BTF name:
//   ≤ 6.3: module->core_layout / init_layout (struct module_layout: base, size, text_size, ro_size…)
//   ≥ 6.4: module->mem[MOD_TEXT … MOD_INIT_RODATA] (struct module_memory: base, size), indexed by
//          enum mod_mem_type.
import { VigilError } from '../../../util/errors.js';
import type { StructView } from '../btf/index.js';
import { hasMember, hex, type KernelAccess } from './access.js';

export interface ModuleRegion {
  /** 'core'/'init' (≤ 6.3) or the mod_mem_type without its prefix, lower case: 'text', 'rodata', 'init_text'… */
  kind: string;
  base: bigint;
  size: bigint;
}

/** A region larger than this is not a module's (the whole x86-64 module area is ~1 GiB). */
export const MAX_MODULE_REGION = 1n << 30n;
/** Module memory is in the kernel half of the address space (vmalloc'd, in the module area). */
const KERNEL_HALF = 1n << 63n;
/** Bound on module->mem[]: the enum has 7 types today. */
const MAX_MEM_TYPES = 16;

export type ModuleLayoutKind =
  { kind: 'layout' } | { kind: 'mem'; count: number; names: (string | undefined)[]; textIndex: number };

const layoutCache = new WeakMap<object, ModuleLayoutKind>();

/** Which layout this kernel's struct module has (cached per type registry). */
export function moduleLayoutKind(kernel: KernelAccess): ModuleLayoutKind {
  const hit = layoutCache.get(kernel.types);
  if (hit) return hit;
  let found: ModuleLayoutKind;
  if (hasMember(kernel, 'module', 'mem')) {
    const { count } = kernel.types.arrayInfo(kernel.types.member('module', 'mem').type);
    const n = Math.min(count, MAX_MEM_TYPES);
    const names: (string | undefined)[] = [];
    const enumId = kernel.types.find('enum mod_mem_type');
    for (let i = 0; i < n; i++) {
      const name = enumId !== undefined ? kernel.types.enumName(enumId, i) : undefined;
      names.push(name?.replace(/^MOD_/, '').toLowerCase());
    }
    let textIndex = 0;
    if (enumId !== undefined) {
      try {
        textIndex = Number(kernel.types.enumValue('MOD_TEXT', enumId));
      } catch {
        // Keep 0: MOD_TEXT is the first type in every kernel that has mem[].
      }
    }
    found = { kind: 'mem', count: n, names, textIndex };
  } else if (hasMember(kernel, 'module', 'core_layout')) {
    found = { kind: 'layout' };
  } else {
    throw new VigilError(
      'os',
      'unsupported',
      'struct module has neither mem[] nor core_layout: unknown module memory layout',
    );
  }
  layoutCache.set(kernel.types, found);
  return found;
}

export interface ModuleMemory {
  /** Where /proc/modules says the module is: core_layout.base or mem[MOD_TEXT].base. */
  base: bigint;
  /** What /proc/modules prints as the size: the sum of all regions (init included while it exists). */
  size: bigint;
  /** Non-empty regions whose size is plausible. */
  regions: ModuleRegion[];
  /** Regions left out of `regions`, and why. */
  anomalies: string[];
}

/** Read a module's memory regions from its struct module view. */
export function readModuleMemory(kernel: KernelAccess, m: StructView): ModuleMemory {
  const layout = moduleLayoutKind(kernel);
  const raw: ModuleRegion[] = [];
  let base: bigint;
  if (layout.kind === 'layout') {
    base = m.ptr('core_layout.base');
    raw.push({ kind: 'core', base, size: m.int('core_layout.size') });
    raw.push({ kind: 'init', base: m.ptr('init_layout.base'), size: m.int('init_layout.size') });
  } else {
    base = 0n;
    for (let i = 0; i < layout.count; i++) {
      const r = {
        kind: layout.names[i] ?? `mem${i}`,
        base: m.ptr(`mem[${i}].base`),
        size: m.int(`mem[${i}].size`),
      };
      if (i === layout.textIndex) base = r.base;
      raw.push(r);
    }
  }
  const regions: ModuleRegion[] = [];
  const anomalies: string[] = [];
  let size = 0n;
  for (const r of raw) {
    size += r.size;
    if (r.size === 0n && r.base === 0n) continue;
    if (r.size < 0n || r.size > MAX_MODULE_REGION) {
      anomalies.push(`${r.kind} region size ${hex(r.size)} is implausible`);
    } else if (r.base < KERNEL_HALF || r.base + r.size > 1n << 64n) {
      anomalies.push(`${r.kind} region ${hex(r.base)}+${hex(r.size)} is not a kernel address range`);
    } else if (r.size > 0n) {
      regions.push(r);
    }
  }
  return { base, size, regions, anomalies };
}
