// The kernel's module list: `modules` (a list_head) threads every struct module through module->list, in
// load order, newest first — what /proc/modules and lsmod show. A rootkit that unlinks itself from this
// list disappears from it; the sysfs view (kobjects.ts) is the other place a module is registered.
import { isVigilError } from '../../../util/errors.js';
import type { StructView } from '../btf/index.js';
import { listHeadEntries, type WalkIssueKind } from '../walk.js';
import { hasMember, hex, type KernelAccess } from './access.js';
import { readModuleMemory, type ModuleRegion } from './layout.js';
import { taintLetters } from './taints.js';

export interface KernelModule {
  /** Address of the struct module. */
  address: bigint;
  name: string;
  /** enum module_state name (MODULE_STATE_LIVE, _COMING, _GOING, _UNFORMED), or "unknown(N)". */
  state: string;
  /** Where /proc/modules says it is (core_layout.base, or mem[MOD_TEXT].base on 6.4+). */
  base: bigint;
  /** /proc/modules' size column: all of the module's memory. */
  size: bigint;
  regions: ModuleRegion[];
  /** References held (refcnt - MODULE_REF_BASE), when the kernel can unload modules. */
  refcount?: number;
  /** module->taints. */
  taints: bigint;
  /** Taint letters as /proc/modules shows them inside "(…)": "OE". */
  taintFlags: string;
  /** Modules that depend on this one (its source_list), as /proc/modules' "used by" column. */
  usedBy: string[];
  /** What did not look like a kernel-made module: name not NUL-terminated, implausible region… */
  anomalies: string[];
}

export interface ModuleWalkOptions {
  /** Most modules to list; a distribution kernel with everything loaded has a few hundred. */
  max?: number;
}

export const MAX_MODULES = 4096;
/** Dependants per module (source_list) to read. */
const MAX_USERS = 1024;
const MODULE_REF_BASE = 1;

/** Every module on the `modules` list. Unreadable entries are skipped and recorded in kernel.issues. */
export function listModules(kernel: KernelAccess, options: ModuleWalkOptions = {}): KernelModule[] {
  const head = kernel.sym('modules');
  const listOff = BigInt(kernel.types.offsetof('module', 'list'));
  const out: KernelModule[] = [];
  const walk = listHeadEntries(kernel.readPointer, head, {
    walker: 'modules',
    max: options.max ?? MAX_MODULES,
    issues: kernel.issues,
  });
  for (const entry of walk) {
    const address = entry - listOff;
    try {
      out.push(readModule(kernel, kernel.view('module', address)));
    } catch (e) {
      if (!isVigilError(e)) throw e;
      kernel.issues.add('modules', issueKind(e.kind), `module at ${hex(address)}: ${e.message}`);
    }
  }
  return out;
}

/** One struct module. Throws VigilError when its fields cannot be read. */
export function readModule(kernel: KernelAccess, m: StructView): KernelModule {
  const anomalies: string[] = [];
  const nameBytes = m.bytes('name');
  if (!nameBytes.includes(0)) anomalies.push('name is not NUL-terminated');
  const name = m.cstring('name');
  const stateValue = m.int('state');
  const state = m.enumName('state') ?? `unknown(${stateValue})`;
  const memory = readModuleMemory(kernel, m);
  anomalies.push(...memory.anomalies);
  const taints = hasMember(kernel, 'module', 'taints') ? m.int('taints') : 0n;
  const refcount = hasMember(kernel, 'module', 'refcnt')
    ? Number(m.int('refcnt.counter')) - MODULE_REF_BASE
    : undefined;
  return {
    address: m.address,
    name,
    state,
    base: memory.base,
    size: memory.size,
    regions: memory.regions,
    ...(refcount !== undefined ? { refcount } : {}),
    taints,
    taintFlags: taintLetters(taints, true),
    usedBy: moduleUsers(kernel, m),
    anomalies,
  };
}

/** Names of the modules using this one: struct module_use on module->source_list, use->source->name. */
function moduleUsers(kernel: KernelAccess, m: StructView): string[] {
  if (!hasMember(kernel, 'module', 'source_list') || kernel.types.find('module_use') === undefined) return [];
  const useOff = BigInt(kernel.types.offsetof('module_use', 'source_list'));
  const users: string[] = [];
  const walk = listHeadEntries(kernel.readPointer, m.addressOf('source_list'), {
    walker: 'modules.usedBy',
    max: MAX_USERS,
    issues: kernel.issues,
  });
  for (const entry of walk) {
    try {
      users.push(
        kernel
          .view('module_use', entry - useOff)
          .deref('source')
          .cstring('name'),
      );
    } catch (e) {
      if (!isVigilError(e)) throw e;
      kernel.issues.add('modules.usedBy', issueKind(e.kind), `module_use at ${hex(entry)}: ${e.message}`);
    }
  }
  return users;
}

export function issueKind(kind: string): WalkIssueKind {
  return kind === 'unmapped' || kind === 'bound' || kind === 'cycle' ? kind : 'malformed';
}
