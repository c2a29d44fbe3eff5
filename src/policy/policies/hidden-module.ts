// hidden-module: a kernel module that hides from the module list. Four views of the loaded modules are
// compared: the `modules` list (lsmod, /proc/modules), the sysfs kobjects of module_kset (/sys/module),
// the module address tree mod_tree (a latch tree of each module's memory, used for address → module
// lookups: a module must stay in it to run), and the module memory itself — struct module instances
// carved from the mapped pages of the x86-64 module area. A module seen in any view but the list is hidden
// (rootkit-hidemod: list_del_rcu of its list entry, kobject_del of its sysfs directory); a live module on
// the list but missing from sysfs or mod_tree has been partly unlinked.
//
// Carving validates strictly: the state is a module_state, the name a module name ([A-Za-z0-9_-],
// NUL-terminated), the struct lies inside its own core memory region (where the loader put it: the
// .gnu.linkonce.this_module section), and mkobj.mod or the mod_tree node's mod points back at it.
import type { Kernel } from '../../os/linux/kernel.js';
import { hasMember, hex, type KernelAccess } from '../../os/linux/modules/access.js';
import { listModuleKobjects } from '../../os/linux/modules/kobjects.js';
import { readModuleMemory } from '../../os/linux/modules/layout.js';
import { listModules, MAX_MODULES, readModule, type KernelModule } from '../../os/linux/modules/list.js';
import { rbTreeNodes } from '../../os/linux/walk.js';
import { isVigilError } from '../../util/errors.js';
import { definePolicy } from '../policy.js';
import { pollFresh } from './poll-fresh.js';
import type { Finding } from '../types.js';

const TECHNIQUE = 'T1014';
/** x86-64 module mapping space (MODULES_VADDR..MODULES_END): at 0xffffffffc0000000 with KASLR (the
 * kernel image then spans up to 1 GiB from __START_KERNEL_map), at 0xffffffffa0000000 without. */
const MODULES_VADDR_KASLR = 0xffffffffc0000000n;
const MODULES_VADDR_FIXED = 0xffffffffa0000000n;
const MODULES_END = 0xffffffffff000000n;
/** Most module-area bytes carved per sweep; a full module area is ~1 GiB, loaded modules a few MiB. */
const MAX_CARVE_BYTES = 256 << 20;
const MAX_MAPPINGS = 1 << 18;
const READ_PIECE = 4 << 20;
/** struct module is ____cacheline_aligned. */
const MODULE_ALIGN = 64;
const NAME_RE = /^[A-Za-z0-9_-]{1,55}$/;
const LIST_POISON1 = 0xdead000000000100n;
const LIST_POISON2 = 0xdead000000000122n;
const KERNEL_HALF = 1n << 63n;

/** The module area of this kernel: where struct module instances can live. */
export function moduleArea(k: KernelAccess): { start: bigint; end: bigint } {
  const end = k.symbols.address('_end');
  return {
    start: end !== undefined && end > MODULES_VADDR_FIXED ? MODULES_VADDR_KASLR : MODULES_VADDR_FIXED,
    end: MODULES_END,
  };
}

interface ModuleOffsets {
  size: number;
  state: number;
  name: number;
  nameLen: number;
  listNext: number;
  listPrev: number;
  mkobjMod?: number;
  mtnMod?: number;
  maxState: number;
}

const offsetCache = new WeakMap<object, ModuleOffsets>();

function moduleOffsets(k: KernelAccess): ModuleOffsets {
  const hit = offsetCache.get(k.types);
  if (hit) return hit;
  const t = k.types;
  const opt = (path: string): number | undefined => {
    try {
      return t.offsetof('module', path);
    } catch {
      return undefined;
    }
  };
  let maxState = 3;
  try {
    maxState = Number(t.enumValue('MODULE_STATE_UNFORMED'));
  } catch {
    // The enum has had four values since 3.x.
  }
  const o: ModuleOffsets = {
    size: t.sizeof('module'),
    state: t.offsetof('module', 'state'),
    name: t.offsetof('module', 'name'),
    nameLen: 56,
    listNext: t.offsetof('module', 'list') + t.offsetof('list_head', 'next'),
    listPrev: t.offsetof('module', 'list') + t.offsetof('list_head', 'prev'),
    maxState,
  };
  try {
    o.nameLen = t.arrayInfo(t.member('module', 'name').type).count;
  } catch {
    // Keep MODULE_NAME_LEN (56 on 64-bit).
  }
  const mk = opt('mkobj.mod');
  if (mk !== undefined) o.mkobjMod = mk;
  const mtn = opt('core_layout.mtn.mod') ?? opt('mem[0].mtn.mod');
  if (mtn !== undefined) o.mtnMod = mtn;
  offsetCache.set(k.types, o);
  return o;
}

const isKernelPointer = (v: bigint): boolean => v >= KERNEL_HALF || v === LIST_POISON1 || v === LIST_POISON2;

export interface CarvedModule {
  address: bigint;
  name: string;
  state: number;
}

