import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Kernel } from '../../os/linux/kernel.js';
import { VigilError } from '../../util/errors.js';
import type { StopReply } from '../../vmm/gdb/stop-reply.js';
import type { DebugHandle, VmEvent } from '../../vmm/types.js';
import type { BaselineAccess, JsonValue } from '../baseline.js';
import type { SweepContext } from '../policy.js';
import type { Finding } from '../types.js';
import {
  BLOCK_SIZE,
  CHUNK_SIZE,
  WATCH_EVENT,
  armWatchpoints,
  blockDigests,
  checkIntegrity,
  criticalWatchTargets,
  decodeBranch,
  diffGroups,
  listFtraceOps,
  memoryAccessPolicy,
  patchSites,
  watchpointEvent,
  type WatchpointClient,
} from './memory-access.js';
import {
  CEA_IDT,
  INIT_TEXT,
  IntegrityTestKernel,
  KT,
  MODULE_AREA,
  NOP5,
  RODATA,
  SITES,
} from './kernel-testkit.js';

const jmp = IntegrityTestKernel.jmp;
const hex = (v: bigint) => '0x' + v.toString(16);

/** A baseline in memory, as the engine's StagedBaseline behaves for one policy. */
function memoryBaseline(init?: Map<string, JsonValue>): BaselineAccess & { map: Map<string, JsonValue> } {
  const map = new Map<string, JsonValue>(init ?? []);
  return {
    map,
    get exists() {
      return map.size > 0;
    },
    identityChanged: false,
    learnedAt: undefined,
    get: <T extends JsonValue = JsonValue>(key: string) => map.get(key) as T | undefined,
    set: (key, value) => void map.set(key, JSON.parse(JSON.stringify(value)) as JsonValue),
    delete: (key) => void map.delete(key),
    keys: () => [...map.keys()],
    clear: () => map.clear(),
    acceptIdentity: () => undefined,
  };
}

function context(
  k: IntegrityTestKernel,
  baseline: BaselineAccess,
  notes: string[] = [],
): SweepContext<Kernel> {
  const kernel = k as unknown as Kernel;
  return {
    vm: 'test-vm',
    machine: { name: 'test-vm', memory: k.memory, vcpus: [], close: async () => undefined },
    kernel,
    requireKernel: () => kernel,
    baseline,
    options: {},
    sweep: 1,
    signal: new AbortController().signal,
    now: () => 0,
    note: (kind, detail) => void notes.push(`${kind}: ${detail}`),
  };
}

/** Learn on a fresh kernel, then return a poll function (bumping the cache epoch like a new sweep). */
function learned(k = new IntegrityTestKernel()) {
  const b = memoryBaseline();
  const notes: string[] = [];
  memoryAccessPolicy.learn!(context(k, b, notes), b);
  assert.deepEqual(notes, []);
  const poll = (): Finding[] => {
    k.refresh();
    return checkIntegrity(k, b).findings;
  };
  return { k, b, poll };
}

const keys = (fs: readonly Finding[]) => fs.map((f) => f.key).sort();

