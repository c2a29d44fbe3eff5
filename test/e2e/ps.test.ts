// Acceptance for the process walkers: `vigil ps` agrees with the guest's own /proc — quiet, under a load
// of 1,000 extra processes, on dumps taken while paused, and on a 4-level paging guest.
// vigil's read and the console's are not atomic, and the console itself runs processes: each comparison
// takes the console's view, then vigil's, then the console's again, and holds vigil to every process
// present in both console views (equal to one of its two readings); anything else vigil shows must be a
// process that came or went in between.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GuestState } from '../../src/lab/index.js';
import { runVigil, vigilJson } from '../support/cli.js';
import { dumpGuest, whilePaused } from '../support/dump.js';
import {
  consoleBack,
  consoleWrite,
  guestRun,
  parseVigilPs,
  sharedGuest,
  type GuestProcess,
} from '../support/guest.js';

const GUEST = 'vigil-test-main';
const GUEST_4LEVEL = 'vigil-test-4level';

/** The fields of `vigil ps --json` these tests read. */
interface PsRow {
  pid: number;
  tid: number;
  tgid: number;
  ppid: number | null;
  comm: string;
  name: string;
  uid: number | null;
  euid: number | null;
  state: string;
  kthread: boolean;
  exe: string | null;
  cmdline: string[];
  threads: number;
  task: string;
  caps: Record<string, string> | null;
  startTimeNs: number | null;
  flags: string;
}

interface ConsoleView {
  self: number;
  procs: Map<number, GuestProcess>;
}

async function consoleView(guest: GuestState): Promise<ConsoleView> {
  const text = await guestRun(guest, 'vigil-ps', 180_000);
  const self = Number(/^self (\d+)$/m.exec(text)?.[1]);
  return { self, procs: new Map(parseVigilPs(text).map((p) => [p.pid, p])) };
}

/** What the ground truth and vigil both state about a process; /proc's comm is vigil's `name`. */
const key = (p: { pid: number; ppid: number | null; uid: number | null }, comm: string) =>
  JSON.stringify([p.pid, comm, p.ppid, p.uid]);

/** PF_WQ_WORKER: /proc names a workqueue worker "comm+desc" or "comm-desc" after its latest work. */
const PF_WQ_WORKER = 0x20n;

/**
 * vigil's name for the comparison: a workqueue worker's suffix says which work it ran last, which changes
 * whenever it runs another (vmstat_update on mm_percpu_wq, then something on events…), so when /proc's
 * reading shows the same worker with another suffix, the stable part (task->comm) is what must agree.
 */
function comparableName(r: PsRow, truth: readonly string[]): string {
  if ((BigInt(r.flags) & PF_WQ_WORKER) === 0n || truth.includes(r.name)) return r.name;
  const same = truth.find((t) => t.startsWith(r.comm) && /^[+-]/.test(t.slice(r.comm.length)));
  return same ?? r.name;
}

/**
 * Hold vigil's rows to the console views taken before and after it. Returns how many processes were
 * compared exactly.
 */
function assertAgrees(before: ConsoleView, rows: readonly PsRow[], after: ConsoleView): number {
  const mine = new Map(rows.map((r) => [r.pid, r]));
  assert.equal(mine.size, rows.length, 'one row per process');
  let stable = 0;
  const problems: string[] = [];
  for (const [pid, b] of before.procs) {
    const a = after.procs.get(pid);
    if (!a) continue; // exited in between
    const r = mine.get(pid);
    const truth = [key(b, b.comm), key(a, a.comm)];
    if (!r) problems.push(`missing ${truth[0]}`);
    else if (!truth.includes(key(r, comparableName(r, [b.comm, a.comm])))) {
      problems.push(`vigil ${key(r, r.name)} vs /proc ${truth.join(' / ')}`);
    } else stable++;
  }
  for (const r of rows) {
    if (before.procs.has(r.pid) && after.procs.has(r.pid)) continue;
    // Came or went between the reads: in one console view only, one of the console's own scripts, or
    // born after the first read began.
    const transient =
      before.procs.has(r.pid) || after.procs.has(r.pid) || r.pid === before.self || r.pid > before.self;
    if (!transient) problems.push(`vigil shows ${key(r, r.name)}, which /proc never showed`);
  }
  assert.deepEqual(problems, []);
  return stable;
}

async function psJson(args: string[]): Promise<PsRow[]> {
  return vigilJson<PsRow[]>(['ps', ...args]);
}

/** Console, vigil (each source), console; asserts agreement and returns vigil's task-list rows. */
async function compareLive(guest: GuestState): Promise<{ rows: PsRow[]; stable: number }> {
  const before = await consoleView(guest);
  const rows = await psJson(['--qmp', guest.qmp]);
  const fromPids = await psJson(['--qmp', guest.qmp, '--source', 'pids']);
  const after = await consoleView(guest);
  const stable = assertAgrees(before, rows, after);
  assertAgrees(before, fromPids, after);
  assert.ok(stable >= 20, `only ${stable} processes compared`);
  return { rows, stable };
}

