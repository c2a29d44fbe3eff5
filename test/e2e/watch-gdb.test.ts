// `vigil watch` with QEMU's GDB stub, end to end on a lab guest: zero configuration finds the stub
// (query-chardev), memory-access's write watchpoints are armed after the bootstrap, and a rootkit writing
// sys_call_table[62] in place (rootkit-wp: CR0.WP cleared, the entry's own virtual address) raises an alert
// at once — long before the next sweep — naming the writer (module, task) and the value written. The guest
// keeps running throughout; after a reboot and after a QEMU restart (a new stub port) the watchpoints are
// armed again and catch the attack again; SIGTERM detaches and leaves the VM running with the stub free.
// With a pause response the VM is held at the hit and stays paused past vigil's exit. Then: the guest
// slowdown with four watchpoints armed. The lab guest has one QMP socket and vigil holds it while it
// watches: the VM's state is asked of its shell then, of QMP only before and after.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { attackImage, runAttack } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import { bootstrapLive } from '../../src/os/linux/live-kernel.js';
import { criticalWatchTargets } from '../../src/policy/policies/kernel-watchpoints.js';
import { GdbClient } from '../../src/vmm/gdb/client.js';
import { QmpClient } from '../../src/vmm/qmp/client.js';
import { findGdbStub } from '../../src/vmm/qemu/gdb-stub.js';
import { connectQemu } from '../../src/vmm/qemu/machine.js';
import { runVigil } from '../support/cli.js';
import { consoleBack, consoleWrite, guestExec, guestRun, sharedGuest } from '../support/guest.js';
import { readJsonl, until, WatchProcess, type JsonlAlert } from '../support/watch.js';

const NAME = 'vigil-test-watch-gdb';
const say = (s: string) => process.stderr.write(`[watch-gdb] ${s}\n`);
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const KILL_ENTRY = 'sys_call_table[62] (kill)';

const evidenceOf = (a: JsonlAlert) => a.vigil.evidence as Record<string, unknown>;