/**
 * struct module instances in the mapped pages of the module area. Candidates are checked cheaply on the
 * raw bytes (state, back-pointer, name, list pointers), then fully (the struct inside its own memory).
 */
export function carveModules(
  k: KernelAccess,
  range: { start: bigint; end: bigint } = moduleArea(k),
  options: { maxBytes?: number } = {},
): CarvedModule[] {
  const off = moduleOffsets(k);
  if (off.mkobjMod === undefined && off.mtnMod === undefined) return [];
  const maxBytes = options.maxBytes ?? MAX_CARVE_BYTES;
  const runs: { start: bigint; end: bigint }[] = [];
  let total = 0;
  try {
    for (const m of k.space.walkMappings(range, { maxEntries: MAX_MAPPINGS })) {
      if (total + Number(m.size) > maxBytes) {
        k.issues.add('module-carving', 'bound', `carved only the first ${maxBytes} bytes of the module area`);
        break;
      }
      total += Number(m.size);
      const last = runs.at(-1);
      if (last && last.end === m.va) last.end += m.size;
      else runs.push({ start: m.va, end: m.va + m.size });
    }
  } catch (e) {
    if (!isVigilError(e)) throw e;
    k.issues.add('module-carving', 'bound', `module area page tables: ${e.message}`);
  }
  const out: CarvedModule[] = [];
  for (const run of runs) {
    // Read in pieces that overlap by one struct module, so a struct across a piece boundary is seen whole.
    for (let at = run.start; at < run.end; at += BigInt(READ_PIECE)) {
      const len = Number(
        run.end - at < BigInt(READ_PIECE + off.size) ? run.end - at : BigInt(READ_PIECE + off.size),
      );
      const buf = k.space.tryRead(at, len);
      if (!buf) {
        k.issues.add('module-carving', 'unmapped', `module memory at ${hex(at)} vanished while carving`);
        continue;
      }
      const limit = Math.min(buf.length - off.size, READ_PIECE - 1);
      for (let o = 0; o <= limit; o += MODULE_ALIGN) {
        if (buf.readUInt32LE(o + off.state) > off.maxState) continue;
        const va = at + BigInt(o);
        const mk = off.mkobjMod !== undefined && buf.readBigUInt64LE(o + off.mkobjMod) === va;
        const mt = off.mtnMod !== undefined && buf.readBigUInt64LE(o + off.mtnMod) === va;
        if (!mk && !mt) continue;
        if (!isKernelPointer(buf.readBigUInt64LE(o + off.listNext))) continue;
        if (!isKernelPointer(buf.readBigUInt64LE(o + off.listPrev))) continue;
        const nameBytes = buf.subarray(o + off.name, o + off.name + off.nameLen);
        const nul = nameBytes.indexOf(0);
        if (nul <= 0) continue;
        const name = nameBytes.toString('latin1', 0, nul);
        if (!NAME_RE.test(name)) continue;
        if (!insideOwnMemory(k, va)) continue;
        out.push({ address: va, name, state: buf.readUInt32LE(o + off.state) });
      }
    }
  }
  return out;
}

/** True when the struct module at `va` lies inside one of the memory regions it describes. */
function insideOwnMemory(k: KernelAccess, va: bigint): boolean {
  try {
    const mem = readModuleMemory(k, k.view('module', va));
    return mem.regions.some((r) => va >= r.base && va < r.base + r.size);
  } catch (e) {
    if (isVigilError(e)) return false;
    throw e;
  }
}

/**
 * The modules in mod_tree (struct mod_tree_root: a latch tree of two rb-trees over mod_tree_node, each
 * embedded in a module's memory layout with a back-pointer `mod`). Undefined when the kernel has none.
 */
export function modTreeModules(k: KernelAccess): Set<bigint> | undefined {
  const root = k.symbols.address('mod_tree');
  if (
    root === undefined ||
    k.types.find('mod_tree_root') === undefined ||
    !hasMember(k, 'mod_tree_node', 'mod')
  ) {
    return undefined;
  }
  const t = k.types;
  const treeOff = BigInt(t.offsetof('mod_tree_root', 'root.tree'));
  const rbSize = BigInt(t.sizeof('rb_node'));
  const nodeOff = BigInt(t.offsetof('mod_tree_node', 'node'));
  const modOff = BigInt(t.offsetof('mod_tree_node', 'mod'));
  const offsets = { left: t.offsetof('rb_node', 'rb_left'), right: t.offsetof('rb_node', 'rb_right') };
  const out = new Set<bigint>();
  // Both copies of the latch tree: they differ only while a module is inserted or removed.
  for (const copy of [0n, 1n]) {
    const nodes = rbTreeNodes(k.readPointer, root + treeOff + copy * BigInt(t.sizeof('rb_root')), offsets, {
      walker: 'mod_tree',
      max: 2 * MAX_MODULES,
      issues: k.issues,
    });
    for (const rb of nodes) {
      const mod = k.readPointer(rb - copy * rbSize - nodeOff + modOff);
      if (mod !== undefined && mod !== 0n) out.add(mod);
    }
  }
  return out;
}

