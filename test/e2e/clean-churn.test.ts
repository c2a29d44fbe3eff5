// A clean guest under benign churn raises nothing: hundreds of short-lived processes and traffic over the
// NIC (ping of the user-net gateway, TCP exchanges with a server this test runs on the host's loopback)
// while every registered policy sweeps at least 60 times. False positives are defects: when a policy
// alerts here, the failure shows its alerts with their evidence. The guest runs the attack image, as the
// demo's does, but no attack.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { attackImage } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import { Kernel } from '../../src/os/linux/kernel.js';
import { kernelIdentity } from '../../src/os/linux/live-kernel.js';
import { listTasks } from '../../src/os/linux/tasks/index.js';
import { MemoryBaselineStore } from '../../src/policy/baseline.js';
import { Engine, type SweepReport } from '../../src/policy/engine.js';
import { ALL_POLICIES } from '../../src/policy/policies/index.js';
import type { Alert } from '../../src/policy/types.js';
import { connectQemu, type QemuMachine } from '../../src/vmm/qemu/machine.js';
import { guestExec, guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-churn';
const SWEEPS = 60;
/** Pause between sweeps, so that the guest moves on between two looks. */
const GAP_MS = 250;

interface Counts {
  procs: number;
  conns: number;
  pings: number;
}

function parseCounts(text: string): Counts {
  const m = /procs (\d+) conns (\d+) pings (\d+)/.exec(text);
  assert.ok(m, `vigil-churn counts: ${text}`);
  return { procs: Number(m[1]), conns: Number(m[2]), pings: Number(m[3]) };
}

function describeAlert(a: Alert): string {
  const evidence = JSON.stringify(a.evidence, (_k, v: unknown) =>
    typeof v === 'bigint' ? `0x${v.toString(16)}` : v,
  );
  return `[${a.severity}] ${a.policy} key=${a.key}: ${a.summary}\n    evidence: ${evidence.slice(0, 1500)}`;
}

describe('a clean guest under churn', { timeout: 1_800_000 }, () => {
  let guest: GuestState;
  let server: Server;
  let port = 0;
  let received = 0;
  let machine: QemuMachine | undefined;

  before(async () => {
    // The guest's 10.0.2.2:PORT is this loopback port (QEMU user networking): the only host port it uses.
    server = createServer((sock) => {
      sock.on('error', () => sock.destroy());
      sock.once('data', () => {
        received++;
        sock.end('ok\n');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    guest = await sharedGuest(GUEST, { ...(await attackImage()) });
  });

  after(async () => {
    await machine?.close();
    if (guest) await guestExec(guest, 'vigil-churn stop', 120_000).catch(() => undefined);
    server?.close();
    await stopGuest(GUEST);
  });

  it(`every policy, ${SWEEPS} sweeps under process and network churn: zero alerts`, async () => {
    assert.ok(ALL_POLICIES.length > 0, 'no policy is registered in ALL_POLICIES');
    machine = await connectQemu(guest.qmp, { name: guest.name });
    const kernel = Kernel.bootstrap(machine.memory, { live: true });
    const engine = new Engine<Kernel>({
      vm: guest.name,
      machine,
      policies: [...ALL_POLICIES],
      kernel,
      kernelIdentity: kernelIdentity(kernel),
      baselines: new MemoryBaselineStore(),
      // Sweep speed is the benchmark's business; here only detections count.
      config: { sweepBudgetMs: 600_000 },
      beforeSweep: () => kernel.refresh(),
    });
    const active = engine.status().filter((s) => s.state === 'active');
    assert.ok(active.length > 0, 'no policy applies to a live QEMU guest');

    const alerts: Alert[] = [];
    const pending: Promise<unknown>[] = [];
    const unsubscribe = machine.qmp.onEvent((e) => {
      pending.push(
        engine
          .handleEvent({ source: 'qmp', name: e.event, time: e.time, data: e.data })
          .then((a) => alerts.push(...a)),
      );
    });

    // The baseline is learned on the quiet guest, as `vigil watch` and the demo do.
    const reports: SweepReport[] = [await engine.sweep({ force: true })];
    let churn: Counts;
    const taskCounts: number[] = [];
    try {
      assert.match(await guestRun(guest, `vigil-churn start ${port}`), /^started \d+/m);
      for (let i = 0; i < SWEEPS; i++) {
        await new Promise((r) => setTimeout(r, GAP_MS));
        reports.push(await engine.sweep({ force: true }));
        // What this sweep saw (its epoch's cached pages): the churn shows as a moving task count.
        taskCounts.push(listTasks(kernel).length);
      }
      churn = parseCounts(await guestRun(guest, 'vigil-churn count'));
    } finally {
      unsubscribe();
      await guestExec(guest, 'vigil-churn stop', 120_000).catch(() => undefined);
    }
    await Promise.all(pending);
    for (const r of reports) alerts.push(...r.alerts);

    const failed = reports.flatMap((r) =>
      r.runs.filter((x) => x.outcome === 'failed' || x.outcome === 'incomplete'),
    );
    const ms = reports.slice(1).map((r) => r.durationMs);
    const summary =
      `${active.length} policies (${active.map((s) => s.id).join(' ')}), ${reports.length} sweeps ` +
      `(${Math.min(...ms)}–${Math.max(...ms)} ms), tasks ${Math.min(...taskCounts)}–${Math.max(...taskCounts)}; ` +
      `guest churn: ${churn.procs} processes, ${churn.conns} TCP exchanges (host saw ${received}), ${churn.pings} pings`;
    process.stderr.write(`clean-churn: ${summary}\n`);

    // The churn really happened: hundreds of processes and traffic through the NIC to the host.
    assert.ok(churn.procs >= 300, `only ${churn.procs} short-lived processes: ${summary}`);
    assert.ok(churn.conns >= 10 && received >= 10, `too little traffic: ${summary}`);
    assert.ok(Math.max(...taskCounts) > Math.min(...taskCounts), `the task count never changed: ${summary}`);

    assert.equal(
      alerts.length,
      0,
      `a clean guest raised ${alerts.length} alert(s) — false positives, by policy:\n  ` +
        alerts.map(describeAlert).join('\n  ') +
        `\n${summary}`,
    );
    assert.deepEqual(
      failed.map((f) => `${f.policy}: ${f.outcome} ${f.error ?? ''}`),
      [],
      `policies that did not complete a sweep: ${summary}`,
    );
  });
});
