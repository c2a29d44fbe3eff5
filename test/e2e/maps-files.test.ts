// Acceptance for the file and memory-map walkers: `vigil maps PID` prints what the guest's own
// /proc/PID/maps prints, line for line, and `vigil files PID` resolves every fd to what readlink of
// /proc/PID/fd/N gives — for processes holding files of every kind busybox can open (nested and bind
// mounts, a deleted file, a FIFO, a directory, a pipe, a socket), a process running from a deleted
// binary, a small static program with hundreds of VMAs (a multi-level maple tree), a memfd, an eventfd
// and an epoll fd, and on an ELF core of the paused guest.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { GuestState } from '../../src/lab/index.js';
import { runVigil, vigilJson } from '../support/cli.js';
import { dumpGuest, whilePaused } from '../support/dump.js';
import { guestExec, guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-main';

interface MapsRow {
  start: string;
  end: string;
  perms: string;
  offset: string;
  dev: string;
  inode: number;
  path: string;
}

interface FilesRow {
  fd: number;
  path: string;
  kind: string;
  deleted: boolean;
  inode: number | null;
  perms: string;
  sock?: string;
}

interface Truth {
  maps: Map<number, string[]>;
  fds: Map<number, Map<number, string>>;
}

/** Parse `vigil-files-fixture truth` output: "M PID line" and "F PID FD target". */
function parseTruth(text: string): Truth {
  const maps = new Map<number, string[]>();
  const fds = new Map<number, Map<number, string>>();
  for (const line of text.split('\n')) {
    const m = /^M (\d+) (.*)$/.exec(line);
    if (m) {
      const pid = Number(m[1]);
      if (!maps.has(pid)) maps.set(pid, []);
      maps.get(pid)!.push(m[2]!);
      continue;
    }
    const f = /^F (\d+) (\d+) (.*)$/.exec(line);
    if (f) {
      const pid = Number(f[1]);
      if (!fds.has(pid)) fds.set(pid, new Map());
      fds.get(pid)!.set(Number(f[2]), f[3]!);
    }
  }
  return { maps, fds };
}

/** A maps line as fields: whitespace runs (the padding before the path) do not matter. */
const fields = (line: string): string => line.trim().split(/\s+/).join(' ');

/** A JSON row as /proc/PID/maps prints it (hex without 0x, 8 digits at least). */
function rowLine(r: MapsRow): string {
  const h = (s: string, w: number) => BigInt(s).toString(16).padStart(w, '0');
  return fields(`${h(r.start, 8)}-${h(r.end, 8)} ${r.perms} ${h(r.offset, 8)} ${r.dev} ${r.inode} ${r.path}`);
}

async function truthOf(guest: GuestState, pids: readonly number[]): Promise<Truth> {
  return parseTruth(await guestRun(guest, `vigil-files-fixture truth ${pids.join(' ')}`, 120_000));
}

/**
 * A static program (no libc) for what busybox cannot make: hundreds of VMAs (alternating protections keep
 * neighbours from merging, so the maple tree needs several levels), a memfd mapped shared, an eventfd and
 * an epoll fd; then it waits.
 */
const MANY_MAPS_C = `
static long sys(long n, long a, long b, long c, long d, long e, long f) {
  long r;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return r;
}
void _start(void) {
  long base = sys(9, 0, 4096 * 300, 3, 0x22, -1, 0);
  for (int i = 0; i < 300; i += 2) sys(10, base + 4096L * i, 4096, 1, 0, 0, 0);
  static const char name[] = "vigil-test";
  long memfd = sys(319, (long)name, 0, 0, 0, 0, 0);
  sys(77, memfd, 4096, 0, 0, 0, 0);
  sys(9, 0, 4096, 3, 1, memfd, 0);
  sys(290, 0, 0, 0, 0, 0, 0);
  sys(291, 0, 0, 0, 0, 0, 0);
  for (;;) sys(34, 0, 0, 0, 0, 0, 0);
}
`;

/** Build the test program on the host; undefined when there is no C compiler. */
function buildManyMaps(): Buffer | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-manymaps-'));
  try {
    writeFileSync(join(dir, 'm.c'), MANY_MAPS_C);
    execFileSync(
      'gcc',
      [
        '-Os',
        '-static',
        '-nostdlib',
        '-fno-stack-protector',
        '-fno-asynchronous-unwind-tables',
        '-s',
        '-o',
        'm',
        'm.c',
      ],
      { cwd: dir, stdio: 'ignore' },
    );
    return readFileSync(join(dir, 'm'));
  } catch {
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Copy a small binary into the guest over the console (gzip + base64 in short lines) and start it. */
async function startInGuest(guest: GuestState, binary: Buffer, name: string): Promise<number> {
  const b64 = gzipSync(binary, { level: 9 }).toString('base64');
  await guestRun(guest, `rm -f /tmp/${name}.b64`);
  for (let i = 0; i < b64.length; i += 300)
    await guestRun(guest, `echo ${b64.slice(i, i + 300)} >> /tmp/${name}.b64`);
  await guestRun(guest, `base64 -d /tmp/${name}.b64 | gunzip > /tmp/${name} && chmod +x /tmp/${name}`);
  await guestRun(guest, `(/tmp/${name} </dev/null >/dev/null 2>&1 &); sleep 0.5`);
  const pid = Number((await guestRun(guest, `pidof ${name}`)).trim());
  assert.ok(pid > 0, `${name} is running`);
  return pid;
}

describe('vigil maps and vigil files on the live reference guest', { timeout: 900_000 }, () => {
  let guest: GuestState;
  let holder: number;
  let listener: number;
  let gone: number;

  before(async () => {
    guest = await sharedGuest(GUEST);
    await guestRun(guest, 'vigil-files-fixture stop');
    const out = await guestRun(guest, 'vigil-files-fixture start', 120_000);
    const m = /pids (\d+) (\d+) (\d+)/.exec(out);
    assert.ok(m, `fixture started: ${out}`);
    [holder, listener, gone] = [Number(m[1]), Number(m[2]), Number(m[3])];
  });

  after(async () => {
    if (guest) await guestExec(guest, 'vigil-files-fixture stop');
  });

  test('(a) maps equal /proc/PID/maps line for line (file maps, deleted binary, heap, stack, vdso)', async () => {
    const pids = [1, holder, listener, gone];
    const truth = await truthOf(guest, pids);
    for (const pid of pids) {
      const want = truth.maps.get(pid);
      assert.ok(want && want.length > 0, `the guest shows maps of ${pid}`);
      const text = await runVigil(['maps', String(pid), '--qmp', guest.qmp]);
      assert.equal(text.code, 0, text.stderr);
      assert.deepEqual(text.stdout.trimEnd().split('\n').map(fields), want.map(fields), `maps of ${pid}`);
      const rows = await vigilJson<MapsRow[]>(['maps', String(pid), '--qmp', guest.qmp]);
      assert.deepEqual(rows.map(rowLine), want.map(fields), `maps --json of ${pid}`);
    }
    const goneRows = await vigilJson<MapsRow[]>(['maps', String(gone), '--qmp', guest.qmp]);
    assert.ok(goneRows.some((r) => r.path === '/tmp/vigil-files/busybox-gone (deleted)'));
    assert.ok(goneRows.some((r) => r.path === '[heap]') && goneRows.some((r) => r.path === '[vdso]'));
  });

  test('(b) files equal the fd links of /proc/PID/fd, with the right kinds', async () => {
    const pids = [1, holder, listener, gone];
    const truth = await truthOf(guest, pids);
    for (const pid of pids) {
      const want = truth.fds.get(pid) ?? new Map<number, string>();
      const rows = await vigilJson<FilesRow[]>(['files', String(pid), '--qmp', guest.qmp]);
      assert.deepEqual(new Map(rows.map((r) => [r.fd, r.path])), want, `fds of ${pid}`);
    }
    const held = new Map(
      (await vigilJson<FilesRow[]>(['files', String(holder), '--qmp', guest.qmp])).map((r) => [r.fd, r]),
    );
    assert.equal(held.get(3)?.path, '/etc/passwd');
    assert.equal(held.get(3)?.kind, 'regular');
    assert.equal(held.get(3)?.perms, 'lr-x------');
    assert.equal(held.get(4)?.path, '/tmp/vigil-files/mnt/inner/file', 'two mounts crossed');
    assert.equal(held.get(5)?.path, '/tmp/vigil-files/mnt/etc/group', 'through a bind mount');
    assert.equal(held.get(6)?.kind, 'fifo');
    assert.equal(held.get(6)?.perms, 'lrwx------');
    assert.equal(held.get(7)?.path, '/tmp/vigil-files/deleted (deleted)');
    assert.equal(held.get(7)?.deleted, true);
    assert.equal(held.get(8)?.kind, 'directory');
    assert.equal(held.get(9)?.perms, 'l-wx------');
    const nc = await vigilJson<FilesRow[]>(['files', String(listener), '--qmp', guest.qmp]);
    assert.equal(nc.find((r) => r.fd === 0)?.kind, 'pipe');
    const sock = nc.find((r) => r.kind === 'socket');
    assert.ok(sock?.sock, 'a socket names its struct sock');
    assert.match(sock.path, /^socket:\[\d+\]$/);

    const table = await runVigil(['files', String(holder), '--qmp', guest.qmp]);
    assert.equal(table.code, 0);
    assert.match(table.stdout, /^PERMS\s+FD\s+KIND/);
    assert.match(table.stdout, /-> \/etc\/passwd\n/);
  });

  test('(c) hundreds of VMAs (a multi-level maple tree), a memfd, an eventfd and an epoll fd', async (t) => {
    const binary = buildManyMaps();
    if (!binary) {
      t.skip('no C compiler on this host to build the test program');
      return;
    }
    const pid = await startInGuest(guest, binary, 'vigil-manymaps');
    try {
      const truth = await truthOf(guest, [pid]);
      const want = truth.maps.get(pid)!;
      assert.ok(want.length > 300, `the guest shows ${want.length} maps`);
      const rows = await vigilJson<MapsRow[]>(['maps', String(pid), '--qmp', guest.qmp]);
      assert.deepEqual(rows.map(rowLine), want.map(fields));
      assert.ok(rows.some((r) => r.path === '/memfd:vigil-test (deleted)' && r.perms === 'rw-s'));
      const files = await vigilJson<FilesRow[]>(['files', String(pid), '--qmp', guest.qmp]);
      assert.deepEqual(new Map(files.map((r) => [r.fd, r.path])), truth.fds.get(pid));
      assert.deepEqual(
        files.filter((r) => r.fd >= 3).map((r) => [r.kind, r.path]),
        [
          ['memfd', '/memfd:vigil-test (deleted)'],
          ['anon_inode', 'anon_inode:[eventfd]'],
          ['anon_inode', 'anon_inode:[eventpoll]'],
        ],
      );
    } finally {
      await guestExec(guest, `kill ${pid}; rm -f /tmp/vigil-manymaps /tmp/vigil-manymaps.b64`);
    }
  });

  test('(d) an ELF core taken while paused shows what the paused guest showed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vigil-maps-files-'));
    const elf = join(dir, 'guest.elf');
    const pids = [1, holder, listener, gone];
    try {
      const live = await whilePaused(guest, async () => {
        const out: unknown[] = [];
        for (const pid of pids) {
          out.push(await vigilJson(['maps', String(pid), '--qmp', guest.qmp]));
          out.push(await vigilJson(['files', String(pid), '--qmp', guest.qmp]));
        }
        await dumpGuest(guest, elf, 'elf');
        return out;
      });
      const fromDump: unknown[] = [];
      for (const pid of pids) {
        fromDump.push(await vigilJson(['maps', String(pid), '--dump', elf]));
        fromDump.push(await vigilJson(['files', String(pid), '--dump', elf]));
      }
      assert.deepEqual(fromDump, live);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('(e) a PID the guest does not have, or no PID: one line, exit 2', async () => {
    for (const cmd of ['maps', 'files']) {
      const missing = await runVigil([cmd, '4000000', '--qmp', guest.qmp]);
      assert.equal(missing.code, 2);
      assert.equal(missing.stdout, '');
      assert.equal(missing.stderr, 'vigil: cli not-found: no process with PID 4000000 in the guest\n');
      const bad = await runVigil([cmd, 'abc', '--qmp', guest.qmp]);
      assert.equal(bad.code, 2);
      assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
      const none = await runVigil([cmd, '--qmp', guest.qmp]);
      assert.equal(none.code, 2);
    }
  });
});
