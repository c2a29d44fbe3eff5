import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SymbolTable } from '../../os/linux/kallsyms/symbol-table.js';
import type { KernelAccess } from '../../os/linux/modules/access.js';
import {
  FakeKernel,
  INIT_TEXT,
  KERNEL_END,
  KERNEL_TEXT,
  MODULE_AREA,
  TEXT_END,
} from '../../os/linux/modules/test-kernel.js';
import { VigilError } from '../../util/errors.js';
import type { Machine, MachineCpuState, SyscallEntryMsrs } from '../../vmm/types.js';
import { Engine } from '../engine.js';
import { definePolicy, type SweepContext } from '../policy.js';
import { FakeClock } from '../testkit.js';
import type { Finding } from '../types.js';
import {
  DEFAULT_MSR_INTERVAL_MS,
  SYSCALL_MSR_CHECK,
  expectedEntries,
  syscallMsrFindings,
  withSyscallMsrFindings,
} from './syscall-msr.js';

const ENTRY = KERNEL_TEXT + 0x9000n;
const COMPAT = KERNEL_TEXT + 0x9100n;
const SYSENTER = KERNEL_TEXT + 0x9200n;
const IGNORE_SYSRET = KERNEL_TEXT + 0x9300n;
const READ = KERNEL_TEXT + 0x1000n;
const TRAMPOLINE = KERNEL_TEXT + 0x9400n;
/** Where a 4.15–4.19 kernel's per-CPU trampoline alias would be (CPU entry area). */
const CEA_ALIAS = 0xfffffe0000007000n + (TRAMPOLINE & 0xfffn);

/**
 * The walkers' fake kernel with the entry symbols syscall_init() uses, a module "vk_lstar" in the module
 * area, and (optionally) an old kernel's SYSCALL trampoline with its CPU-entry-area alias.
 */
function kernel(opts: { trampoline?: boolean } = {}): KernelAccess {
  const fake = new FakeKernel();
  fake.addModule({ name: 'vk_lstar', base: MODULE_AREA + 0x2000n, size: 0x3000n });
  const symbols = SymbolTable.fromSymbols([
    { name: '_text', type: 'T', address: KERNEL_TEXT },
    { name: '_stext', type: 'T', address: KERNEL_TEXT },
    { name: '__x64_sys_read', type: 'T', address: READ },
    { name: 'entry_SYSCALL_64', type: 'T', address: ENTRY },
    { name: 'entry_SYSCALL_compat', type: 'T', address: COMPAT },
    { name: 'entry_SYSENTER_compat', type: 'T', address: SYSENTER },
    { name: 'ignore_sysret', type: 'T', address: IGNORE_SYSRET },
    ...(opts.trampoline ? [{ name: 'entry_SYSCALL_64_trampoline', type: 'T', address: TRAMPOLINE }] : []),
    { name: '_etext', type: 'T', address: TEXT_END },
    { name: '_sinittext', type: 'T', address: INIT_TEXT },
    { name: '_einittext', type: 'T', address: INIT_TEXT + 0x10000n },
    { name: 'modules', type: 'D', address: fake.at.modules },
    { name: '_end', type: 'B', address: KERNEL_END },
  ]);
  const real = fake.space;
  const space = Object.assign(Object.create(real) as typeof real, {
    translate: (va: bigint) => (va === CEA_ALIAS ? real.translate(TRAMPOLINE) : real.translate(va)),
  });
  return {
    types: fake.types,
    issues: fake.issues,
    view: fake.view,
    sym: fake.sym,
    readPointer: fake.readPointer,
    symbols,
    space,
    symbolize: (va: bigint) => symbols.symbolize(va),
  } as KernelAccess;
}

const clean = (vcpu: number): SyscallEntryMsrs => ({
  vcpu,
  lstar: ENTRY,
  cstar: COMPAT,
  star: 0x0023001000000000n,
  sysenterEip: SYSENTER,
});