describe('x86 branch shapes', () => {
  test('rel32, rel8, jmp [rip], movabs + jmp reg, push + ret, int3', () => {
    const va = 0xffffffff81001000n;
    const b = (...x: number[]) => Buffer.from(x);
    assert.deepEqual(decodeBranch(jmp(va, 0xffffffffc0001040n), 0, va), {
      kind: 'jmp',
      length: 5,
      destination: 0xffffffffc0001040n,
    });
    assert.equal(decodeBranch(jmp(va, va - 0x100n, 0xe8), 0, va)?.destination, va - 0x100n);
    assert.deepEqual(decodeBranch(b(0xeb, 0xfe), 0, va), { kind: 'jmp-short', length: 2, destination: va });
    const ind = b(0xff, 0x25, 0x10, 0, 0, 0);
    assert.deepEqual(
      decodeBranch(ind, 0, va, (p) => (p === va + 6n + 0x10n ? 0xffffffffc0000000n : undefined)),
      { kind: 'jmp-indirect', length: 6, destination: 0xffffffffc0000000n },
    );
    assert.deepEqual(decodeBranch(ind, 0, va), { kind: 'jmp-indirect', length: 6 });
    const movabs = Buffer.alloc(12);
    movabs[0] = 0x48;
    movabs[1] = 0xb8; // rax
    movabs.writeBigUInt64LE(0xffffffffc0002000n, 2);
    movabs[10] = 0xff;
    movabs[11] = 0xe0;
    assert.deepEqual(decodeBranch(movabs, 0, va), {
      kind: 'movabs-jmp',
      length: 12,
      destination: 0xffffffffc0002000n,
    });
    const r11 = Buffer.concat([b(0x49, 0xbb), Buffer.alloc(8, 0x11), b(0x41, 0xff, 0xe3)]);
    assert.equal(decodeBranch(r11, 0, va)?.kind, 'movabs-jmp');
    assert.equal(
      decodeBranch(Buffer.concat([b(0x48, 0xb8), Buffer.alloc(8), b(0xff, 0xe1)]), 0, va),
      undefined,
    );
    assert.deepEqual(decodeBranch(b(0x68, 0x00, 0x10, 0x00, 0xc0, 0xc3), 0, va), {
      kind: 'push-ret',
      length: 6,
      destination: 0xffffffffc0001000n,
    });
    assert.equal(decodeBranch(b(0xcc), 0, va)?.kind, 'int3');
    assert.equal(decodeBranch(NOP5, 0, va), undefined);
    assert.equal(decodeBranch(b(0xe9, 0x00), 0, va), undefined); // truncated
  });

  test('block digests and diff groups', () => {
    const a = Buffer.alloc(CHUNK_SIZE);
    const b = Buffer.from(a);
    b[5] = 1;
    b[9] = 2; // within the merge gap of 5
    b[300] = 3;
    assert.deepEqual(diffGroups(a, b, 0, a.length), [
      { start: 5, end: 10, exact: true },
      { start: 300, end: 301, exact: true },
    ]);
    const da = blockDigests(a);
    const db = blockDigests(b);
    assert.equal(da.length, (CHUNK_SIZE / BLOCK_SIZE) * 4);
    assert.notEqual(da.readUInt32LE(0), db.readUInt32LE(0));
    assert.notEqual(da.readUInt32LE(4), db.readUInt32LE(4));
    assert.equal(da.readUInt32LE(8), db.readUInt32LE(8));
    // Unaligned input is digested the same.
    const odd = Buffer.alloc(CHUNK_SIZE + 1).subarray(1);
    assert.deepEqual(blockDigests(odd), da);
  });
});

describe('patch sites', () => {
  test('jump labels, static calls, fentry records and ftrace_call found; init-text labels left out', () => {
    const k = new IntegrityTestKernel();
    const s = patchSites(k);
    assert.equal(s.counts['jump-label'], 2);
    assert.equal(s.counts['static-call'], 1);
    assert.equal(s.counts.ftrace, 19);
    assert.equal(s.counts['ftrace-caller'], 1);
    const offs = [...s.offsets];
    assert.deepEqual(
      offs,
      [...offs].sort((a, b) => a - b),
    );
    assert.ok(offs.includes(Number(k.fn('vfs_read') - KT) + SITES.jump5.at));
    assert.ok(offs.includes(Number(k.fn('endbr_function') - KT) + 4));
  });

  test('a looping ftrace_pages chain stops with an issue', () => {
    const k = new IntegrityTestKernel();
    const page = k.readPointer(k.at.ftracePagesStart)!;
    k.writeU64(page + k.off('ftrace_page', 'next'), page);
    const s = patchSites(k);
    assert.equal(s.counts.ftrace, 19);
    assert.equal(k.issues.items[0]?.kind, 'cycle');
  });
});

