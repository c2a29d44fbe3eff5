// The syscall entry MSRs end to end: vigil reads IA32_LSTAR (and CSTAR, SYSENTER_EIP) of a live lab guest
// from a QEMU device-state snapshot and memory-access compares them with the kernel's entry points. A
// clean guest's LSTAR is entry_SYSCALL_64 as its own /proc/kallsyms says; after rootkit-lstar moved it to
// a stub in vk_lstar, `vigil check` names the module; after rmmod the finding is gone. Each snapshot
// stops the guest for a few milliseconds: it must run on afterwards, its console and clock alive.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { attackImage, runAttack } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import type { Alert } from '../../src/policy/types.js';
import { QemuCpuState } from '../../src/vmm/qemu/cpu-state.js';
import { runVigil } from '../support/cli.js';
import { dumpGuest, withQmp } from '../support/dump.js';
import { guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-msr';
const progress = (line: string) => process.stderr.write(`[policy-msr] ${line}\n`);
const hex = (v: bigint) => `0x${v.toString(16)}`;
const show = (alerts: readonly Alert[]) => alerts.map((a) => `${a.policy} ${a.key}: ${a.summary}`).join('\n');
const msrAlerts = (alerts: readonly Alert[]) =>
  alerts.filter((a) => a.policy === 'memory-access' && a.key.startsWith('msr:'));

/** `vigil check --json` with memory-access only; exit 0 (clean) or 1 (alerts). */
async function check(target: string[]): Promise<{ alerts: Alert[]; stderr: string }> {
  const args = ['check', ...target, '--json', '--policy', 'memory-access', '--no-baseline'];
  const r = await runVigil(args, { timeoutMs: 300_000 });
  assert.ok(r.code === 0 || r.code === 1, `vigil ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return { alerts: JSON.parse(r.stdout) as Alert[], stderr: r.stderr };
}

async function kallsyms(g: GuestState, name: string): Promise<bigint> {
  const out = await guestRun(g, `grep ' ${name}$' /proc/kallsyms`);
  const m = /^([0-9a-f]+) \S /m.exec(out);
  assert.ok(m, `no ${name} in /proc/kallsyms: ${out}`);
  return BigInt(`0x${m[1]}`);
}

/** The guest still runs: QMP says so, its console answers and its clock moves. */
async function assertAlive(g: GuestState): Promise<void> {
  const status = await withQmp(g, (q) => q.queryStatus());
  assert.deepEqual([status.status, status.running], ['running', true]);
  const t1 = Number((await guestRun(g, 'cat /proc/uptime')).split(' ')[0]);
  await new Promise((r) => setTimeout(r, 1100));
  const t2 = Number((await guestRun(g, 'cat /proc/uptime')).split(' ')[0]);
  assert.ok(t2 > t1, `guest uptime moves on (${t1} → ${t2})`);
}

describe('syscall entry MSRs from a QEMU device-state snapshot', { timeout: 1_800_000 }, () => {
  let g: GuestState;
  let entry: bigint;
  let scratch: string;

  before(async () => {
    g = await sharedGuest(GUEST, await attackImage({ progress }));
    entry = await kallsyms(g, 'entry_SYSCALL_64');
    scratch = mkdtempSync(join(tmpdir(), 'vigil-msr-'));
  });

  after(async () => {
    rmSync(scratch, { recursive: true, force: true });
    await stopGuest(GUEST);
  });

  test('a clean guest: every vCPU enters at entry_SYSCALL_64; snapshots are small and short', async () => {
    const compat = await kallsyms(g, 'entry_SYSCALL_compat');
    const sysenter = await kallsyms(g, 'entry_SYSENTER_compat');
    const stats = await withQmp(g, async (q) => {
      const cs = new QemuCpuState(q);
      const out = [];
      for (let i = 0; i < 3; i++) {
        const msrs = await cs.syscallEntryMsrs();
        assert.ok(msrs.length >= 1);
        for (const m of msrs) {
          assert.equal(hex(m.lstar), hex(entry));
          assert.equal(hex(m.cstar!), hex(compat));
          assert.equal(hex(m.sysenterEip!), hex(sysenter));
        }
        out.push(cs.last!);
        // Each snapshot leaves the VM running and the migration capability as it was.
        assert.equal((await q.queryStatus()).running, true);
        const caps = await q.execute<{ capability: string; state: boolean }[]>('query-migrate-capabilities');
        assert.equal(caps.find((c) => c.capability === 'x-ignore-shared')?.state, false);
      }
      return out;
    });
    progress(`snapshots: ${JSON.stringify(stats)}`);
    for (const s of stats) {
      // Device state, firmware ROMs and the vmdesc; the 256 MiB of shared RAM stay out.
      assert.ok(s.bytes > 50_000 && s.bytes < 4 << 20, `stream of ${s.bytes} bytes`);
      assert.ok(s.pausedMs !== undefined && s.pausedMs < 1000, `paused ${s.pausedMs} ms`);
    }
    const { alerts } = await check(['--qmp', g.qmp]);
    assert.deepEqual(show(msrAlerts(alerts)), '');
    await assertAlive(g);
  });

  test('rootkit-lstar: memory-access names vk_lstar; the guest runs on; rmmod clears it', async () => {
    const attack = await runAttack(g, 'rootkit-lstar');
    progress(`rootkit-lstar: ${JSON.stringify(attack.fields)}`);
    const stub = BigInt(attack.fields.lstar!);
    assert.ok(Number(attack.fields.hits) > 0);
    const { alerts } = await check(['--qmp', g.qmp]);
    const found = msrAlerts(alerts);
    assert.ok(found.length >= 1, show(alerts));
    // The lab guest has one vCPU; every vCPU's LSTAR was moved.
    const lstar = found.find((a) => a.key === 'msr:lstar:0');
    assert.ok(lstar, show(found));
    assert.equal(lstar.severity, 'critical');
    assert.equal(lstar.technique, 'T1014');
    assert.equal(lstar.evidence.msr, 'IA32_LSTAR');
    assert.equal(lstar.evidence.value, hex(stub));
    assert.equal(lstar.evidence.expected, hex(entry));
    assert.equal(lstar.evidence.expectedSymbol, 'entry_SYSCALL_64');
    const owner = lstar.evidence.owner as Record<string, unknown>;
    assert.equal(owner.module, 'vk_lstar');
    assert.match(
      lstar.summary,
      new RegExp(
        `^syscall entry MSR LSTAR of vCPU 0 points to ${hex(stub)} \\(module vk_lstar\\+0x[0-9a-f]+\\), not entry_SYSCALL_64 ${hex(entry)}$`,
      ),
    );
    assert.equal(found.length, 1, show(found));
    // System calls keep going through the stub after the snapshots.
    const hits1 = BigInt((await guestRun(g, 'cat /sys/module/vk_lstar/parameters/lstar_hits')).trim());
    await assertAlive(g);
    const hits2 = BigInt((await guestRun(g, 'cat /sys/module/vk_lstar/parameters/lstar_hits')).trim());
    assert.ok(hits2 > hits1);

    await guestRun(g, 'rmmod vk_lstar');
    assert.deepEqual(show(msrAlerts((await check(['--qmp', g.qmp])).alerts)), '');
    await assertAlive(g);
  });

  test('a dump has no vCPU device state: the check is skipped with its reason', async () => {
    const path = join(scratch, 'guest.elf');
    await dumpGuest(g, path, 'elf');
    const r = await runVigil(['check', '--dump', path, '--policy', 'memory-access', '--no-baseline'], {
      timeoutMs: 300_000,
    });
    assert.ok(r.code === 0 || r.code === 1, r.stderr);
    assert.match(
      r.stderr,
      /vigil: skipped memory-access\/syscall-msr: needs the vCPU device state; a memory dump has none/,
    );
  });
});