describe('syscall entry MSRs against the kernel entry points', () => {
  test('expected values come from the kernel symbols', () => {
    const e = expectedEntries(kernel())!;
    assert.deepEqual(e.lstar, { symbol: 'entry_SYSCALL_64', address: ENTRY });
    assert.deepEqual(
      e.cstar.map((x) => x.symbol),
      ['entry_SYSCALL_compat', 'ignore_sysret'],
    );
    assert.deepEqual(
      e.sysenter.map((x) => x.symbol),
      ['entry_SYSENTER_compat'],
    );
    assert.equal(e.trampolinePhysical, undefined);
  });

  test('the values the kernel writes raise nothing (IA32 emulation off, Intel CSTAR, a vCPU never up)', () => {
    const k = kernel();
    const e = expectedEntries(k)!;
    const msrs: SyscallEntryMsrs[] = [
      clean(0),
      { vcpu: 1, lstar: ENTRY, cstar: IGNORE_SYSRET, sysenterEip: 0n },
      { vcpu: 2, lstar: ENTRY, cstar: 0n, sysenterEip: SYSENTER },
      { vcpu: 3, lstar: 0n, cstar: 0n, sysenterEip: 0n },
      { vcpu: 4, lstar: ENTRY },
    ];
    assert.deepEqual(syscallMsrFindings(k, msrs, e), []);
  });

  test('LSTAR pointing into a module: critical, named by module and offset, per vCPU', () => {
    const k = kernel();
    const stub = MODULE_AREA + 0x2040n;
    const found = syscallMsrFindings(k, [clean(0), { ...clean(1), lstar: stub }], expectedEntries(k)!);
    assert.equal(found.length, 1);
    const f = found[0]!;
    assert.equal(f.key, 'msr:lstar:1');
    assert.equal(f.severity, 'critical');
    assert.equal(f.technique, 'T1014');
    assert.equal(
      f.summary,
      `syscall entry MSR LSTAR of vCPU 1 points to 0x${stub.toString(16)} (module vk_lstar+0x40), ` +
        `not entry_SYSCALL_64 0x${ENTRY.toString(16)}`,
    );
    assert.deepEqual(f.evidence, {
      vcpu: 1,
      msr: 'IA32_LSTAR',
      msrIndex: '0xc0000082',
      value: `0x${stub.toString(16)}`,
      expected: `0x${ENTRY.toString(16)}`,
      expectedSymbol: 'entry_SYSCALL_64',
      owner: { address: `0x${stub.toString(16)}`, where: 'module', module: 'vk_lstar', moduleOffset: '0x40' },
    });
  });

  test('other kernel code, unknown memory, CSTAR and SYSENTER_EIP hooks', () => {
    const k = kernel();
    const found = syscallMsrFindings(
      k,
      [
        { vcpu: 0, lstar: READ + 0x10n, cstar: MODULE_AREA + 0x2100n, sysenterEip: 0xffff888000001000n },
        { vcpu: 1, lstar: 0xffffc90000010000n },
      ],
      expectedEntries(k)!,
    );
    const by = new Map(found.map((f) => [f.key, f]));
    assert.deepEqual([...by.keys()].sort(), [
      'msr:cstar:0',
      'msr:lstar:0',
      'msr:lstar:1',
      'msr:sysenter_eip:0',
    ]);
    assert.match(by.get('msr:lstar:0')!.summary, /\(__x64_sys_read\+0x10\), not entry_SYSCALL_64/);
    assert.match(by.get('msr:lstar:1')!.summary, /neither kernel nor module code/);
    assert.match(
      by.get('msr:cstar:0')!.summary,
      /CSTAR of vCPU 0 .*module vk_lstar\+0x100.*entry_SYSCALL_compat/,
    );
    assert.equal(by.get('msr:cstar:0')!.evidence.msrIndex, '0xc0000083');
    assert.equal((by.get('msr:cstar:0')!.evidence.accepted as unknown[]).length, 2);
    assert.match(by.get('msr:sysenter_eip:0')!.summary, /SYSENTER_EIP .*not entry_SYSENTER_compat/);
  });

  test('an old kernel’s PTI trampoline alias in the CPU entry area is accepted', () => {
    const k = kernel({ trampoline: true });
    const e = expectedEntries(k)!;
    assert.ok(e.trampolinePhysical !== undefined);
    assert.deepEqual(syscallMsrFindings(k, [{ ...clean(0), lstar: CEA_ALIAS }], e), []);
    // Another address in the entry area is not.
    assert.equal(syscallMsrFindings(k, [{ ...clean(0), lstar: CEA_ALIAS + 0x40n }], e).length, 1);
  });
});

// ---- throttling, carrying over and skipping, as memory-access runs it ------------------------------------------

class FakeCpuState implements MachineCpuState {
  calls = 0;
  msrs: SyscallEntryMsrs[] = [clean(0)];
  fail: VigilError | undefined;
  async syscallEntryMsrs(): Promise<readonly SyscallEntryMsrs[]> {
    this.calls++;
    if (this.fail) throw this.fail;
    return this.msrs;
  }
}

interface Harness {
  ctx: SweepContext;
  clock: { t: number };
  skips: string[];
  notes: string[];
}

function harness(machine: Machine, options: Record<string, unknown> = {}): Harness {
  const clock = { t: 1_000_000 };
  const skips: string[] = [];
  const notes: string[] = [];
  const ctx = {
    vm: 'test-vm',
    machine,
    kernel: undefined,
    requireKernel: () => {
      throw new Error('unused');
    },
    baseline: undefined as never,
    options,
    sweep: 1,
    signal: new AbortController().signal,
    now: () => clock.t,
    note: (kind: string, detail: string) => void notes.push(`${kind}: ${detail}`),
    skip: (check: string, reason: string) => void skips.push(`${check}: ${reason}`),
  } satisfies SweepContext;
  return { ctx, clock, skips, notes };
}

