// qemu-guest-agent in the reference guest, end to end: connectQemu finds the agent through QMP with no
// configuration, and what the agent says (busybox ps, /proc/modules) is what the guest's own console shows.
// Also: an agent that stopped (port closed) or hangs (port open, no answer) leaves `agent` undefined with
// the reason, quickly; a woken or restarted agent is found again.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import type { GuestState } from '../../src/lab/index.js';
import { connectQemu, type QemuMachine } from '../../src/vmm/qemu/machine.js';
import type { GuestAgent } from '../../src/vmm/types.js';
import { groundTruthPs, guestRun, sharedGuest } from '../support/guest.js';

// VIGIL_TEST_GUEST: a guest of one's own, when other runs use the shared one.
const GUEST = process.env.VIGIL_TEST_GUEST ?? 'vigil-test-main';

interface PsLine {
  pid: number;
  command: string;
}

/** busybox ps: "  PID USER     COMMAND" then "  123 root     [kthreadd]" lines. */
function parseBusyboxPs(text: string): Map<number, PsLine> {
  const out = new Map<number, PsLine>();
  const lines = text.split('\n');
  assert.match(lines[0] ?? '', /^\s*PID\s+USER\s+COMMAND/);
  for (const line of lines.slice(1)) {
    const m = /^\s*(\d+)\s+\S+\s+(.*)$/.exec(line);
    if (m) out.set(Number(m[1]), { pid: Number(m[1]), command: m[2] });
  }
  return out;
}

async function agentPs(agent: GuestAgent): Promise<Map<number, PsLine>> {
  const r = await agent.exec('/bin/busybox', ['ps']);
  assert.equal(r.exitCode, 0, r.stderr.toString());
  assert.equal(r.truncated, false);
  return parseBusyboxPs(r.stdout.toString());
}