export type ModuleView = 'list' | 'sysfs' | 'modTree' | 'memory';

export interface ModuleSighting {
  address: bigint;
  name: string;
  views: Record<ModuleView, boolean>;
  module?: KernelModule;
}

export interface CrossView {
  sightings: ModuleSighting[];
  /** Views this kernel offers (mod_tree can be compiled out). */
  available: ModuleView[];
}

/** Every module any view knows, with the views it is in. */
export function crossViewModules(k: KernelAccess): CrossView {
  const listed = listModules(k);
  const byAddr = new Map<bigint, ModuleSighting>();
  const none = (): Record<ModuleView, boolean> => ({
    list: false,
    sysfs: false,
    modTree: false,
    memory: false,
  });
  const see = (address: bigint, view: ModuleView, name?: string): void => {
    let s = byAddr.get(address);
    if (!s) byAddr.set(address, (s = { address, name: name ?? '', views: none() }));
    s.views[view] = true;
    if (!s.name && name) s.name = name;
  };
  for (const m of listed) {
    see(m.address, 'list', m.name);
    byAddr.get(m.address)!.module = m;
  }
  for (const o of listModuleKobjects(k))
    if (o.module !== undefined) see(o.module, 'sysfs', o.moduleName ?? o.name);
  const tree = modTreeModules(k);
  for (const a of tree ?? []) see(a, 'modTree');
  for (const c of carveModules(k)) see(c.address, 'memory', c.name);
  for (const s of byAddr.values()) {
    if (s.module) continue;
    try {
      s.module = readModule(k, k.view('module', s.address));
      if (!s.name) s.name = s.module.name;
    } catch (e) {
      if (!isVigilError(e)) throw e;
    }
  }
  return {
    sightings: [...byAddr.values()],
    available: ['list', 'sysfs', ...(tree ? (['modTree'] as const) : []), 'memory'],
  };
}

const VIEW_TEXT: Record<ModuleView, string> = {
  list: 'the module list',
  sysfs: '/sys/module',
  modTree: 'mod_tree',
  memory: 'module memory',
};

function moduleEvidence(s: ModuleSighting, available: readonly ModuleView[]): Record<string, unknown> {
  const m = s.module;
  return {
    module: s.name,
    address: hex(s.address),
    ...(m
      ? {
          state: m.state,
          base: hex(m.base),
          size: hex(m.size),
          regions: m.regions.map((r) => ({ kind: r.kind, base: hex(r.base), size: hex(r.size) })),
          taints: m.taintFlags,
          ...(m.anomalies.length > 0 ? { anomalies: m.anomalies } : {}),
        }
      : {}),
    views: Object.fromEntries(available.map((v) => [v, s.views[v]])),
  };
}

/** Findings from a cross view: hidden modules, and live listed modules missing from another view. */
export function hiddenModuleFindings(cv: CrossView): Finding[] {
  const out: Finding[] = [];
  for (const s of cv.sightings) {
    const seenIn = cv.available.filter((v) => s.views[v]);
    const evidence = moduleEvidence(s, cv.available);
    if (!s.views.list) {
      // A module being unloaded leaves the list, sysfs and mod_tree as MODULE_STATE_UNFORMED moments
      // before its memory is freed: memory alone in that state is not a hiding module.
      if (seenIn.length === 1 && s.views.memory && s.module?.state === 'MODULE_STATE_UNFORMED') continue;
      const where = s.module
        ? ` at ${hex(s.module.base)} (size ${hex(s.module.size)})`
        : ` (struct module at ${hex(s.address)})`;
      out.push({
        key: `hidden:${s.name}:${hex(s.address)}`,
        severity: 'critical',
        technique: TECHNIQUE,
        summary: `module ${s.name} is hidden: in memory${where}, not on the module list (seen in ${seenIn.map((v) => VIEW_TEXT[v]).join(', ')})`,
        evidence,
      });
      continue;
    }
    if (s.module?.state !== 'MODULE_STATE_LIVE') continue; // loading or unloading: views catch up
    const missing = cv.available.filter((v) => v !== 'memory' && !s.views[v]);
    if (missing.length === 0) continue;
    out.push({
      key: `unlinked:${s.name}:${missing.join('+')}`,
      severity: 'high',
      technique: TECHNIQUE,
      summary: `module ${s.name} is on the module list but missing from ${missing.map((v) => VIEW_TEXT[v]).join(' and ')}`,
      evidence: { ...evidence, missing },
    });
  }
  return out;
}

export const hiddenModulePolicy = definePolicy<Kernel>({
  id: 'hidden-module',
  title: 'Hidden kernel module',
  description:
    'Cross-view of kernel modules: the module list against /sys/module kobjects, the mod_tree address tree ' +
    'and struct module instances carved from module-area memory; a module missing from the list is hidden.',
  technique: TECHNIQUE,
  severity: 'critical',
  requires: ['kernel'],
  defaultIntervalMs: 10_000,
  poll(ctx) {
    const k = ctx.requireKernel();
    return pollFresh(ctx, k, () => hiddenModuleFindings(crossViewModules(k)));
  },
});
