// The sysfs view of modules: module_kset (a struct kset *) lists a kobject for every /sys/module/NAME
// directory on kset->list (through kobject.entry). Each is embedded in a struct module_kobject whose
// `mod` points back at the struct module — NULL for built-in "modules" that only have parameters or a
// version in sysfs. A module unlinked from the `modules` list but still here is the classic cross-view
// discrepancy; so is a kobject whose module does not point back at it.
import { isVigilError } from '../../../util/errors.js';
import { listHeadEntries } from '../walk.js';
import { hex, type KernelAccess } from './access.js';
import { issueKind, MAX_MODULES } from './list.js';

export interface ModuleKobject {
  /** Address of the kobject (module_kobject.kobj). */
  address: bigint;
  /** The kobject's name: the /sys/module directory name. */
  name: string;
  /** module_kobject.mod; undefined for built-in entries (NULL). */
  module?: bigint;
  /** The struct module's own name, when `module` is set and readable. */
  moduleName?: string;
  /** True when this is a built-in kernel "module" (mod is NULL). */
  builtin: boolean;
  /** Inconsistencies: mod->mkobj.kobj is not this kobject, names differ, kobj_type is not module_ktype. */
  anomalies: string[];
}

/** Built-ins with sysfs entries are many (~70 on Debian 6.1) besides the loaded modules. */
const MAX_KOBJECTS = 4 * MAX_MODULES;

export function listModuleKobjects(kernel: KernelAccess, options: { max?: number } = {}): ModuleKobject[] {
  const ksetVa = kernel.readPointer(kernel.sym('module_kset'));
  if (ksetVa === undefined || ksetVa === 0n) {
    kernel.issues.add(
      'module-kobjects',
      ksetVa === undefined ? 'unmapped' : 'malformed',
      'module_kset is not set',
    );
    return [];
  }
  let head: bigint;
  try {
    head = kernel.view('kset', ksetVa).addressOf('list');
  } catch (e) {
    if (!isVigilError(e)) throw e;
    kernel.issues.add('module-kobjects', issueKind(e.kind), `module_kset ${hex(ksetVa)}: ${e.message}`);
    return [];
  }
  const entryOff = BigInt(kernel.types.offsetof('kobject', 'entry'));
  const kobjOff = BigInt(kernel.types.offsetof('module_kobject', 'kobj'));
  const mkobjKobjOff = BigInt(kernel.types.offsetof('module', 'mkobj.kobj'));
  const moduleKtype = kernel.symbols.address('module_ktype');
  const out: ModuleKobject[] = [];
  const walk = listHeadEntries(kernel.readPointer, head, {
    walker: 'module-kobjects',
    max: options.max ?? MAX_KOBJECTS,
    issues: kernel.issues,
  });
  for (const entry of walk) {
    const address = entry - entryOff;
    try {
      const kobj = kernel.view('kobject', address);
      const name = kobj.cstring('name');
      const anomalies: string[] = [];
      const ktype = kobj.ptr('ktype');
      if (moduleKtype !== undefined && ktype !== moduleKtype) {
        anomalies.push(`kobj_type ${hex(ktype)} is not module_ktype`);
      }
      const mk = kernel.view('module_kobject', address - kobjOff);
      const mod = mk.ptr('mod');
      const item: ModuleKobject = { address, name, builtin: mod === 0n, anomalies };
      if (mod !== 0n) {
        item.module = mod;
        try {
          const m = kernel.view('module', mod);
          item.moduleName = m.cstring('name');
          if (item.moduleName !== name) anomalies.push(`module is named "${item.moduleName}"`);
          if (mod + mkobjKobjOff !== address) anomalies.push('module->mkobj.kobj is another kobject');
        } catch (e) {
          if (!isVigilError(e)) throw e;
          anomalies.push(`module ${hex(mod)} is unreadable: ${e.message}`);
        }
      }
      out.push(item);
    } catch (e) {
      if (!isVigilError(e)) throw e;
      kernel.issues.add('module-kobjects', issueKind(e.kind), `kobject at ${hex(address)}: ${e.message}`);
    }
  }
  return out;
}