describe('memory-access: kernel text and rodata', () => {
  test('a clean kernel: nothing, and nothing over repeated sweeps', () => {
    const { poll } = learned();
    for (let i = 0; i < 3; i++) assert.deepEqual(poll(), []);
  });

  test('the kernel patching itself is not a change: jump labels, static calls, ftrace, transient int3', () => {
    const { k, poll } = learned();
    const vfs = k.fn('vfs_read');
    // static_branch_enable: nop5 -> jmp target; nop2 -> jmp8 target.
    k.write(
      vfs + BigInt(SITES.jump5.at),
      jmp(vfs + BigInt(SITES.jump5.at), vfs + BigInt(SITES.jump5.target)),
    );
    k.write(vfs + BigInt(SITES.jump2.at), Buffer.from([0xeb, SITES.jump2.target - SITES.jump2.at - 2]));
    assert.deepEqual(poll(), []);
    // static_call_update: the site calls another function in text.
    const sc = k.fn('__x64_sys_write') + BigInt(SITES.staticCall.at);
    k.write(sc, jmp(sc, k.fn('tcp4_seq_show'), 0xe8));
    // The function tracer on vfs_read: call ftrace_regs_caller; text_poke_bp's int3 mid-patch elsewhere.
    k.write(vfs, jmp(vfs, k.fn('ftrace_regs_caller'), 0xe8));
    k.write(k.fn('__x64_sys_open'), Buffer.from([0xcc]));
    // ftrace_update_ftrace_func: ftrace_call now calls another function in text.
    const fc = k.fn('ftrace_caller') + 0x20n;
    k.write(fc, jmp(fc, k.fn('kprobe_ftrace_handler'), 0xe8));
    assert.deepEqual(poll(), []);
    // An ftrace_ops with a trampoline in the module area: its fentry call is accepted while it is registered.
    // A static call retargeted into a module on the module list (kvm_x86_ops are): accepted.
    k.addModule({ name: 'kvm_intel', base: MODULE_AREA + 0x40000n, size: 0x8000n });
    k.write(sc, jmp(sc, MODULE_AREA + 0x40100n, 0xe8));
    assert.deepEqual(poll(), []);
    // Into memory of no listed module: not accepted.
    k.write(sc, jmp(sc, MODULE_AREA + 0x60100n, 0xe8));
    assert.deepEqual(keys(poll()), [`text:${hex(sc)}`]);
    k.write(sc, jmp(sc, k.fn('tcp4_seq_show'), 0xe8));
    const tramp = MODULE_AREA + 0x80000n;
    k.addFtraceOps({ func: k.fn('kprobe_ftrace_handler'), trampoline: tramp });
    const kill = k.fn('__x64_sys_kill');
    k.write(kill, jmp(kill, tramp, 0xe8));
    assert.deepEqual(poll(), []);
  });

  test('an inline hook: exact offset, symbol, old and new bytes, destination module', () => {
    const { k, poll } = learned();
    k.addModule({ name: 'vk_inline', base: MODULE_AREA, size: 0x4000n });
    const f = k.fn('tcp4_seq_show');
    const hook = jmp(f, MODULE_AREA + 0x40n);
    k.write(f, hook);
    const found = poll();
    assert.deepEqual(keys(found), [`text:${hex(f)}`]);
    const e = found[0]!.evidence;
    assert.equal(found[0]!.severity, 'critical');
    assert.equal(e.symbol, 'tcp4_seq_show+0x0');
    assert.equal(e.old, '0f1f440000');
    assert.equal(e.new, hook.toString('hex'));
    assert.equal(e.localized, 'exact');
    assert.equal(e.length, 5);
    assert.deepEqual(e.site, {
      kind: 'ftrace',
      expected: (e.site as { expected: string }).expected,
      address: hex(f),
    });
    assert.deepEqual(e.destination, {
      address: hex(MODULE_AREA + 0x40n),
      where: 'module',
      module: 'vk_inline',
      moduleOffset: '0x40',
    });
    assert.match(found[0]!.summary, /kernel text changed at tcp4_seq_show\+0x0 .*0f1f440000 → e9.*vk_inline/);
    // Undone: the alert clears.
    k.write(f, NOP5);
    assert.deepEqual(poll(), []);
  });

  test('a jmp at a jump-label site that does not go to its target is a change', () => {
    const { k, poll } = learned();
    const at = k.fn('vfs_read') + BigInt(SITES.jump5.at);
    k.write(at, jmp(at, k.fn('vfs_read') + 0x44n));
    const found = poll();
    assert.deepEqual(keys(found), [`text:${hex(at)}`]);
    assert.equal((found[0]!.evidence.site as { kind: string }).kind, 'jump-label');
    assert.equal(found[0]!.severity, 'high'); // stays in kernel text
  });

  test('an fentry call to an unregistered trampoline is a change, unless ftrace is mid-(un)registration', () => {
    const { k, poll } = learned();
    const f = k.fn('__x64_sys_getdents64');
    k.write(f, jmp(f, MODULE_AREA + 0x90000n, 0xe8));
    assert.deepEqual(keys(poll()), [`text:${hex(f)}`]);
    // ftrace unlinks an ops before patching its sites back: the call then goes to memory that belongs to
    // no module and starts with a copy of ftrace_caller, which is accepted.
    k.write(MODULE_AREA + 0x90000n, k.read(k.fn('ftrace_caller'), 64));
    assert.deepEqual(poll(), []);
    // The same copy inside a module's memory is not ftrace's.
    k.addModule({ name: 'mimic', base: MODULE_AREA + 0xc0000n, size: 0x20000n });
    k.write(MODULE_AREA + 0xd0000n, k.read(k.fn('ftrace_caller'), 64));
    const g = k.fn('__x64_sys_open');
    k.write(g, jmp(g, MODULE_AREA + 0xd0000n, 0xe8));
    assert.deepEqual(keys(poll()), [`text:${hex(g)}`]);
  });

  test('a change in rodata is reported; sys_call_table is masked (checked per entry)', () => {
    const { k, poll } = learned();
    k.write(RODATA + 0x3004n, Buffer.from('hacked'));
    const found = poll();
    assert.deepEqual(keys(found), [`rodata:${hex(RODATA + 0x3004n)}`]);
    assert.match(found[0]!.summary, /read-only data changed at ro_string\+0x4/);
  });

  test('a baseline from another run places the change in its 256-byte block', () => {
    const first = learned();
    const k = first.k;
    const f = k.fn('tcp4_seq_show');
    k.write(f + 0x30n, Buffer.from([0xcc, 0xcc]));
    // A new kernel object over the same memory: a new vigil process with the stored baseline.
    const again = new IntegrityTestKernel();
    again.memory.bytes.set(k.memory.bytes);
    const found = checkIntegrity(again, first.b).findings;
    const block = (f + 0x30n) & ~BigInt(BLOCK_SIZE - 1);
    assert.deepEqual(keys(found), [`text:${hex(block)}`]);
    assert.match(found[0]!.evidence.localized as string, /256-byte block/);
    assert.equal(found[0]!.evidence.old, undefined);
    assert.deepEqual(found[0]!.evidence.functions, ['tcp4_seq_show']);
    // An inline hook found the same way is named by the site it took over.
    k.addModule({ name: 'vk_inline', base: MODULE_AREA, size: 0x4000n });
    k.write(k.fn('vfs_read'), jmp(k.fn('vfs_read'), MODULE_AREA + 0x40n));
    const third = new IntegrityTestKernel();
    third.memory.bytes.set(k.memory.bytes);
    // (Adjacent changed blocks merge: this group starts at tcp4_seq_show's block.)
    const hook = checkIntegrity(third, first.b).findings.find((x) => x.key === `text:${hex(block)}`);
    assert.ok(hook);
    assert.equal(hook.evidence.length, 2 * BLOCK_SIZE);
    assert.equal(hook.severity, 'critical');
    assert.match(
      hook.summary,
      /within 512 bytes: vfs_read\+0x0 .*, a ftrace site, holds e9.*in module vk_inline\+0x40/,
    );
    assert.equal((hook.evidence.sites as { symbol: string }[])[0]!.symbol, 'vfs_read+0x0');
  });

  test('with no baseline (learned on a tampered kernel) a site in no kernel-made state is still reported', () => {
    const k = new IntegrityTestKernel();
    k.addModule({ name: 'vk_inline', base: MODULE_AREA, size: 0x4000n });
    const f = k.fn('tcp4_seq_show');
    k.write(f, jmp(f, MODULE_AREA + 0x40n));
    const { poll } = learned(k);
    const found = poll();
    assert.deepEqual(keys(found), [`site:${hex(f)}`]);
    assert.equal(found[0]!.severity, 'critical');
    assert.match(found[0]!.summary, /ftrace site, holds e9.*vk_inline/);
  });

  test('an unreadable text page is zeros, counted and noted', () => {
    const { k, b } = learned();
    k.builder.setEntry(KT, 'PD', 0n); // unmap the first 2 MiB (all of text)
    k.refresh();
    const notes: string[] = [];
    const found = memoryAccessPolicy.poll!(context(k, b, notes)) as Finding[];
    assert.ok(found.length > 0);
    assert.ok(notes.some((n) => n.startsWith('unmapped: kernel-image')));
  });
});

