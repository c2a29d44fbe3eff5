// Kernel modules: the `modules` list, the sysfs kobject view, taints, and address → module attribution.
export { hasMember, type KernelAccess } from './access.js';
export { listModules, readModule, MAX_MODULES, type KernelModule, type ModuleWalkOptions } from './list.js';
export { listModuleKobjects, type ModuleKobject } from './kobjects.js';
export { moduleAt, type ModuleHit } from './locate.js';
export {
  moduleLayoutKind,
  readModuleMemory,
  MAX_MODULE_REGION,
  type ModuleLayoutKind,
  type ModuleMemory,
  type ModuleRegion,
} from './layout.js';
export {
  kernelTaint,
  taintLetters,
  taintNames,
  TAINT_FLAGS,
  type KernelTaint,
  type TaintFlag,
} from './taints.js';
