import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IntegrityTestKernel, MODULE_AREA, NOP5, RODATA, SITES } from './kernel-testkit.js';
import { diffGroups } from './kernel-text-changes.js';
import { BLOCK_SIZE, CHUNK_SIZE, blockDigests } from './memory-access-baseline.js';
import { checkIntegrity } from './memory-access.js';
import { keys, learned } from './memory-access-testkit.js';

const jmp = IntegrityTestKernel.jmp;
const hex = (v: bigint) => '0x' + v.toString(16);

describe('kernel text digests', () => {
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

describe('memory-access: kernel text and rodata', () => {
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
});