describe('memory-access: system call table and IDT', () => {
  test('a syscall entry moved into a module: changed and not a syscall function', () => {
    const { k, poll } = learned();
    k.addModule({ name: 'vk_syscall', base: MODULE_AREA, size: 0x4000n });
    const slot = k.at.sysCallTable + 5n * 8n;
    k.writeU64(slot, MODULE_AREA + 0x20n);
    const found = poll();
    assert.deepEqual(keys(found), ['syscall:sys_call_table:5']);
    const e = found[0]!.evidence;
    assert.equal(e.syscall, 'kill');
    assert.equal(e.syscallFunction, false);
    assert.deepEqual((e.baseline as { symbol: string }).symbol, '__x64_sys_kill+0x0');
    assert.equal((e.now as { module: string }).module, 'vk_syscall');
    assert.match(
      found[0]!.summary,
      /sys_call_table\[5\] \(kill\) changed: .*__x64_sys_kill.* → .*vk_syscall/,
    );
  });

  test('without a baseline an entry to a non-syscall function is still caught', () => {
    const k = new IntegrityTestKernel();
    k.writeU64(k.at.sysCallTable + 3n * 8n, k.fn('tcp4_seq_show'));
    const found = checkIntegrity(k, memoryBaseline()).findings;
    assert.deepEqual(keys(found), ['syscall:sys_call_table:3']);
    assert.match(found[0]!.summary, /not to a system call function/);
  });

  test('IDT: a changed gate and a gate outside text; reserved vectors in init text are fine', () => {
    const { k, poll } = learned();
    k.addModule({ name: 'vk_syscall', base: MODULE_AREA, size: 0x4000n });
    k.setGate(0x80, MODULE_AREA + 0x10n, { dpl: 3 });
    k.setGate(22, INIT_TEXT + 0xc6n); // another early handler: a change, but in place
    const found = poll();
    assert.deepEqual(keys(found), ['idt:128', 'idt:22']);
    const g = found.find((f) => f.key === 'idt:128')!;
    assert.equal((g.evidence.handler as { module: string }).module, 'vk_syscall');
    assert.equal(g.evidence.handlerInKernelText, false);
    assert.equal(found.find((f) => f.key === 'idt:22')!.evidence.handlerInKernelText as boolean, true);
  });

  test('the CPU entry area alias must map idt_table', () => {
    const { k, poll } = learned();
    const other = (k.alloc(8192) + 0xfffn) & ~0xfffn;
    k.write(other, k.read(k.at.idtTable, 4096));
    k.setGate(14, k.fn('tcp4_seq_show')); // the real table changes too, so the copy differs
    k.builder.map(CEA_IDT, k.pa(other), 0x1000n, { writable: false });
    const found = poll();
    assert.ok(keys(found).includes('idt-alias'));
    assert.equal(found.find((f) => f.key === 'idt-alias')!.evidence.differs, true);
  });
});

