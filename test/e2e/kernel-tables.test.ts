// Acceptance for the module and kernel-table walkers: `vigil modules`, `vigil syscalls` and `vigil kernel`
// agree with the guest's own /proc (/proc/modules, /sys/module, /proc/kallsyms, uname) on the live shared
// guest and on an ELF core of it. Ground truth always comes from the guest's console; vigil runs as a
// separate process, as a user runs it.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { GuestState } from '../../src/lab/index.js';
import { runVigil, vigilJson } from '../support/cli.js';
import { dumpGuest, whilePaused } from '../support/dump.js';
import { guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-main';
const START_KERNEL = 0xffffffff81000000n;

interface ModuleRow {
  name: string;
  base: string;
  size: number;
  state: string;
  refcount: number | null;
  taintFlags: string;
  usedBy: string[];
  anomalies: string[];
}
interface KobjectRow {
  name: string;
  builtin: boolean;
  module: string | null;
  moduleName: string | null;
  anomalies: string[];
}
interface SyscallRow {
  table: string;
  nr: number;
  address: string;
  symbol: string | null;
  where: string;
  module: string | null;
}
interface IdtRow {
  vector: number;
  handler: string;
  symbol: string | null;
  where: string;
  present: boolean;
  type: string;
  dpl: number;
  ist: number;
}
interface KernelReport {
  release: string;
  banner: string;
  kaslrOffset: string;
  textVirt: string;
  pagingLevels: number;
  symbols: number;
  sections: { name: string; start: string; end: string }[];
  syscallEntry: { symbol: string; address: string };
  textHash?: { sha256: string; bytes: number; unreadablePages: number };
  taint: { mask: string } | null;
}

interface ProcModule {
  name: string;
  size: number;
  refcount: number;
  usedBy: string[];
  state: string;
  base: bigint;
  taintFlags: string;
}

/** Parse /proc/modules: "name size refcnt used,by, state 0xaddr [(taints)]". */
function parseProcModules(text: string): ProcModule[] {
  const out: ProcModule[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\S+) (\d+) (-?\d+) (\S+) (Live|Loading|Unloading) (0x[0-9a-f]+)(?: \((\w*)[+-]?\))?$/.exec(
      line.trim(),
    );
    if (!m) continue;
    out.push({
      name: m[1]!,
      size: Number(m[2]),
      refcount: Number(m[3]),
      usedBy: m[4] === '-' ? [] : m[4]!.split(',').filter((s) => s !== ''),
      state: m[5]!,
      base: BigInt(m[6]!),
      taintFlags: m[7] ?? '',
    });
  }
  return out;
}

/** /proc/kallsyms lines "addr type name" for the given names (first of each). */
async function kallsyms(guest: GuestState, names: readonly string[]): Promise<Map<string, bigint>> {
  const text = await guestRun(guest, `grep -E ' (${names.join('|')})$' /proc/kallsyms`);
  const map = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const [addr, , name] = line.trim().split(/\s+/);
    if (addr && name && !map.has(name)) map.set(name, BigInt('0x' + addr));
  }
  return map;
}

const PROC_STATE: Record<string, string> = { Live: 'live', Loading: 'coming', Unloading: 'going' };

function assertModulesMatch(mine: readonly ModuleRow[], truth: readonly ProcModule[]): void {
  assert.ok(truth.length >= 8, `the guest loads the virtio modules at boot (got ${truth.length})`);
  assert.deepEqual(
    mine.map((m) => ({
      name: m.name,
      size: m.size,
      base: BigInt(m.base),
      refcount: m.refcount,
      usedBy: m.usedBy,
      state: m.state,
      taintFlags: m.taintFlags,
    })),
    truth.map((t) => ({
      name: t.name,
      size: t.size,
      base: t.base,
      refcount: t.refcount,
      usedBy: t.usedBy,
      state: PROC_STATE[t.state],
      taintFlags: t.taintFlags,
    })),
  );
  for (const m of mine) assert.deepEqual(m.anomalies, [], m.name);
}

