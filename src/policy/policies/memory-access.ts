// memory-access: Livewire's memory access enforcer for the kernel image. Kernel text and read-only data
// must not change after boot; the system call tables and the IDT must keep pointing where they pointed.
//
//  - Text and rodata are read every sweep, normalised, and compared per 64 KiB chunk with what was learned
//    on the first attach (SHA-256 per chunk in the baseline; the chunk's bytes kept in memory while vigil
//    runs, so a change is reported with its exact offsets, symbol and old/new bytes; a change found against
//    a baseline from an earlier run is placed by 32-bit digests of its 256-byte blocks):
//    kernel-text-integrity.ts, kernel-text-state.ts, kernel-text-changes.ts.
//  - Normalising: the kernel itself patches its text at run time, at known places only. Jump labels (the
//    kernel's __jump_table: nop ↔ jmp to the entry's target), static calls (.static_call_sites and the
//    __SCT__ trampolines: call/jmp into kernel text, nop, ret, "xor eax,eax"), ftrace's fentry sites (nop ↔
//    call to ftrace_caller/ftrace_regs_caller or a registered ftrace_ops' trampoline; ftrace_pages'
//    records), ftrace_call/ftrace_regs_call inside the ftrace entry code, the BPF dispatcher. A site in any
//    of the states the kernel's own patching produces (and text_poke_bp's transient int3) hashes as zeros,
//    so flipping a static key or enabling a tracer changes nothing. A site in any other state is reported
//    even without a baseline: no kernel mechanism writes a jmp over an fentry nop. The sites and their
//    accepted states are kernel knowledge: os/linux/tables (patch-sites.ts, normalize-text.ts).
//  - sys_call_table (masked out of the rodata hash) is checked entry by entry against the baseline and
//    for shape: every entry is the entry point of a __x64_sys_*/__do_sys_*/sys_ni_syscall function in
//    kernel text. The IDT (idt_table) gate by gate against the baseline and for shape (handler in kernel
//    text; the reserved vectors' early handlers in init text), and the CPU entry area's read-only IDT alias
//    (what IDTR points at) must map idt_table's page: kernel-tables-integrity.ts.
//  - Event-driven: QEMU's GDB stub can set write watchpoints on a few critical entries (armWatchpoints);
//    a hit becomes a VmEvent this policy checks at once: kernel-watchpoints.ts.
//  - The system call entry MSRs (LSTAR, CSTAR, SYSENTER_EIP) of every vCPU against the kernel's entry
//    symbols, read from a QEMU device-state snapshot at most once a minute: syscall-msr.ts.
import type { Kernel } from '../../os/linux/kernel.js';
import type { KernelAccess } from '../../os/linux/modules/access.js';
import {
  CodeAttributor,
  ftraceTargets,
  listFtraceOps,
  listSyscallTables,
  type FtraceCallees,
} from '../../os/linux/tables/index.js';
import type { BaselineAccess } from '../baseline.js';
import { definePolicy } from '../policy.js';
import type { Finding } from '../types.js';
import { idtFindings, learnTables, syscallFindings } from './kernel-tables-integrity.js';
import { checkImageRanges, learnImageRanges, type RangeSummary } from './kernel-text-integrity.js';
import type { IntegrityKernel } from './kernel-text-state.js';
import { WATCH_EVENT, watchFindings } from './kernel-watchpoints.js';
import { idtBaseline, tableBaseline } from './memory-access-baseline.js';
import { pollFresh } from './poll-fresh.js';
import { withSyscallMsrFindings } from './syscall-msr.js';

const TECHNIQUE = 'T1014';

function sweepTargets(k: KernelAccess, attr?: CodeAttributor): FtraceCallees {
  return ftraceTargets(k, listFtraceOps(k), attr);
}

function learnIntegrity(k: IntegrityKernel, b: BaselineAccess): void {
  const targets = sweepTargets(k);
  learnImageRanges(k, b, targets);
  learnTables(k, b);
}

export interface IntegrityReport {
  findings: Finding[];
  /** Per range: bytes compared, chunks, chunks that differ from the baseline, patch sites in no accepted state. */
  ranges: RangeSummary[];
}

/** One integrity check of the kernel image, syscall tables and IDT against `b` (which may be empty). */
export function checkIntegrity(k: IntegrityKernel, b: BaselineAccess): IntegrityReport {
  const attr = new CodeAttributor(k);
  const targets = sweepTargets(k, attr);
  const { findings, ranges, text } = checkImageRanges(k, b, targets, attr);
  findings.push(
    ...syscallFindings(k, listSyscallTables(k, { attributor: attr }), tableBaseline(b), text, attr),
  );
  findings.push(...idtFindings(k, idtBaseline(b), attr));
  return { findings, ranges };
}

export const memoryAccessPolicy = definePolicy<Kernel>({
  id: 'memory-access',
  title: 'Kernel memory integrity',
  description:
    'Kernel text and read-only data hashed per 64 KiB chunk against the first attach (run-time patch sites ' +
    'of jump labels, static calls and ftrace normalised), the system call table and the IDT entry by entry; ' +
    'changes named by address, symbol and bytes. Under vigil watch, GDB-stub write watchpoints on critical ' +
    'entries raise at once. ' +
    'The syscall entry MSRs (LSTAR, CSTAR, SYSENTER_EIP) of each vCPU against the kernel entry points, at most ' +
    'once a minute (a QEMU device-state snapshot: needs guest RAM in a shared memory backend).',
  technique: TECHNIQUE,
  severity: 'high',
  requires: ['kernel'],
  defaultIntervalMs: 10_000,
  eventNames: [WATCH_EVENT],
  learn(ctx, baseline) {
    const k = ctx.requireKernel();
    pollFresh(ctx, k, () => learnIntegrity(k, baseline));
  },
  poll(ctx) {
    const k = ctx.requireKernel();
    return withSyscallMsrFindings(ctx, k, pollFresh(ctx, k, () => checkIntegrity(k, ctx.baseline)).findings);
  },
  onEvent(ev, ctx) {
    if (ev.source !== 'gdb' || ev.name !== WATCH_EVENT) return [];
    const k = ctx.requireKernel();
    // The guest wrote since the last sweep: nothing cached before the hit may be trusted.
    if (!k.epoch.frozen) k.refresh();
    return watchFindings(ev, k, ctx.baseline);
  },
});