describe('vigil ps on the live reference guest', { timeout: 900_000 }, () => {
  test('(a) every process /proc shows, with the same pid, name, parent and uid', async () => {
    const guest = await sharedGuest(GUEST);
    const { rows } = await compareLive(guest);
    const init = rows.find((r) => r.pid === 1)!;
    assert.equal(init.kthread, false);
    assert.equal(init.exe, '/bin/busybox');
    assert.deepEqual(init.cmdline, ['/bin/busybox', 'sh', '/init']);
    assert.match(init.task, /^0xff[0-9a-f]{14}$/);
    assert.equal(init.caps?.effective, '0x1ffffffffff');
    const kthreadd = rows.find((r) => r.pid === 2)!;
    assert.equal(kthreadd.kthread, true);
    assert.deepEqual(kthreadd.cmdline, []);
    assert.ok(
      rows.filter((r) => r.kthread).every((r) => r.pid === 2 || r.ppid === 2),
      'kthreads are kthreadd’s',
    );
    const user = rows.find((r) => r.name === 'vigil-user-idle')!;
    assert.equal(user.uid, 1000);
    assert.equal(user.euid, 1000);
    assert.equal(user.caps?.effective, '0x0');
    assert.deepEqual(user.cmdline, ['/bin/sh', '/usr/bin/vigil-user-idle']);

    const table = await runVigil(['ps', '--qmp', guest.qmp]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^\s*PID\s+PPID\s+UID\s+EUID\s+STATE\s+COMM\s+EXE\s+CMDLINE$/m);
    assert.match(table.stdout, /^\s*2\s+0\s+0\s+0\s+S\s+kthreadd\s+\[kthread\]\s+\[kthreadd\]$/m);

    const tree = await runVigil(['pstree', '--qmp', guest.qmp]);
    assert.equal(tree.code, 0, tree.stderr);
    assert.match(tree.stdout, /^1 init$/m);
    assert.match(tree.stdout, /^2 kthreadd\n├─ 3 /m);
    assert.match(tree.stdout, /^[│ ]\s+└─ \d+ sleep$/m, 'vigil-idle’s sleep sits under it');
  });

  test('(b) with 1,000 extra processes', async () => {
    const guest = await sharedGuest(GUEST);
    await guestRun(guest, 'vigil-spawn kill');
    try {
      assert.equal((await guestRun(guest, 'vigil-spawn 1000', 300_000)).trim(), 'started 1000');
      const { rows } = await compareLive(guest);
      const sleeps = rows.filter((r) => r.name === 'sleep' && r.cmdline.join(' ') === 'sleep 1000');
      assert.equal(sleeps.length, 1000);
    } finally {
      assert.equal((await guestRun(guest, 'vigil-spawn kill', 300_000)).trim(), 'killed 1000');
    }
  });

  test('(c) an ELF core and a raw image taken while paused show what the paused guest showed', async () => {
    const guest = await sharedGuest(GUEST);
    const dir = mkdtempSync(join(tmpdir(), 'vigil-ps-'));
    try {
      const elf = join(dir, 'guest.elf');
      const raw = join(dir, 'guest.raw');
      const live = await whilePaused(guest, async () => {
        const rows = await psJson(['--qmp', guest.qmp]);
        await dumpGuest(guest, elf, 'elf');
        await dumpGuest(guest, raw, 'raw');
        return rows;
      });
      assert.ok(live.length >= 20);
      assert.deepEqual(await psJson(['--dump', elf]), live);
      assert.deepEqual(await psJson(['--dump', raw]), live);
      assert.deepEqual(
        await psJson(['--dump', raw, '--source', 'pids']),
        live,
        'both views agree on a quiet guest',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The lead may fold this into a shared 4-level suite: it boots a second guest.
describe('vigil ps on a 4-level paging guest', { timeout: 900_000 }, () => {
  test('(d) agrees with /proc there too', async () => {
    const guest = await sharedGuest(GUEST_4LEVEL, { cpu: 'max,la57=off' });
    assert.equal(guest.paging, 4);
    await compareLive(guest);
  });

  test('(e) after a reboot, one-shot commands read the new kernel, not the old image left in RAM', async () => {
    const guest = await sharedGuest(GUEST_4LEVEL, { cpu: 'max,la57=off' });
    const textVirt = async () =>
      BigInt('0x' + (await guestRun(guest, "grep ' _text$' /proc/kallsyms")).trim().split(/\s+/)[0]);
    const before = await textVirt();
    await consoleWrite(guest, 'reboot -f\n');
    await consoleBack(guest, 240_000);
    const after = await textVirt();
    // KASLR picks a new slide at every boot; the same one again would make this test prove nothing.
    assert.notEqual(after, before, 'the guest came back with a new KASLR offset');
    const k = await vigilJson<{ textVirt: string }>(['kernel', '--qmp', guest.qmp, '--json']);
    assert.equal(BigInt(k.textVirt), after, "vigil's _text is the running kernel's");
    await compareLive(guest);
  });
});