function assertSyscalls(rows: readonly SyscallRow[], syms: ReadonlyMap<string, bigint>): void {
  const table = rows.filter((r) => r.table === 'sys_call_table');
  assert.ok(table.length > 400 && table.length < 1024, `sys_call_table has ${table.length} entries`);
  table.forEach((r, i) => assert.equal(r.nr, i));
  const hooked = table.filter((r) => r.where !== 'kernel');
  assert.deepEqual(hooked, [], 'every entry points into kernel text on a clean guest');
  const want: [number, string][] = [
    [0, '__x64_sys_read'],
    [1, '__x64_sys_write'],
    [60, '__x64_sys_exit'],
    [231, '__x64_sys_exit_group'],
    [257, '__x64_sys_openat'],
  ];
  for (const [nr, name] of want) {
    assert.equal(table[nr]!.symbol, `${name}+0x0`, `syscall ${nr}`);
    assert.equal(
      BigInt(table[nr]!.address),
      syms.get(name),
      `syscall ${nr} address = /proc/kallsyms ${name}`,
    );
  }
}

function assertIdt(rows: readonly IdtRow[], syms: ReadonlyMap<string, bigint>): void {
  assert.equal(rows.length, 256);
  const want: [number, string][] = [
    [0, 'asm_exc_divide_error'],
    [3, 'asm_exc_int3'],
    [13, 'asm_exc_general_protection'],
    [14, 'asm_exc_page_fault'],
  ];
  for (const [v, name] of want) {
    assert.equal(rows[v]!.symbol, `${name}+0x0`, `vector ${v}`);
    assert.equal(BigInt(rows[v]!.handler), syms.get(name), `vector ${v} handler = /proc/kallsyms ${name}`);
    assert.equal(rows[v]!.present, true);
  }
  assert.equal(rows[3]!.dpl, 3, 'int3 is callable from user mode');
  assert.equal(rows[14]!.dpl, 0);
  assert.ok(rows[8]!.ist > 0, 'double fault runs on its own stack');
  // Reserved exception vectors keep their early boot handlers in (freed) init text; nothing else may
  // point outside kernel text.
  const elsewhere = rows.filter((r) => r.present && r.where !== 'kernel' && r.where !== 'kernel-init');
  assert.deepEqual(elsewhere, []);
  for (const r of rows.filter((x) => x.where === 'kernel-init')) {
    assert.ok(r.vector >= 20 && r.vector < 32, `vector ${r.vector} in init text`);
    assert.match(r.symbol ?? '', /^early_idt_handler_array\+/);
  }
}

async function groundTruth(guest: GuestState) {
  const procModules = parseProcModules(await guestRun(guest, 'cat /proc/modules'));
  const sysModule = (await guestRun(guest, 'ls /sys/module')).split(/\s+/).filter((s) => s !== '');
  const release = (await guestRun(guest, 'uname -r')).trim();
  const syms = await kallsyms(guest, [
    '_text',
    '__x64_sys_read',
    '__x64_sys_write',
    '__x64_sys_exit',
    '__x64_sys_exit_group',
    '__x64_sys_openat',
    'asm_exc_divide_error',
    'asm_exc_int3',
    'asm_exc_general_protection',
    'asm_exc_page_fault',
    'entry_SYSCALL_64',
  ]);
  return { procModules, sysModule, release, syms };
}

