// The VMM interface: how vigil reaches a virtual machine from the host. Nothing here knows about Linux.

/** One range of guest-physical RAM. Guest-physical space has holes (q35 puts RAM above 4 GiB). */
export interface PhysRange {
  /** First guest-physical address of the range. */
  readonly start: bigint;
  /** Length in bytes. */
  readonly size: bigint;
}

/** Guest-physical bytes, wherever they live: a shared-memory file, /proc/PID/mem, a dump. */
export interface PhysicalMemory {
  /** Short description for `vigil info`, e.g. "shm file /dev/shm/x" or "ELF core dump". */
  readonly description: string;
  /** RAM ranges in guest-physical address order, non-overlapping. */
  readonly ranges: readonly PhysRange[];
  /**
   * Read `length` bytes at guest-physical `paddr`. Bytes in holes (no RAM) read as zero and are counted
   * in `holes` of the returned result when the caller asks via `readChecked`.
   */
  read(paddr: bigint, length: number, into?: Buffer): Buffer;
  /** Like read, but throws VigilError(kind 'unmapped') if any byte falls outside RAM. */
  readStrict(paddr: bigint, length: number): Buffer;
  close(): void;
}

/** x86-64 vCPU state vigil uses; values are unsigned 64-bit. Absent fields were not offered. */
export interface X86Registers {
  rip: bigint;
  rsp: bigint;
  rax?: bigint;
  rbx?: bigint;
  rcx?: bigint;
  rdx?: bigint;
  rsi?: bigint;
  rdi?: bigint;
  rbp?: bigint;
  cr0: bigint;
  cr2?: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  fsBase?: bigint;
  gsBase?: bigint;
  kernelGsBase?: bigint;
  cs?: bigint;
  eflags?: bigint;
}

export interface Vcpu {
  readonly index: number;
  registers(): Promise<X86Registers>;
}

/** Events from a live VM: QMP events, GDB stub stops. */
export interface VmEvent {
  source: 'qmp' | 'gdb' | 'vigil';
  name: string;
  /** Milliseconds since the epoch. */
  time: number;
  data: Record<string, unknown>;
}

export interface MachineControl {
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Write an ELF core of guest memory to `path` (QMP dump-guest-memory). */
  dump(path: string): Promise<void>;
  /** True while the VM is paused. */
  isPaused(): Promise<boolean>;
}

export interface DebugHandle {
  remove(): Promise<void>;
}

export interface MachineDebug {
  breakpoint(va: bigint): Promise<DebugHandle>;
  watch(va: bigint, len: number, kind: 'w' | 'r' | 'rw'): Promise<DebugHandle>;
}

/** What a command run in the guest by its agent produced. */
export interface GuestExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  /** True when the agent or vigil cut the output at its size bound. */
  truncated: boolean;
}

/**
 * qemu-guest-agent inside the guest: what the guest itself says. Its answers come from the guest's kernel
 * and may be lies — comparing them with what vigil reads from memory is the lie detector's point.
 */
export interface GuestAgent {
  /** Run a program in the guest and wait, bounded in time and output, for it to end. */
  exec(
    path: string,
    args: readonly string[],
    options?: { timeoutMs?: number; maxOutput?: number },
  ): Promise<GuestExecResult>;
  /** Read a whole guest file, bounded in size (files under /proc report size 0: read until EOF). */
  readFile(path: string, options?: { maxBytes?: number }): Promise<Buffer>;
  close(): Promise<void>;
}

/** The model-specific registers of one vCPU that say where system calls enter the kernel. */
export interface SyscallEntryMsrs {
  vcpu: number;
  /** MSR_LSTAR: the 64-bit SYSCALL entry point. */
  lstar: bigint;
  /** MSR_CSTAR: the compat-mode SYSCALL entry point. */
  cstar?: bigint;
  /** MSR_STAR: segment selectors for SYSCALL/SYSRET. */
  star?: bigint;
  /** MSR_IA32_SYSENTER_EIP: the SYSENTER entry point. */
  sysenterEip?: bigint;
}

/** vCPU state beyond what the register interfaces offer (QEMU: from a device-state snapshot). */
export interface MachineCpuState {
  syscallEntryMsrs(): Promise<readonly SyscallEntryMsrs[]>;
}

/** A VM as vigil sees it. A dump is a Machine without events or control. */
export interface Machine {
  readonly name: string;
  readonly memory: PhysicalMemory;
  readonly vcpus: readonly Vcpu[];
  readonly events?: AsyncIterable<VmEvent>;
  readonly control?: MachineControl;
  readonly debug?: MachineDebug;
  /** qemu-guest-agent, when the VM has one vigil can reach. */
  readonly agent?: GuestAgent;
  /** Why there is no `agent` when the VM has an agent port (held by another client, not answering…). */
  readonly agentProblem?: string;
  readonly cpuState?: MachineCpuState;
  close(): Promise<void>;
}
