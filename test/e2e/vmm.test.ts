// Acceptance for the VMM interface on the live reference guest: `vigil info` on every kind of target,
// QMP events delivered as they happen, and bad targets answered with one clear line and a non-zero exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '../../src/vmm/qmp/client.js';
import type { QmpEvent } from '../../src/vmm/qmp/types.js';
import { guestRun, sharedGuest } from '../support/guest.js';
import { runVigil } from '../support/cli.js';

const GUEST = 'vigil-test-main';

test('vigil info reads registers, paging and the banner from the live guest, its RAM file and a dump', async () => {
  const guest = await sharedGuest(GUEST);
  const release = (await guestRun(guest, 'uname -r')).trim();
  const dir = mkdtempSync(join(tmpdir(), 'vigil-info-'));
  try {
    const live = await runVigil(['info', '--qmp', guest.qmp, '--json']);
    assert.equal(live.code, 0, live.stderr);
    const info = JSON.parse(live.stdout);
    assert.equal(info.release, release);
    assert.equal(info.paging.levels, guest.paging);
    // All of the backend, less the legacy VGA window when a VGA device claims it.
    const ram = BigInt(info.ramBytes);
    assert.ok(ram <= BigInt(guest.memoryBytes) && ram >= BigInt(guest.memoryBytes) - 0x20000n, `RAM ${ram}`);
    assert.ok(BigInt(info.vcpus[0].cr3) > 0n);

    const mem = JSON.parse((await runVigil(['info', '--mem', guest.memoryFile, '--json'])).stdout);
    assert.equal(mem.release, release);

    const q = await QmpClient.connect(guest.qmp);
    const path = join(dir, 'g.elf');
    try {
      await q.dumpGuestMemory(path);
    } finally {
      await q.close();
    }
    const dump = JSON.parse((await runVigil(['info', '--dump', path, '--json'])).stdout);
    assert.equal(dump.release, release);
    assert.equal(dump.paging.levels, guest.paging, 'paging from the CR4 the ELF core carries');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('promiscuous mode in the guest raises NIC_RX_FILTER_CHANGED through the QMP client', async () => {
  const guest = await sharedGuest(GUEST);
  const q = await QmpClient.connect(guest.qmp);
  try {
    const seen: QmpEvent[] = [];
    // QEMU sends the event once, then waits until someone queries the filter: query to re-arm it, and
    // start from promiscuous mode off whatever an earlier test left; listen only from then on.
    await guestRun(guest, 'ip link set eth0 promisc off');
    await q.queryRxFilter();
    await new Promise((r) => setTimeout(r, 300));
    const stream = q.events();
    const waitFor = async (ms: number) => {
      const deadline = Date.now() + ms;
      const it = stream[Symbol.asyncIterator]();
      while (Date.now() < deadline) {
        const next = await Promise.race([
          it.next(),
          new Promise<null>((r) => setTimeout(() => r(null), deadline - Date.now())),
        ]);
        if (!next || next.done) break;
        seen.push(next.value);
        if (next.value.event === 'NIC_RX_FILTER_CHANGED') return next.value;
      }
      return undefined;
    };
    await guestRun(guest, 'ip link set eth0 promisc on');
    const ev = await waitFor(10_000);
    assert.ok(ev, `NIC_RX_FILTER_CHANGED arrived (saw ${seen.map((e) => e.event).join(',') || 'nothing'})`);
    const filters = await q.queryRxFilter();
    assert.equal(filters[0]?.promiscuous, true);
    await guestRun(guest, 'ip link set eth0 promisc off');
    assert.ok(await waitFor(10_000), 'and again when it is switched off');
    assert.equal((await q.queryRxFilter())[0]?.promiscuous, false);
    await stream.return();
  } finally {
    await q.close();
  }
});

test('bad targets get one clear error line and a non-zero exit, never a stack trace', async () => {
  const guest = await sharedGuest(GUEST);
  const dir = mkdtempSync(join(tmpdir(), 'vigil-bad-'));
  try {
    // A truncated dump: the first 1 MiB of a real ELF core.
    const q = await QmpClient.connect(guest.qmp);
    const full = join(dir, 'full.elf');
    try {
      await q.dumpGuestMemory(full);
    } finally {
      await q.close();
    }
    const head = Buffer.alloc(1 << 20);
    const fd = openSync(full, 'r');
    readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    writeFileSync(join(dir, 'truncated.elf'), head);
    writeFileSync(join(dir, 'notes.txt'), 'this is not a memory dump\n'.repeat(100));

    const cases: [string, string[], RegExp][] = [
      ['missing socket', ['--qmp', join(dir, 'nope.sock')], /no QMP socket/],
      ['truncated dump', ['--dump', join(dir, 'truncated.elf')], /truncated/],
      ['a file that is no dump', ['--dump', join(dir, 'notes.txt')], /not a memory dump/],
      ['a PID that is not QEMU', ['--pid', String(process.pid)], /not QEMU/],
      ['a PID that does not exist', ['--pid', '999999999'], /999999999/],
      ['no target at all', [], /give one target/],
    ];
    for (const [what, args, message] of cases) {
      const r = await runVigil(['info', ...args]);
      assert.notEqual(r.code, 0, `${what}: non-zero exit`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${what}: one line, got:\n${r.stderr}`);
      assert.match(lines[0]!, /^vigil: /, what);
      assert.match(lines[0]!, message, what);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
      assert.equal(r.stdout, '', `${what}: nothing on stdout`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