describe('modules and kernel tables', { timeout: 900_000 }, () => {
  let guest: GuestState;
  let truth: Awaited<ReturnType<typeof groundTruth>>;
  let dir: string;

  before(async () => {
    guest = await sharedGuest(GUEST);
    truth = await groundTruth(guest);
    dir = mkdtempSync(join(tmpdir(), 'vigil-ktables-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('vigil modules --json equals /proc/modules: name, size, base, refs, users, state, taints', async () => {
    // Modules change only if someone loads one: read /proc/modules again if vigil saw something else.
    let mine = await vigilJson<ModuleRow[]>(['modules', '--qmp', guest.qmp]);
    if (mine.length !== truth.procModules.length) {
      truth.procModules = parseProcModules(await guestRun(guest, 'cat /proc/modules'));
      mine = await vigilJson<ModuleRow[]>(['modules', '--qmp', guest.qmp]);
    }
    assertModulesMatch(mine, truth.procModules);
    const table = await runVigil(['modules', '--mem', guest.memoryFile]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^NAME +BASE +SIZE/);
    assert.match(table.stdout, /\nvirtio_net +0xffffffff[0-9a-f]+ +\d+ /);
  });

  it('vigil modules --sysfs lists /sys/module; loaded modules point back at their struct module', async () => {
    const kobjs = await vigilJson<KobjectRow[]>(['modules', '--sysfs', '--mem', guest.memoryFile]);
    assert.deepEqual(kobjs.map((o) => o.name).sort(), [...truth.sysModule].sort());
    const loaded = kobjs.filter((o) => !o.builtin);
    assert.deepEqual(loaded.map((o) => o.name).sort(), truth.procModules.map((m) => m.name).sort());
    for (const o of loaded) assert.equal(o.moduleName, o.name);
    for (const o of kobjs) assert.deepEqual(o.anomalies, [], o.name);
    assert.ok(
      kobjs.some((o) => o.builtin && o.name === 'printk'),
      'built-ins with parameters are listed',
    );
  });

  it('vigil syscalls: every entry in kernel text, addresses as /proc/kallsyms has them', async () => {
    const rows = await vigilJson<SyscallRow[]>(['syscalls', '--mem', guest.memoryFile]);
    assertSyscalls(rows, truth.syms);
    const hooked = await vigilJson<SyscallRow[]>(['syscalls', '--hooked', '--mem', guest.memoryFile]);
    assert.deepEqual(hooked, []);
  });

  it('vigil syscalls --idt: exception handlers by name and address', async () => {
    assertIdt(await vigilJson<IdtRow[]>(['syscalls', '--idt', '--mem', guest.memoryFile]), truth.syms);
  });

  it('vigil kernel --json: release, KASLR offset and SYSCALL entry agree with the guest', async () => {
    const k = await vigilJson<KernelReport>(['kernel', '--mem', guest.memoryFile]);
    assert.equal(k.release, truth.release);
    assert.match(k.banner, new RegExp(`^Linux version ${truth.release.replace(/\./g, '\\.')} `));
    const text = truth.syms.get('_text')!;
    assert.equal(BigInt(k.textVirt), text);
    assert.equal(BigInt(k.kaslrOffset), text - START_KERNEL);
    assert.equal(BigInt(k.syscallEntry.address), truth.syms.get('entry_SYSCALL_64'));
    assert.equal(k.pagingLevels, guest.paging);
    assert.ok(k.symbols > 50_000);
    const textSection = k.sections.find((s) => s.name === 'text')!;
    assert.ok(BigInt(textSection.start) >= text && BigInt(textSection.end) > BigInt(textSection.start));
    const human = await runVigil(['kernel', '--mem', guest.memoryFile]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`^release +${truth.release.replace(/\./g, '\\.')}$`, 'm'));
  });

  it('on an ELF core: the same modules, tables and kernel; the text hash equals the paused live one', async () => {
    const elf = join(dir, 'guest.elf');
    let liveHash = '';
    await whilePaused(guest, async () => {
      await dumpGuest(guest, elf, 'elf');
      liveHash = (await vigilJson<KernelReport>(['kernel', '--hash', '--mem', guest.memoryFile])).textHash!
        .sha256;
    });
    assertModulesMatch(await vigilJson<ModuleRow[]>(['modules', '--dump', elf]), truth.procModules);
    assertSyscalls(await vigilJson<SyscallRow[]>(['syscalls', '--dump', elf]), truth.syms);
    assertIdt(await vigilJson<IdtRow[]>(['syscalls', '--idt', '--dump', elf]), truth.syms);
    const k = await vigilJson<KernelReport>(['kernel', '--hash', '--dump', elf]);
    assert.equal(k.release, truth.release);
    assert.equal(BigInt(k.kaslrOffset), truth.syms.get('_text')! - START_KERNEL);
    assert.equal(k.textHash!.unreadablePages, 0);
    assert.match(k.textHash!.sha256, /^[0-9a-f]{64}$/);
    assert.equal(k.textHash!.sha256, liveHash);
  });
});