const liveMachine = (cpuState?: MachineCpuState): Machine => ({
  name: 'test-vm',
  memory: undefined as never,
  vcpus: [],
  events: { [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }) },
  ...(cpuState ? { cpuState } : {}),
  close: async () => undefined,
});

const BASE: Finding = { key: 'text:0', severity: 'high', summary: 'text changed', evidence: {} };
const keys = (fs: readonly Finding[]) => fs.map((f) => f.key);

describe('withSyscallMsrFindings', () => {
  test('no cpuState: skipped with the reason, synchronously, base findings untouched', () => {
    const h = harness(liveMachine());
    const r = withSyscallMsrFindings(h.ctx, kernel(), [BASE]);
    assert.ok(Array.isArray(r));
    assert.deepEqual(keys(r as Finding[]), ['text:0']);
    assert.equal(h.skips.length, 1);
    assert.match(h.skips[0]!, /^syscall-msr: needs the vCPU device state.*shared memory backend/);
    const dump: Machine = {
      name: 'dump',
      memory: undefined as never,
      vcpus: [],
      close: async () => undefined,
    };
    const d = harness(dump);
    withSyscallMsrFindings(d.ctx, kernel(), []);
    assert.match(d.skips[0]!, /a memory dump has none/);
  });

  test('at most once per interval; findings carried over in between; a new kernel is checked at once', async () => {
    const cpu = new FakeCpuState();
    cpu.msrs = [{ ...clean(0), lstar: MODULE_AREA + 0x2040n }];
    const h = harness(liveMachine(cpu));
    const k = kernel();
    const first = withSyscallMsrFindings(h.ctx, k, [BASE]);
    assert.ok(first instanceof Promise);
    assert.deepEqual(keys(await first), ['text:0', 'msr:lstar:0']);
    assert.equal(cpu.calls, 1);
    h.clock.t += DEFAULT_MSR_INTERVAL_MS - 1;
    const carried = withSyscallMsrFindings(h.ctx, k, [BASE]);
    assert.ok(Array.isArray(carried), 'not due: no snapshot, a plain list');
    assert.deepEqual(keys(carried as Finding[]), ['text:0', 'msr:lstar:0']);
    assert.equal(cpu.calls, 1);
    h.clock.t += 1;
    cpu.msrs = [clean(0)];
    assert.deepEqual(keys(await withSyscallMsrFindings(h.ctx, k, [])), []);
    assert.equal(cpu.calls, 2);
    // Another kernel object (the guest rebooted): due at once.
    await withSyscallMsrFindings(h.ctx, kernel(), []);
    assert.equal(cpu.calls, 3);
    assert.deepEqual(h.skips, []);
  });

  test('syscallMsrIntervalMs sets the interval; a bad value is a usage error', async () => {
    const cpu = new FakeCpuState();
    const h = harness(liveMachine(cpu), { syscallMsrIntervalMs: 1000 });
    const k = kernel();
    await withSyscallMsrFindings(h.ctx, k, []);
    h.clock.t += 1000;
    await withSyscallMsrFindings(h.ctx, k, []);
    assert.equal(cpu.calls, 2);
    const bad = harness(liveMachine(cpu), { syscallMsrIntervalMs: 'often' });
    assert.throws(() => withSyscallMsrFindings(bad.ctx, k, []), /syscallMsrIntervalMs/);
  });

  test('syscallMsr: false turns the snapshot off, said as a skip; a non-boolean is a usage error', async () => {
    const cpu = new FakeCpuState();
    const h = harness(liveMachine(cpu), { syscallMsr: false });
    const out = await withSyscallMsrFindings(h.ctx, kernel(), []);
    assert.deepEqual(out, []);
    assert.equal(cpu.calls, 0, 'no snapshot was taken');
    assert.equal(h.skips.length, 1);
    assert.match(JSON.stringify(h.skips[0]), /turned off/);
    const bad = harness(liveMachine(cpu), { syscallMsr: 'no' });
    assert.throws(() => withSyscallMsrFindings(bad.ctx, kernel(), []), /syscallMsr/);
  });

  test('RAM not shared (unsupported): skipped with QEMU’s reason, until the next interval', async () => {
    const cpu = new FakeCpuState();
    cpu.fail = new VigilError('vmm', 'unsupported', 'the device-state snapshot exceeded 32 MiB');
    const h = harness(liveMachine(cpu));
    const k = kernel();
    assert.deepEqual(keys(await withSyscallMsrFindings(h.ctx, k, [BASE])), ['text:0']);
    assert.deepEqual(h.skips, [`${SYSCALL_MSR_CHECK}: the device-state snapshot exceeded 32 MiB`]);
    h.clock.t += DEFAULT_MSR_INTERVAL_MS;
    withSyscallMsrFindings(h.ctx, k, []);
    assert.equal(cpu.calls, 1, 'a lasting condition: not retried after one interval');
    assert.equal(h.skips.length, 2, 'reported again while not retried');
    h.clock.t += 9 * DEFAULT_MSR_INTERVAL_MS;
    await withSyscallMsrFindings(h.ctx, k, []);
    assert.equal(cpu.calls, 2, 'but after ten');
    assert.deepEqual(h.notes, []);
    // QEMU's reason travels with the skip.
    cpu.fail = new VigilError('vmm', 'unsupported', 'QEMU refused a device-state snapshot (migrate)', {
      cause: new VigilError('vmm', 'protocol', 'GenericError: disallowing migration blocker'),
    });
    h.clock.t += 10 * DEFAULT_MSR_INTERVAL_MS;
    await withSyscallMsrFindings(h.ctx, k, []);
    assert.match(h.skips.at(-1)!, /refused a device-state snapshot \(migrate\): GenericError: disallowing/);
  });

  test('a paused VM (state): skipped, earlier findings stand, retried at the next poll', async () => {
    const cpu = new FakeCpuState();
    cpu.msrs = [{ ...clean(0), lstar: MODULE_AREA + 0x2040n }];
    const h = harness(liveMachine(cpu));
    const k = kernel();
    await withSyscallMsrFindings(h.ctx, k, []);
    h.clock.t += DEFAULT_MSR_INTERVAL_MS;
    cpu.fail = new VigilError('vmm', 'state', 'the VM is not running (paused)');
    assert.deepEqual(keys(await withSyscallMsrFindings(h.ctx, k, [])), ['msr:lstar:0']);
    assert.match(h.skips[0]!, /not running/);
    h.clock.t += 1;
    cpu.fail = undefined;
    await withSyscallMsrFindings(h.ctx, k, []);
    assert.equal(cpu.calls, 3);
  });

  test('a failed snapshot (io) is a partial view: noted, earlier findings kept, the rest still reported', async () => {
    const cpu = new FakeCpuState();
    cpu.msrs = [{ ...clean(0), lstar: MODULE_AREA + 0x2040n }];
    const h = harness(liveMachine(cpu));
    const k = kernel();
    await withSyscallMsrFindings(h.ctx, k, []);
    h.clock.t += DEFAULT_MSR_INTERVAL_MS;
    cpu.fail = new VigilError('vmm', 'io', 'snapshot stream closed before its end');
    assert.deepEqual(keys(await withSyscallMsrFindings(h.ctx, k, [BASE])), ['text:0', 'msr:lstar:0']);
    assert.equal(h.notes.length, 1);
    assert.match(h.notes[0]!, /^io: syscall entry MSRs: vmm io: snapshot stream closed/);
    cpu.fail = new Error('a bug') as VigilError;
    h.clock.t += DEFAULT_MSR_INTERVAL_MS;
    await assert.rejects(Promise.resolve(withSyscallMsrFindings(h.ctx, k, [])), /a bug/);
  });

  test('through the engine: a skipped check is reported in the sweep, not as an alert', async () => {
    const k = kernel();
    const policy = definePolicy<KernelAccess>({
      id: 'msr-only',
      title: 'MSRs',
      description: 'test',
      severity: 'high',
      requires: ['kernel'],
      poll: (ctx) => withSyscallMsrFindings(ctx, ctx.requireKernel(), []),
    });
    const dump: Machine = {
      name: 'dump',
      memory: undefined as never,
      vcpus: [],
      close: async () => undefined,
    };
    const engine = new Engine<KernelAccess>({
      vm: 'dump',
      machine: dump,
      policies: [policy],
      kernel: k,
      clock: new FakeClock(),
    });
    const report = await engine.sweep({ force: true });
    assert.deepEqual(report.alerts, []);
    assert.equal(report.runs[0]!.outcome, 'ok');
    assert.deepEqual(report.runs[0]!.skipped, [
      { check: SYSCALL_MSR_CHECK, reason: 'needs the vCPU device state; a memory dump has none' },
    ]);
    // And a hook found through the engine is an alert of the policy.
    const cpu = new FakeCpuState();
    cpu.msrs = [{ ...clean(0), lstar: MODULE_AREA + 0x2040n }];
    const live = new Engine<KernelAccess>({
      vm: 'live',
      machine: liveMachine(cpu),
      policies: [policy],
      kernel: k,
      clock: new FakeClock(),
    });
    const alerts = (await live.sweep({ force: true })).alerts;
    assert.deepEqual(
      alerts.map((a) => [a.policy, a.key, a.severity]),
      [['msr-only', 'msr:lstar:0', 'critical']],
    );
  });
});
