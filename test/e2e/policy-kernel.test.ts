// The kernel-integrity policies end to end: memory-access, hidden-module and kernel-hooks run through
// `vigil check` against a lab guest with the attack suite. A fresh guest first gives no alert (while its
// kernel patches itself: static keys, the function tracer, kprobe events) and leaves a baseline; then the
// rootkits that hook the syscall table and the IDT, patch tcp4_seq_show, hide a module and ftrace-hook
// getdents64 all run in it (their vk_* copies load side by side), and each policy must name what the
// guest's own dmesg and /proc/kallsyms say was done — live with the baseline, live without one, and on an
// ELF dump taken afterwards.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { attackImage, runAttack } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import type { Alert } from '../../src/policy/types.js';
import { runVigil } from '../support/cli.js';
import { dumpGuest } from '../support/dump.js';
import { guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-attacks-kernel';
const MINE = ['memory-access', 'hidden-module', 'kernel-hooks'];
const progress = (line: string) => process.stderr.write(`[policy-kernel] ${line}\n`);

/** `vigil check` on a target, this file's policies only; exit 0 (clean) or 1 (alerts) with a JSON list. */
async function check(target: string[], baseline: boolean): Promise<Alert[]> {
  const args = ['check', ...target, '--json', '--policy', ...MINE, ...(baseline ? [] : ['--no-baseline'])];
  const r = await runVigil(args, { timeoutMs: 300_000 });
  assert.ok(r.code === 0 || r.code === 1, `vigil ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Alert[];
}

/**
 * Alerts that say something about the guest: not vigil's informational health notes, nor the sweep-budget
 * note (a fresh `vigil check` process hashes the whole kernel image once; on a busy 2-core test host that
 * can pass the 2 s budget, which is about the host, not the guest).
 */
const mine = (alerts: readonly Alert[]) =>
  alerts.filter(
    (a) => a.policy !== 'vigil-health' || (a.severity !== 'info' && !a.key.includes('sweep-budget')),
  );
const of = (alerts: readonly Alert[], policy: string) => alerts.filter((a) => a.policy === policy);
const show = (alerts: readonly Alert[]) => alerts.map((a) => `${a.policy} ${a.key}: ${a.summary}`).join('\n');
const big = (v: unknown) => BigInt(v as string);

/** Kernel symbol addresses from the guest's /proc/kallsyms. */
async function kallsyms(g: GuestState, names: string[]): Promise<Map<string, bigint>> {
  const out = await guestRun(g, `grep -E ' (${names.join('|')})$' /proc/kallsyms`);
  const m = new Map<string, bigint>();
  for (const line of out.split('\n')) {
    const f = /^([0-9a-f]+) \S (\S+)$/.exec(line.trim());
    if (f) m.set(f[2]!, BigInt(`0x${f[1]}`));
  }
  for (const n of names) assert.ok(m.has(n), `no ${n} in /proc/kallsyms`);
  return m;
}

describe('kernel integrity policies against the rootkits', { timeout: 1_800_000 }, () => {
  let g: GuestState;
  let state: string;
  const savedState = process.env.VIGIL_STATE;

  before(async () => {
    g = await sharedGuest(GUEST, await attackImage({ progress }));
    // The baseline lives in a directory of this test's own (runVigil's child inherits the environment).
    state = mkdtempSync(join(tmpdir(), 'vigil-state-'));
    process.env.VIGIL_STATE = state;
  });

  after(async () => {
    if (savedState === undefined) delete process.env.VIGIL_STATE;
    else process.env.VIGIL_STATE = savedState;
    rmSync(state, { recursive: true, force: true });
    await stopGuest(GUEST);
  });

  test('a clean guest: no alert, while the kernel patches its own text', async () => {
    const qmp = ['--qmp', g.qmp];
    assert.deepEqual(show(mine(await check(qmp, true))), '', 'first check (learns the baseline)');
    // Static keys (jump labels), the function tracer (fentry calls into an ftrace trampoline), a kprobe event.
    await guestRun(
      g,
      'echo 1 > /proc/sys/kernel/sched_schedstats; mount -t tracefs nodev /sys/kernel/tracing',
    );
    await guestRun(
      g,
      "cd /sys/kernel/tracing && echo 'vfs_read tcp_*' > set_ftrace_filter && echo function > current_tracer && echo 'p:vkp do_sys_openat2' > kprobe_events && echo 1 > events/kprobes/vkp/enable",
    );
    assert.deepEqual(show(mine(await check(qmp, true))), '', 'with a static key flipped and tracing on');
    await guestRun(
      g,
      'cd /sys/kernel/tracing && echo nop > current_tracer && echo > set_ftrace_filter && echo 0 > events/kprobes/vkp/enable && echo > kprobe_events; echo 0 > /proc/sys/kernel/sched_schedstats',
    );
    assert.deepEqual(show(mine(await check(qmp, true))), '', 'after undoing it');
  });

  test('rootkits: hooked syscall table and IDT, an inline hook, a hidden module, an ftrace hook', async () => {
    for (const a of ['rootkit-syscall', 'rootkit-inline', 'rootkit-hidemod', 'rootkit-hide']) {
      progress(`${a}: ${JSON.stringify((await runAttack(g, a)).fields)}`);
    }
    const sym = await kallsyms(g, [
      '__x64_sys_kill',
      'tcp4_seq_show',
      '__x64_sys_getdents64',
      'asm_int80_emulation',
    ]);
    const dmesg = await guestRun(g, 'dmesg | grep -E "vk_(syscall|inline|hide):"');
    const tableKill = BigInt(/table_kill \[vk_syscall\] \((0x[0-9a-f]+)\)/.exec(dmesg)![1]!);
    const idtStub = BigInt(/vigilkit_idt_stub \[vk_syscall\] \((0x[0-9a-f]+)\)/.exec(dmesg)![1]!);
    const tcp = sym.get('tcp4_seq_show')!;

    // Against the baseline learned on the clean guest.
    const withBaseline = mine(await check(['--qmp', g.qmp], true));
    const ma = of(withBaseline, 'memory-access');
    const kill = ma.find((a) => a.key === 'syscall:sys_call_table:62');
    assert.ok(kill, show(ma));
    assert.equal(kill.severity, 'critical');
    assert.equal(kill.evidence.syscall, 'kill');
    assert.equal(big((kill.evidence.baseline as Record<string, unknown>).address), sym.get('__x64_sys_kill'));
    assert.equal(big((kill.evidence.now as Record<string, unknown>).address), tableKill);
    assert.equal((kill.evidence.now as Record<string, unknown>).module, 'vk_syscall');
    const gate = ma.find((a) => a.key === 'idt:128');
    assert.ok(gate, show(ma));
    assert.equal(
      (gate.evidence.baseline as { handler: { symbol: string } }).handler.symbol,
      'asm_int80_emulation+0x0',
    );
    assert.equal(big((gate.evidence.handler as Record<string, unknown>).address), idtStub);
    // The text change was learned in another process: placed by its 256-byte block, bytes shown as now.
    const text = ma.find((a) => a.evidence.range === 'text');
    assert.ok(text, show(ma));
    const at = big(text.evidence.address);
    assert.ok(
      at <= tcp && tcp < at + BigInt(text.evidence.length as number),
      `${text.summary} covers tcp4_seq_show`,
    );
    const [taken] = text.evidence.sites as { symbol: string; destination: { module: string } }[];
    assert.deepEqual([taken?.symbol, taken?.destination.module], ['tcp4_seq_show+0x0', 'vk_inline']);
    assert.equal(text.severity, 'critical');
    assert.equal(ma.length, 3, show(ma));

    // Without a baseline (learned now, on the hooked kernel): what needs none is still seen.
    const live = mine(await check(['--qmp', g.qmp], false));
    assertAbsolute(live, { tcp, tableKill, idtStub, getdents: sym.get('__x64_sys_getdents64')! });
  });

  test('an ELF dump taken after the attacks shows the same', async () => {
    const path = join(state, 'after-attacks.elf');
    await dumpGuest(g, path, 'elf');
    const sym = await kallsyms(g, ['tcp4_seq_show', '__x64_sys_getdents64']);
    const dmesg = await guestRun(g, 'dmesg | grep -E "vk_syscall:"');
    const alerts = mine(await check(['--dump', path], false));
    assertAbsolute(alerts, {
      tcp: sym.get('tcp4_seq_show')!,
      tableKill: BigInt(/table_kill \[vk_syscall\] \((0x[0-9a-f]+)\)/.exec(dmesg)![1]!),
      idtStub: BigInt(/vigilkit_idt_stub \[vk_syscall\] \((0x[0-9a-f]+)\)/.exec(dmesg)![1]!),
      getdents: sym.get('__x64_sys_getdents64')!,
    });
  });
});

/** What all three policies must report with no baseline, live or on a dump. */
function assertAbsolute(
  alerts: readonly Alert[],
  at: { tcp: bigint; tableKill: bigint; idtStub: bigint; getdents: bigint },
): void {
  // memory-access: the tampered fentry site, the table entry and the gate, by shape alone.
  const ma = of(alerts, 'memory-access');
  const site = ma.find((a) => a.key === `site:0x${at.tcp.toString(16)}`);
  assert.ok(site, show(ma));
  assert.equal(site.evidence.symbol, 'tcp4_seq_show+0x0');
  assert.equal((site.evidence.destination as Record<string, unknown>).module, 'vk_inline');
  assert.ok(
    ma.some((a) => a.key === 'syscall:sys_call_table:62'),
    show(ma),
  );
  assert.ok(
    ma.some((a) => a.key === 'idt:128'),
    show(ma),
  );

  // hidden-module: vk_hidemod is off the list and out of sysfs, but in mod_tree and in module memory.
  const hm = of(alerts, 'hidden-module');
  assert.equal(hm.length, 1, show(hm));
  assert.equal(hm[0]!.evidence.module, 'vk_hidemod');
  assert.equal(hm[0]!.severity, 'critical');
  assert.deepEqual(hm[0]!.evidence.views, { list: false, sysfs: false, modTree: true, memory: true });
  assert.match(
    hm[0]!.summary,
    /^module vk_hidemod is hidden: in memory at 0xffffffff[0-9a-f]+ \(size 0x[0-9a-f]+\)/,
  );

  // kernel-hooks: each hook with the module it leads to.
  const kh = of(alerts, 'kernel-hooks');
  const byKey = (k: string) => kh.find((a) => a.key === k);
  const sys = byKey('syscall:sys_call_table:62');
  assert.ok(sys, show(kh));
  assert.deepEqual([big(sys.evidence.address), sys.evidence.module], [at.tableKill, 'vk_syscall']);
  const idt = byKey('idt:128');
  assert.ok(idt, show(kh));
  assert.deepEqual([big(idt.evidence.handler), idt.evidence.module], [at.idtStub, 'vk_syscall']);
  const inline = byKey('inline:tcp4_seq_show');
  assert.ok(inline, show(kh));
  assert.equal(big(inline.evidence.address), at.tcp);
  assert.equal((inline.evidence.destination as Record<string, unknown>).module, 'vk_inline');
  const ftrace = kh.find((a) => a.key.startsWith('ftrace:'));
  assert.ok(ftrace, show(kh));
  assert.equal(ftrace.evidence.module, 'vk_hide');
  assert.deepEqual(ftrace.evidence.functions, ['__x64_sys_getdents64+0x0']);
  assert.ok((ftrace.evidence.flagNames as string[]).includes('IPMODIFY'));
  assert.equal(kh.length, 4, show(kh));
}