/** busybox ps shows a kernel thread as "[comm]" cut to 15 bytes; /proc/PID/stat has its whole name. */
function sameName(comm: string, command: string): boolean {
  const kthread = /^\[(.*)\]$/.exec(command);
  return kthread ? comm.startsWith(kthread[1]) : command.includes(comm);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe('qemu-guest-agent in the lab guest', { timeout: 600_000 }, () => {
  let g: GuestState;
  let m: QemuMachine;

  before(async () => {
    g = await sharedGuest(GUEST);
    // An earlier run that failed half-way may have left the agent stopped.
    await guestRun(g, 'kill -CONT $(pidof qemu-ga) 2>/dev/null; pidof qemu-ga || vigil-qga');
    m = await connectQemu(g.qmp);
  });
  after(async () => {
    await m?.close();
  });

  it('is found through QMP with zero configuration', () => {
    assert.equal(m.agentProblem, undefined);
    assert.ok(m.agent, 'connectQemu found no agent');
    assert.equal(m.agentSocket, g.qga);
  });

  it('runs busybox ps in the guest: the PIDs the guest really has', async () => {
    const agent = m.agent!;
    const first = await agentPs(agent);
    const truth = await groundTruthPs(g);
    const second = await agentPs(agent);
    const truthPids = new Map(truth.map((p) => [p.pid, p]));
    const problems: string[] = [];
    // Every process /proc showed in between, the agent saw in one of its two listings (kernel workers
    // come and go: skipped).
    for (const p of truth) {
      if (!first.has(p.pid) && !second.has(p.pid) && !p.comm.startsWith('kworker')) {
        problems.push(`the agent's ps never showed ${p.pid} ${p.comm}`);
      }
    }
    // Every process in both agent listings was in /proc, under its name (each ps appears only in its own).
    let stable = 0;
    for (const [pid, line] of first) {
      if (!second.has(pid)) continue;
      stable++;
      const p = truthPids.get(pid);
      if (!p) problems.push(`the agent's ps showed ${pid} "${line.command}" twice, /proc never did`);
      else if (!p.comm.startsWith('kworker') && !sameName(p.comm, line.command)) {
        problems.push(`${pid}: /proc says ${p.comm}, the agent's ps "${line.command}"`);
      }
    }
    assert.deepEqual(problems, []);
    assert.ok(stable >= 20, `only ${stable} processes compared`);
    const qga = [...second.values()].find((l) => l.command.startsWith('/usr/sbin/qemu-ga'));
    assert.ok(qga && truthPids.get(qga.pid)?.comm === 'qemu-ga', 'qemu-ga itself is among them');
  });

  it('reads /proc/modules as the console shows it', async () => {
    const viaAgent = (await m.agent!.readFile('/proc/modules')).toString();
    const viaConsole = await guestRun(g, 'cat /proc/modules');
    assert.equal(viaAgent, viaConsole);
    assert.match(viaAgent, /^virtio_console \d+ /m);
  });

  it('answers fast enough to ask every sweep (timed)', async (t) => {
    const agent = m.agent!;
    const execMs: number[] = [];
    const readMs: number[] = [];
    for (let i = 0; i < 10; i++) {
      let t0 = performance.now();
      await agent.exec('/bin/busybox', ['ps']);
      execMs.push(performance.now() - t0);
      t0 = performance.now();
      await agent.readFile('/proc/modules');
      readMs.push(performance.now() - t0);
    }
    const line =
      `exec busybox ps: median ${median(execMs).toFixed(1)} ms (min ${Math.min(...execMs).toFixed(1)}, ` +
      `max ${Math.max(...execMs).toFixed(1)}); readFile /proc/modules: median ` +
      `${median(readMs).toFixed(1)} ms (min ${Math.min(...readMs).toFixed(1)}, max ${Math.max(...readMs).toFixed(1)})`;
    t.diagnostic(line);
    process.stderr.write(`[guest-agent] ${line}\n`);
    assert.ok(median(execMs) < 5000 && median(readMs) < 5000);
  });

  it('leaves out an agent that stopped or hangs, saying why, and finds it again once restarted', async () => {
    await m.close();
    const reconnect = async (timeoutMs: number) => {
      const t0 = performance.now();
      const machine = await connectQemu(g.qmp, { agentTimeoutMs: timeoutMs });
      return { machine, ms: performance.now() - t0 };
    };
    try {
      // Hung: the port stays open, nothing answers.
      await guestRun(g, 'kill -STOP $(cat /run/qemu-ga.pid)');
      const hung = await reconnect(500);
      await hung.machine.close();
      assert.equal(hung.machine.agent, undefined);
      assert.match(hung.machine.agentProblem ?? '', /did not answer guest-sync-delimited within 500 ms/);
      await guestRun(g, 'kill -CONT $(cat /run/qemu-ga.pid)');
      // Woken up, it answers what it was sent meanwhile: QEMU holds the port's writes until a client
      // connects (a real agent blocks until then), and the next client's sync drops those stale replies.
      const woken = await reconnect(3000);
      try {
        assert.ok(woken.machine.agent, woken.machine.agentProblem);
        assert.equal((await woken.machine.agent.exec('/bin/busybox', ['true'])).exitCode, 0);
      } finally {
        await woken.machine.close();
      }
      // Stopped: the guest closed the port; QEMU knows at once, no wait.
      await guestRun(
        g,
        'p=$(cat /run/qemu-ga.pid); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.1; done',
      );
      const stopped = await reconnect(3000);
      await stopped.machine.close();
      assert.equal(stopped.machine.agent, undefined);
      assert.match(stopped.machine.agentProblem ?? '', /not opened its agent port/);
      assert.ok(stopped.ms < 3000, `took ${stopped.ms} ms`);
    } finally {
      await guestRun(g, 'kill -CONT $(pidof qemu-ga) 2>/dev/null; pidof qemu-ga || vigil-qga');
    }
    // Restarted: found again.
    m = await connectQemu(g.qmp);
    assert.ok(m.agent, m.agentProblem);
    assert.equal((await m.agent.exec('/bin/busybox', ['true'])).exitCode, 0);
  });
});