async function qmpOf<T>(g: GuestState, fn: (q: QmpClient) => Promise<T>): Promise<T> {
  const q = await QmpClient.connect(g.qmp);
  try {
    return await fn(q);
  } finally {
    await q.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('vigil watch with GDB-stub write watchpoints', { timeout: 900_000 }, () => {
  let image: { kernel: string; initrd: string; kernelRelease: string };
  let g: GuestState;
  let dir: string;
  let jsonl: string;
  let w: WatchProcess | undefined;

  before(async () => {
    image = await attackImage({ progress: (l) => say(l) });
    // A fresh guest: rootkit-wp loads its module once per boot.
    await stopGuest(NAME).catch(() => undefined);
    g = await sharedGuest(NAME, image);
    dir = mkdtempSync(join(tmpdir(), 'vigil-e2e-watch-gdb-'));
    jsonl = join(dir, 'alerts.jsonl');
    // memory-access alone, its sweep once a minute: the watchpoint is what must see the attack.
    writeFileSync(
      join(dir, 'watch.yaml'),
      `policies:
  '*': { enabled: false }
  memory-access: { enabled: true, intervalMs: 60000 }
sinks:
  - { type: jsonl, path: alerts.jsonl }
baselineDir: baselines
retry:
  reconnect: { initialMs: 200, maxMs: 1000 }
  bootstrap: { initialMs: 250, maxMs: 1000 }
identityCheckMs: 2000
`,
    );
    writeFileSync(
      join(dir, 'pause.yaml'),
      `policies:
  '*': { enabled: false }
  memory-access: { enabled: true, intervalMs: 60000, response: pause }
sinks:
  - { type: jsonl, path: alerts.jsonl }
baselineDir: baselines
`,
    );
  });

  // A failed test must not leave its vigil holding the QMP socket and the stub for the next one.
  afterEach(async () => {
    if (!w || w.child.exitCode !== null) return;
    w.child.kill('SIGTERM');
    const timer = setTimeout(() => w?.child.kill('SIGKILL'), 15_000);
    await w.exited;
    clearTimeout(timer);
  });

  after(async () => {
    if (w && w.child.exitCode === null) w.child.kill('SIGKILL');
    await stopGuest(NAME).catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Run rootkit-wp and wait for memory-access's watchpoint alert; returns it with its latency. */
  async function attackCaught(round: number): Promise<{ alert: JsonlAlert; entry: string }> {
    const before = readJsonl(jsonl).filter((a) => a.vigil.key === `watch:${KILL_ENTRY}`).length;
    const t0 = Date.now();
    const r = await runAttack(g, 'rootkit-wp');
    const ran = Date.now();
    const alert = await until(
      'the watchpoint alert in the JSONL file',
      () => readJsonl(jsonl).filter((a) => a.vigil.key === `watch:${KILL_ENTRY}`)[before],
      30_000,
      () =>
        (w?.lines ?? [])
          .slice(-10)
          .map((l) => l.text)
          .join('\n'),
    );
    const seen = Date.now();
    const raised = Date.parse(alert.vigil.time);
    say(
      `round ${round}: rootkit-wp ran in ${secs(ran - t0)}; alert raised ${secs(raised - t0)} after the attack ` +
        `started (in the file after ${secs(seen - t0)}): ${alert.vigil.summary}`,
    );
    // The sweep runs once a minute: only the watchpoint can have been this fast.
    assert.ok(raised - t0 < 20_000);
    return { alert, entry: r.fields.entry! };
  }

  function checkEvidence(alert: JsonlAlert, entry: string): void {
    assert.equal(alert.vigil.policy, 'memory-access');
    assert.equal(alert.vigil.severity, 'critical');
    const ev = evidenceOf(alert);
    const watch = ev.watch as Record<string, unknown>;
    assert.equal(watch.va, entry, 'the entry vk_wp says it wrote');
    assert.equal(watch.target, KILL_ENTRY);
    const writer = ev.writer as { code: { where: string; module?: string }; task?: { comm: string } };
    assert.equal(writer.code.where, 'module');
    assert.equal(writer.code.module, 'vk_wp', 'written from vk_wp (its init code)');
    assert.equal(writer.task?.comm, 'insmod', 'by the task that loaded it');
    const now = ev.now as { address: string; module?: string };
    assert.equal(now.module, 'vk_wp', 'the entry now points into vk_wp');
    // The value read at the hit is the pointer the entry now holds.
    assert.equal(
      `0x${Buffer.from(watch.value as string, 'hex')
        .readBigUInt64LE(0)
        .toString(16)}`,
      now.address,
    );
    assert.equal(ev.changed, true);
    assert.match(
      alert.vigil.summary,
      /caught by a watchpoint .*written from 0x[0-9a-f]+ in module vk_wp\+0x[0-9a-f]+ by insmod/,
    );
  }

  /** The guest's shell answers (while vigil holds the QMP socket, that is the only way to ask). */
  async function answers(): Promise<void> {
    assert.equal((await guestExec(g, 'echo alive', 20_000)).output.trim(), 'alive');
  }

  /** QMP says running, and the shell answers. */
  async function running(): Promise<void> {
    const st = await qmpOf(g, (q) => q.queryStatus());
    assert.equal(st.status, 'running');
    await answers();
  }

  function startWatch(config: string): WatchProcess {
    w = new WatchProcess(['--qmp', g.qmp, '--config', join(dir, config)], 'watch-gdb');
    return w;
  }

  async function term(p: WatchProcess): Promise<void> {
    const t = Date.now();
    p.child.kill('SIGTERM');
    assert.deepEqual(await p.exited, { code: 0, signal: null });
    say(`SIGTERM: exit 0 after ${secs(Date.now() - t)}`);
  }

  async function stubFree(): Promise<void> {
    const free = await qmpOf(g, (q) => findGdbStub(q));
    assert.equal(free?.busy, false, `no debugger left on the stub (${free?.filename})`);
    const gdb = await GdbClient.connect(`127.0.0.1:${g.gdbPort}`);
    assert.deepEqual(gdb.breakpoints, []);
    await gdb.close();
  }

  /**
   * memory-access has learned its baseline of the kernel a 'watching' line names (the first sweep after a
   * boot): an attack before that would be learned as the clean state.
   */
  async function learned(watching: string): Promise<void> {
    const offset = /KASLR offset (0x[0-9a-f]+)/.exec(watching)?.[1];
    assert.ok(offset, watching);
    await until(
      `the memory-access baseline of the kernel at ${offset}`,
      () => baselineOf(dir, offset),
      120_000,
    );
  }

  it('catches an in-place sys_call_table write at once, across a reboot and a QEMU restart', async () => {
    const found = await qmpOf(g, (q) => findGdbStub(q));
    assert.deepEqual(found && { address: found.address, busy: found.busy }, {
      address: `127.0.0.1:${g.gdbPort}`,
      busy: false,
    });

    const t0 = Date.now();
    const w = startWatch('watch.yaml');
    const armed = await w.line(/write watchpoints on .* via GDB stub/, t0, 120_000);
    assert.match(
      armed.text,
      new RegExp(
        `sys_call_table\\[62\\] \\(kill\\), sys_call_table\\[217\\] \\(getdents64\\), sys_call_table\\[78\\] \\(getdents\\), idt\\[0x80\\] via GDB stub 127\\.0\\.0\\.1:${g.gdbPort}$`,
      ),
    );
    const up = await w.transition(NAME, 'watching', t0, 120_000);
    say(`watching ${secs(up.at - t0)} after start; ${armed.text.replace(/^\S+ vm /, '')}`);
    await learned(up.text);
    await answers();

    const first = await attackCaught(1);
    checkEvidence(first.alert, first.entry);
    await answers();
    assert.ok(
      w.lines.every((l) => !/-> paused/.test(l.text)),
      'a hit is not a pause of the VM',
    );

    // A reboot: the watchpoints go with the old kernel and come back with the new one.
    const tBoot = Date.now();
    await consoleWrite(g, 'reboot -f\n');
    await w.transition(NAME, 'bootstrapping', tBoot, 60_000);
    const rearmed = await w.line(/write watchpoints on .* via GDB stub/, tBoot, 240_000);
    const back = await w.transition(NAME, 'watching', tBoot, 240_000);
    say(`reboot: armed again and watching ${secs(back.at - tBoot)} after it`);
    assert.ok(rearmed.at <= back.at);
    await consoleBack(g, 240_000);
    await learned(back.text);
    const second = await attackCaught(2);
    checkEvidence(second.alert, second.entry);
    assert.notEqual(second.entry, first.entry, 'a new kernel (new KASLR slide): new addresses watched');

    // QEMU restarted: a new process, a new stub port, found again through QMP.
    const tKill = Date.now();
    const oldPort = g.gdbPort;
    await stopGuest(NAME);
    await w.transition(NAME, 'lost', tKill, 60_000);
    g = await sharedGuest(NAME, image);
    const rearmed2 = await w.line(new RegExp(`via GDB stub 127\\.0\\.0\\.1:${g.gdbPort}$`), tKill, 240_000);
    const back2 = await w.transition(NAME, 'watching', tKill, 240_000);
    await learned(back2.text);
    say(
      `QEMU restart: stub port ${oldPort} -> ${g.gdbPort}, armed again ${secs(rearmed2.at - tKill)} after the stop`,
    );
    const third = await attackCaught(3);
    checkEvidence(third.alert, third.entry);
    await answers();

    // SIGTERM: watchpoints out, detached, the VM runs on and the stub is free for the next debugger.
    await term(w);
    await running();
    await stubFree();
    const cli = await runVigil(['info', '--qmp', g.qmp, '--gdb', `127.0.0.1:${g.gdbPort}`]);
    assert.equal(cli.code, 0, `vigil info --gdb: ${cli.stderr}`);
    await running();
  });

  it('with a pause response, holds the VM at the hit; it stays paused after vigil exits', async () => {
    await guestRun(g, 'rmmod vk_wp'); // the entry written back (no watchpoint set now); loadable again
    const w = startWatch('pause.yaml');
    const t0 = Date.now();
    await w.line(/write watchpoints on .* via GDB stub/, t0, 120_000);
    await w.transition(NAME, 'watching', t0, 120_000);
    await answers();
    const tAttack = Date.now();
    // Not through runAttack: the console will not answer while the VM is held.
    await consoleWrite(g, '/attacks/run/rootkit-wp > /tmp/rootkit-wp.out 2>&1\n');
    const held = await w.transition(NAME, 'paused', tAttack, 30_000);
    assert.match(held.text, /held at a watchpoint hit/);
    const alert = await until(
      'the pause alert',
      () =>
        readJsonl(jsonl).find(
          (a) => a.vigil.key === `watch:${KILL_ENTRY}` && Date.parse(a.vigil.time) >= tAttack,
        ),
      30_000,
    );
    const response = alert.vigil.response as { action: string; ok: boolean; detail?: string }[] | undefined;
    say(
      `held at the hit ${secs(held.at - tAttack)} after the attack started; response ${JSON.stringify(response)}`,
    );
    // (Nothing is typed on the console meanwhile: the stopped guest would leave it half-read.)
    await term(w);
    const st = await qmpOf(g, (q) => q.queryStatus());
    assert.equal(st.running, false, `still paused after vigil exited (${st.status})`);
    await qmpOf(g, (q) => q.cont());
    await answers();
    assert.match(await guestRun(g, 'cat /tmp/rootkit-wp.out'), /ATTACK rootkit-wp module=vk_wp/);
    await stubFree();
    await running();
  });

  it('measures the guest slowdown with four watchpoints armed (TCG)', async () => {
    const n = Number(process.env.VIGIL_TEST_LOOP ?? 100_000);
    const loop = async () => {
      const out = await guestRun(g, `vigil-cpuloop ${n}`, 300_000);
      const m = /elapsed_ms (\d+)/.exec(out);
      assert.ok(m, out);
      return Number(m[1]);
    };
    const pairs: { none: number; armed: number }[] = [];
    for (let i = 0; i < Number(process.env.VIGIL_TEST_PAIRS ?? 5); i++) {
      const none = await loop();
      const m = await connectQemu(g.qmp, { gdb: 'auto', agent: false });
      try {
        assert.ok(m.gdb, m.gdbProblem);
        const found = await bootstrapLive(m.memory, m.vcpus);
        assert.ok(found.ok);
        const targets = criticalWatchTargets(found.kernel);
        assert.equal(targets.length, 4);
        for (const t of targets) await m.gdb.watch(t.va, t.len, 'w');
        assert.equal((await m.qmp.queryStatus()).running, true);
        pairs.push({ none, armed: await loop() });
      } finally {
        await m.close();
      }
    }
    const ratios = pairs.map((p) => p.armed / p.none);
    say(
      `vigil-cpuloop ${n}: none ${pairs.map((p) => p.none).join(', ')} ms; 4 watchpoints ` +
        `${pairs.map((p) => p.armed).join(', ')} ms; median ratio ${median(ratios).toFixed(3)} ` +
        `(range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`,
    );
    await running();
  });
});

/** A baseline file holds memory-access's section for the kernel with this KASLR offset. */
function baselineOf(dir: string, kaslrOffset: string): boolean {
  try {
    return readdirSync(join(dir, 'baselines')).some((f) => {
      // src/policy/baseline.ts serializeBaseline: one top-level key per policy.
      const doc = JSON.parse(readFileSync(join(dir, 'baselines', f), 'utf8')) as Record<
        string,
        { identity?: { kaslrOffset?: string } } | undefined
      >;
      return doc['memory-access']?.identity?.kaslrOffset === kaslrOffset;
    });
  } catch {
    return false; // not written yet, or being written
  }
}
