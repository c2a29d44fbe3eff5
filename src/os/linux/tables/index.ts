// Kernel tables an attacker patches: system call tables, the IDT, the SYSCALL entry point; kernel image
// sections, their bytes and a hash of kernel text; the places where the kernel patches its own text at run
// time, the ftrace_ops behind them, and the branches an inline hook writes.
export {
  CodeAttributor,
  describeCode,
  type Attribution,
  type CodeDescription,
  type CodeLocation,
} from './attribute.js';
export {
  expectedSyscallEntry,
  listSyscallTables,
  readSyscallTable,
  tableSlots,
  MAX_SYSCALLS,
  SYSCALL_TABLES,
  type SyscallEntry,
  type SyscallTable,
  type SyscallTableOptions,
} from './syscalls.js';
export {
  decodeGate,
  readIdt,
  GATE_SIZE,
  IDT_ENTRIES,
  type GateType,
  type IdtEntry,
  type IdtOptions,
} from './idt.js';
export {
  hashKernelRange,
  hashKernelText,
  kernelSections,
  kernelTextRange,
  MAX_HASH_RANGE,
  type KernelSection,
  type RangeHash,
} from './sections.js';
export { syscallNames, isSyscallFunction } from './syscall-names.js';
export { decodeBranch, type Branch, type BranchKind } from './branch.js';
export {
  imageRanges,
  inModuleArea,
  readImageBytes,
  textSnapshot,
  MODULE_AREA,
  type EpochKernel,
  type ImageRange,
  type ImageRead,
  type TextSnapshot,
} from './image.js';
export { listFtraceOps, MAX_FTRACE_OPS, type FtraceOps } from './ftrace-ops.js';
export { ftraceTargets, FtraceCallees, type CallTargets } from './ftrace-callees.js';
export {
  firstSiteFrom,
  patchSites,
  SITE_FORMS,
  SITE_KIND_INDEX,
  SITE_KINDS,
  type PatchSites,
  type SiteKind,
} from './patch-sites.js';
export { normalizeText, type NormalizeOptions } from './normalize-text.js';
