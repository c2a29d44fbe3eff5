// The system call entry MSRs, part of memory-access: where each vCPU enters the kernel on SYSCALL (64-bit:
// IA32_LSTAR; compat: IA32_CSTAR) and SYSENTER (IA32_SYSENTER_EIP). syscall_init() writes immediates, so
// no guest memory holds the pristine values: they come from the kernel image's own symbols —
// entry_SYSCALL_64, entry_SYSCALL_compat (ignore_sysret without IA32 emulation; Intel CPUs never get CSTAR
// written, it stays 0), entry_SYSENTER_compat (0 without IA32 emulation). A rootkit that points LSTAR at
// its own stub sees every system call before the kernel does, without touching the table or kernel text.
//
// With page-table isolation Debian's 6.1 still enters at entry_SYSCALL_64 (checked on the lab guest with
// pti=on): the entry text is mapped in the user page tables. Kernels 4.15–4.19 entered through a per-CPU
// trampoline in the CPU entry area instead: a value that maps the same physical byte as
// entry_SYSCALL_64_trampoline is accepted when the kernel has that symbol.
//
// The values come from the Machine's cpuState (QEMU: a device-state snapshot, which stops the guest for a
// few milliseconds), so the check runs at most every `syscallMsrIntervalMs` (default 60 s) and its findings
// are carried over in between. Without cpuState (a dump, RAM read through /proc/PID/mem) it is skipped
// with the reason; a paused VM is not snapshotted either.
import type { KernelAccess } from '../../os/linux/modules/access.js';
import { hex } from '../../os/linux/modules/access.js';
import { CodeAttributor, describeCode } from '../../os/linux/tables/index.js';
import { isVigilError } from '../../util/errors.js';
import type { Machine, SyscallEntryMsrs } from '../../vmm/types.js';
import { booleanOption, numberOption, type SweepContext } from '../policy.js';
import type { Finding } from '../types.js';

export const SYSCALL_MSR_CHECK = 'syscall-msr';
export const DEFAULT_MSR_INTERVAL_MS = 60_000;
/** After a snapshot this VM does not support, the next attempt waits this many intervals. */
const UNSUPPORTED_BACKOFF = 10;
const TECHNIQUE = 'T1014';

type MsrName = 'LSTAR' | 'CSTAR' | 'SYSENTER_EIP';
const MSR_INDEX: Readonly<Record<MsrName, string>> = {
  LSTAR: '0xc0000082',
  CSTAR: '0xc0000083',
  SYSENTER_EIP: '0x176',
};

/** One value the kernel itself writes into an entry MSR. */
export interface EntryPoint {
  symbol: string;
  address: bigint;
}

export interface ExpectedEntries {
  /** entry_SYSCALL_64: the one LSTAR value (besides the PTI trampoline alias of old kernels). */
  lstar: EntryPoint;
  /** Physical address of entry_SYSCALL_64_trampoline when the kernel has one (4.15–4.19 with PTI). */
  trampolinePhysical?: bigint;
  /** Accepted CSTAR values (0 is accepted too: never written on Intel). */
  cstar: EntryPoint[];
  /** Accepted SYSENTER_EIP values (0 is accepted too: IA32 emulation off). */
  sysenter: EntryPoint[];
}

/** The entry points from the kernel's symbols; undefined when it has no entry_SYSCALL_64 (not x86-64). */
export function expectedEntries(k: KernelAccess): ExpectedEntries | undefined {
  const at = (symbol: string): EntryPoint | undefined => {
    const address = k.symbols.address(symbol);
    return address === undefined ? undefined : { symbol, address };
  };
  const lstar = at('entry_SYSCALL_64');
  if (!lstar) return undefined;
  const out: ExpectedEntries = {
    lstar,
    cstar: [at('entry_SYSCALL_compat'), at('ignore_sysret')].filter((e) => e !== undefined),
    sysenter: [at('entry_SYSENTER_compat')].filter((e) => e !== undefined),
  };
  const tramp = k.symbols.address('entry_SYSCALL_64_trampoline');
  const pa = tramp !== undefined ? k.space.translate(tramp) : undefined;
  if (pa !== undefined) out.trampolinePhysical = pa;
  return out;
}

/** Where an address points: module and offset, kernel symbol, or neither (for summaries and evidence). */
function owner(attr: CodeAttributor, va: bigint): { text: string; evidence: Record<string, unknown> } {
  const d = describeCode(attr, va);
  return { text: d.place, evidence: d.evidence };
}