describe('memory-access: ftrace_ops list', () => {
  test('ops, flags and filters; a loop stops with an issue', () => {
    const k = new IntegrityTestKernel();
    const ops = k.addFtraceOps({
      func: MODULE_AREA + 0x340n,
      flags: 1n | 4n | 4096n,
      trampoline: MODULE_AREA + 0x9000n,
      filters: [k.fn('__x64_sys_getdents64')],
    });
    const list = listFtraceOps(k, { filters: true });
    assert.equal(list.length, 1);
    assert.deepEqual(
      { ...list[0]!, flags: list[0]!.flags },
      {
        address: ops,
        func: MODULE_AREA + 0x340n,
        flags: 4101n,
        flagNames: ['ENABLED', 'SAVE_REGS', 'IPMODIFY'],
        trampoline: MODULE_AREA + 0x9000n,
        trampolineSize: 0x100n,
        filters: [k.fn('__x64_sys_getdents64')],
        filterCount: 1,
        filtersReadable: true,
      },
    );
    k.writeU64(ops + k.off('ftrace_ops', 'next'), ops);
    assert.equal(listFtraceOps(k).length, 1);
    assert.equal(k.issues.items.at(-1)?.kind, 'cycle');
  });
});

describe('memory-access: watchpoints', () => {
  class FakeGdb implements WatchpointClient {
    running = false;
    watches: { va: bigint; len: number }[] = [];
    removed = 0;
    continues = 0;
    listeners = new Set<(s: StopReply) => void>();
    refuse = new Set<bigint>();
    async watch(va: bigint, len: number): Promise<DebugHandle> {
      if (this.refuse.has(va)) throw new VigilError('vmm', 'unsupported', 'no more watchpoints');
      this.watches.push({ va, len });
      return { remove: async () => void this.removed++ };
    }
    async continue(): Promise<void> {
      this.continues++;
      this.running = true;
    }
    stoppedCalls = 0;
    async whileStopped<T>(fn: () => Promise<T>): Promise<T> {
      this.stoppedCalls++;
      const was = this.running;
      this.running = false;
      try {
        return await fn();
      } finally {
        this.running = was;
      }
    }
    onStop(l: (s: StopReply) => void): () => void {
      this.listeners.add(l);
      return () => this.listeners.delete(l);
    }
    stop(s: Partial<StopReply>): void {
      this.running = false;
      for (const l of this.listeners) l({ kind: 'signal', signal: 5, registers: new Map(), raw: '', ...s });
    }
  }

  test('four 8-byte targets: kill, getdents64, getdents, IDT 0x80', () => {
    const k = new IntegrityTestKernel();
    const t = criticalWatchTargets(k);
    assert.deepEqual(
      t.map((x) => [x.label, x.va, x.len]),
      [
        ['sys_call_table[62] (kill)', k.at.sysCallTable + 62n * 8n, 8],
        ['sys_call_table[217] (getdents64)', k.at.sysCallTable + 217n * 8n, 8],
        ['sys_call_table[78] (getdents)', k.at.sysCallTable + 78n * 8n, 8],
        ['idt[0x80]', k.at.idtTable + 0x800n, 8],
      ],
    );
  });

  test('arm, continue the VM, turn a hit into an event and continue again; other stops are not ours', async () => {
    const k = new IntegrityTestKernel();
    const targets = [
      {
        label: 'sys_call_table[5] (kill)',
        va: k.at.sysCallTable + 40n,
        len: 8,
        table: 'sys_call_table',
        nr: 5,
      },
      { label: 'idt[0x80]', va: k.at.idtTable + 0x800n, len: 8, vector: 0x80 },
      { label: 'refused', va: 0x1000n, len: 8 },
    ];
    const gdb = new FakeGdb();
    gdb.refuse.add(0x1000n);
    const arm = await armWatchpoints(gdb, targets, { now: () => 42 });
    assert.equal(arm.armed.length, 2);
    assert.deepEqual(
      arm.failed.map((f) => f.target.label),
      ['refused'],
    );
    assert.equal(gdb.continues, 1);
    const it = arm.events[Symbol.asyncIterator]();
    gdb.stop({ signal: 2 }); // an interrupt: not ours, not continued
    assert.equal(gdb.continues, 1);
    gdb.stop({ thread: 'p1.1', watch: { kind: 'watch', address: k.at.sysCallTable + 44n } });
    assert.equal(gdb.continues, 2);
    const ev = (await it.next()).value as VmEvent;
    assert.deepEqual(ev, {
      source: 'gdb',
      name: WATCH_EVENT,
      time: 42,
      data: {
        target: 'sys_call_table[5] (kill)',
        va: hex(k.at.sysCallTable + 40n),
        address: hex(k.at.sysCallTable + 44n),
        kind: 'watch',
        thread: 'p1.1',
        table: 'sys_call_table',
        nr: 5,
      },
    });
    await arm.disarm();
    assert.equal(gdb.removed, 2);
    assert.equal(gdb.stoppedCalls, 1); // removed with the target stopped
    // Arming a running target stops it for the inserts and leaves it running.
    const again = await armWatchpoints(gdb, targets.slice(0, 1));
    assert.deepEqual([again.armed.length, gdb.stoppedCalls, gdb.running, gdb.continues], [1, 2, true, 2]);
    assert.equal((await it.next()).done, true);
    assert.equal(
      watchpointEvent({ kind: 'signal', signal: 5, registers: new Map(), raw: '' }, targets, 0),
      undefined,
    );
  });

  test('a hit is checked against the baseline at once', async () => {
    const { k, b } = learned();
    k.addModule({ name: 'vk_syscall', base: MODULE_AREA, size: 0x4000n });
    const ev: VmEvent = {
      source: 'gdb',
      name: WATCH_EVENT,
      time: 1,
      data: { target: 'sys_call_table[5] (kill)', table: 'sys_call_table', nr: 5, thread: 'p1.1' },
    };
    const same = (await memoryAccessPolicy.onEvent!(ev, context(k, b))) as Finding[];
    assert.equal(same[0]!.severity, 'high');
    assert.match(same[0]!.summary, /same value as the baseline/);
    k.writeU64(k.at.sysCallTable + 40n, MODULE_AREA + 0x20n);
    const hooked = (await memoryAccessPolicy.onEvent!(ev, context(k, b))) as Finding[];
    assert.equal(hooked[0]!.severity, 'critical');
    assert.equal(hooked[0]!.evidence.changed, true);
    assert.match(
      hooked[0]!.summary,
      /write to sys_call_table\[5\] \(kill\) caught by a watchpoint .*vk_syscall/,
    );
    const idt: VmEvent = { ...ev, data: { target: 'idt[0x80]', vector: 0x80 } };
    k.setGate(0x80, MODULE_AREA + 0x10n, { dpl: 3 });
    const gate = (await memoryAccessPolicy.onEvent!(idt, context(k, b))) as Finding[];
    assert.equal(gate[0]!.evidence.changed, true);
    assert.deepEqual(await memoryAccessPolicy.onEvent!({ ...ev, source: 'qmp' }, context(k, b)), []);
  });
});
