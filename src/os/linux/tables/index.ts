// Kernel tables an attacker patches: system call tables, the IDT, the SYSCALL entry point; kernel image
// sections and a hash of kernel text.
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