/** Findings for every vCPU whose entry MSRs hold a value the kernel does not write. */
export function syscallMsrFindings(
  k: KernelAccess,
  msrs: readonly SyscallEntryMsrs[],
  expected: ExpectedEntries,
  attr: CodeAttributor = new CodeAttributor(k),
): Finding[] {
  const out: Finding[] = [];
  const check = (vcpu: number, msr: MsrName, value: bigint, ok: readonly EntryPoint[], accept: boolean) => {
    if (accept || ok.some((e) => e.address === value)) return;
    const want = ok[0];
    const to = owner(attr, value);
    const wanted = want ? `${want.symbol} ${hex(want.address)}` : 'a kernel entry point';
    out.push({
      key: `msr:${msr.toLowerCase()}:${vcpu}`,
      severity: 'critical',
      technique: TECHNIQUE,
      summary: `syscall entry MSR ${msr} of vCPU ${vcpu} points to ${hex(value)} (${to.text}), not ${wanted}`,
      evidence: {
        vcpu,
        msr: `IA32_${msr}`,
        msrIndex: MSR_INDEX[msr],
        value: hex(value),
        expected: want ? hex(want.address) : null,
        expectedSymbol: want?.symbol ?? null,
        ...(ok.length > 1
          ? { accepted: ok.map((e) => ({ symbol: e.symbol, address: hex(e.address) })) }
          : {}),
        owner: to.evidence,
      },
    });
  };
  for (const m of msrs) {
    // 0: a vCPU the kernel never brought up (nosmp, maxcpus=) has the reset value.
    if (m.lstar !== 0n) {
      const alias =
        expected.trampolinePhysical !== undefined &&
        k.space.translate(m.lstar) === expected.trampolinePhysical;
      check(m.vcpu, 'LSTAR', m.lstar, [expected.lstar], alias);
    }
    if (m.cstar !== undefined && m.cstar !== 0n) check(m.vcpu, 'CSTAR', m.cstar, expected.cstar, false);
    if (m.sysenterEip !== undefined && m.sysenterEip !== 0n) {
      check(m.vcpu, 'SYSENTER_EIP', m.sysenterEip, expected.sysenter, false);
    }
  }
  return out;
}

// ---- as part of a policy's poll: throttled, carried over, skipped with a reason ----------------------------

interface MsrState {
  kernel: object;
  lastRun: number;
  /** When the next check is due. */
  nextDue: number;
  findings: Finding[];
  /** Why the last attempt could not read the MSRs (reported again until the next attempt). */
  skipped?: string;
  /** The last attempt met a passing condition (the VM paused): try again at the next poll. */
  retry?: boolean;
}

/** Per machine: a policy object serves every VM a monitor watches. */
const states = new WeakMap<object, MsrState>();

/** An error's message with its cause's (QEMU's own words for a refused migration). */
function reasonOf(e: Error): string {
  return e.cause instanceof Error ? `${e.message}: ${e.cause.message}` : e.message;
}

/** Why a machine offers no entry MSRs. */
export function noCpuStateReason(m: Machine): string {
  const live = m.events !== undefined || m.control !== undefined;
  return live
    ? 'needs the vCPU device state, which vigil reads from a QEMU snapshot only when guest RAM is a ' +
        'shared memory backend (memory-backend-file or -memfd with share=on): it would copy all of RAM otherwise'
    : 'needs the vCPU device state; a memory dump has none';
}

/**
 * The syscall-MSR findings for this poll: `base` plus a fresh check when one is due, or the last check's
 * findings (so that its alerts stay active) when not. Synchronous unless a snapshot is taken. A failed
 * read is noted (a partial view) rather than failing the whole policy.
 */
export function withSyscallMsrFindings(
  ctx: SweepContext,
  k: KernelAccess,
  base: Finding[],
): Finding[] | Promise<Finding[]> {
  // Operators who want no migration of their VMs at all turn the snapshot off.
  if (!booleanOption(ctx, 'syscallMsr', true)) {
    ctx.skip?.(SYSCALL_MSR_CHECK, 'turned off (memory-access option syscallMsr: false)');
    return base;
  }
  const cpu = ctx.machine.cpuState;
  if (!cpu) {
    ctx.skip?.(SYSCALL_MSR_CHECK, noCpuStateReason(ctx.machine));
    return base;
  }
  const interval = numberOption(ctx, 'syscallMsrIntervalMs', DEFAULT_MSR_INTERVAL_MS);
  const now = ctx.now();
  const prev = states.get(ctx.machine);
  if (prev && prev.kernel === k && !prev.retry && now < prev.nextDue && now >= prev.lastRun) {
    if (prev.skipped !== undefined) ctx.skip?.(SYSCALL_MSR_CHECK, prev.skipped);
    return [...base, ...prev.findings];
  }
  const expected = expectedEntries(k);
  if (!expected) {
    ctx.skip?.(SYSCALL_MSR_CHECK, 'the kernel has no entry_SYSCALL_64 symbol (not an x86-64 kernel?)');
    return base;
  }
  const state: MsrState = {
    kernel: k,
    lastRun: now,
    nextDue: now + interval,
    findings: prev?.kernel === k ? prev.findings : [],
  };
  states.set(ctx.machine, state);
  return cpu.syscallEntryMsrs().then(
    (msrs) => {
      state.findings = syscallMsrFindings(k, msrs, expected);
      return [...base, ...state.findings];
    },
    (e: unknown) => {
      if (!isVigilError(e)) throw e;
      if (e.kind === 'unsupported' || e.kind === 'state') {
        // Not the guest's doing: this VM cannot be snapshotted at all (RAM not shared…), or not now (paused:
        // what was found before stands until the next look).
        state.skipped = reasonOf(e);
        ctx.skip?.(SYSCALL_MSR_CHECK, state.skipped);
        if (e.kind === 'state') {
          state.retry = true;
          return [...base, ...state.findings];
        }
        // Lasting (a capability, a migration blocker, RAM that is not shared): look again much later, each
        // look at unshared RAM copies up to the stream cap before it is cancelled.
        state.nextDue = now + UNSUPPORTED_BACKOFF * interval;
        state.findings = [];
        return base;
      }
      ctx.note(e.kind, `syscall entry MSRs: ${e.toLine()}`);
      return [...base, ...state.findings];
    },
  );
}
