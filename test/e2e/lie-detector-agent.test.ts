// The guest-agent lie detector end to end: a lab guest with the attack suite and qemu-guest-agent. On the
// clean guest, `vigil check` with lie-detector and lie-detector-guest gives no alert; then the rootkits
// that make the guest's own tools lie run — vk_hide (getdents64: ps and ls /proc lose a PID), vk_hidemod
// (off the module list and out of /sys/module: /proc/modules loses it), vk_inline (tcp4_seq_show: a port
// leaves /proc/net/tcp) — and lie-detector-guest must name each: the PID, the module, the socket. The
// guest's own console confirms the lie each time (its ps, /proc/modules, /proc/net/tcp lack the thing,
// which is still there). A guest without a reachable agent skips the agent tests with the reason.
// The first run builds the attack suite (kernel headers, rootkit modules): allow minutes.
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { attackImage, runAttack } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import type { Alert } from '../../src/policy/types.js';
import { connectQemu } from '../../src/vmm/qemu/machine.js';
import { runVigil } from '../support/cli.js';
import { guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-attacks-lie';
const POLICIES = ['lie-detector', 'lie-detector-guest'];
const progress = (line: string) => process.stderr.write(`[lie-detector-agent] ${line}\n`);

/** One `vigil check` of the two lie detectors; exit 0 (clean) or 1 (alerts), never 2. */
async function check(g: GuestState, extra: string[] = []): Promise<Alert[]> {
  const args = ['check', '--qmp', g.qmp, '--json', '--no-baseline', '--policy', ...POLICIES, ...extra];
  const r = await runVigil(args);
  assert.ok(r.code === 0 || r.code === 1, `vigil ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Alert[];
}

/** Alerts from these policies, and health alerts about them. */
const ours = (alerts: readonly Alert[]) =>
  alerts.filter(
    (a) =>
      POLICIES.includes(a.policy) ||
      (a.policy === 'vigil-health' && POLICIES.some((p) => a.key.includes(`:${p}`))),
  );
const show = (alerts: readonly Alert[]) => alerts.map((a) => `${a.policy} ${a.key}: ${a.summary}`).join('\n');
const ev = (a: Alert) => a.evidence as Record<string, unknown>;

/** The one lie-detector-guest alert whose key starts with `prefix`. */
function guestAlert(alerts: readonly Alert[], prefix: string): Alert {
  const hit = alerts.filter((a) => a.policy === 'lie-detector-guest' && a.key.startsWith(prefix));
  assert.equal(hit.length, 1, `expected one lie-detector-guest alert ${prefix}…, got:\n${show(alerts)}`);
  return hit[0]!;
}

describe('lie-detector-guest against rootkits that make the guest lie', { timeout: 1_800_000 }, () => {
  let g: GuestState;
  /** Why the agent tests cannot run; undefined when the guest's agent answers. */
  let noAgent: string | undefined;

  before(async () => {
    g = await sharedGuest(GUEST, await attackImage({ progress }));
    // The agent socket serves one client: look, then let go before vigil check connects.
    const m = await connectQemu(g.qmp);
    try {
      if (!m.agent) {
        noAgent = `no qemu-guest-agent reachable in ${GUEST}${m.agentProblem ? `: ${m.agentProblem}` : ''}`;
      }
    } finally {
      await m.close();
    }
  });

  after(async () => {
    // Two cores: the guest is this file's own.
    await stopGuest(GUEST);
  });

  const needsAgent = (t: TestContext): boolean => {
    if (noAgent === undefined) return true;
    t.skip(noAgent);
    return false;
  };

  test('the clean guest: no alert and no health alert from either lie detector', async (t) => {
    if (!needsAgent(t)) return;
    assert.equal(show(ours(await check(g))), '');
  });

  test('rootkit-hide: the PID the guest’s ps no longer shows', async (t) => {
    if (!needsAgent(t)) return;
    const r = await runAttack(g, 'rootkit-hide');
    const pid = Number(r.fields.pid);
    assert.ok(pid > 0, JSON.stringify(r.fields));
    // The guest lies: ps lacks the PID, yet /proc/PID answers.
    assert.doesNotMatch(await guestRun(g, 'ps -o pid'), new RegExp(`^\\s*${pid}\\s*$`, 'm'));
    assert.match(await guestRun(g, `cat /proc/${pid}/comm`), /vk-hidden/);
    const alerts = ours(await check(g));
    const a = guestAlert(alerts, `guest-ps:pid=${pid}:`);
    assert.equal(a.severity, 'high');
    assert.equal(a.technique, 'T1014');
    assert.equal(ev(a).pid, pid);
    assert.equal(ev(a).comm, 'vk-hidden');
    assert.deepEqual(ev(a).views, { taskList: true, pidTable: true, guestPs: false });
    // Hidden from getdents only: the kernel's own lists still agree, so the in-kernel detector is quiet.
    assert.deepEqual(
      alerts.filter((x) => x.policy === 'lie-detector').map((x) => x.key),
      [],
    );
  });

  test('rootkit-hidemod: the module /proc/modules no longer lists', async (t) => {
    if (!needsAgent(t)) return;
    const r = await runAttack(g, 'rootkit-hidemod');
    const name = r.fields.module ?? 'vk_hidemod';
    assert.doesNotMatch(await guestRun(g, 'cat /proc/modules'), new RegExp(`^${name} `, 'm'));
    const a = guestAlert(ours(await check(g)), `guest-modules:${name}:`);
    assert.equal(ev(a).module, name);
    assert.match(String(ev(a).base), /^0xffffffff[0-9a-f]{8}$/);
    const views = ev(a).views as Record<string, boolean>;
    assert.equal(views.list, false);
    assert.equal(views.guestProcModules, false);
    assert.ok(views.modTree || views.memory, JSON.stringify(views));
  });

  test('rootkit-inline: the listening port /proc/net/tcp no longer shows', async (t) => {
    if (!needsAgent(t)) return;
    const r = await runAttack(g, 'rootkit-inline');
    const port = Number(r.fields.port);
    const pid = Number(r.fields.pid);
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    assert.doesNotMatch(await guestRun(g, 'cat /proc/net/tcp'), new RegExp(`:${hexPort} 00000000:0000 0A`));
    const a = guestAlert(ours(await check(g)), `guest-net:tcp:0.0.0.0:${port}:`);
    assert.equal(ev(a).protocol, 'tcp');
    assert.equal(ev(a).localPort, port);
    assert.equal(ev(a).state, 'LISTEN');
    assert.ok(Number(ev(a).inode) > 0);
    assert.ok(
      (ev(a).owners as { pid: number }[]).some((o) => o.pid === pid),
      JSON.stringify(ev(a).owners),
    );
    assert.deepEqual(ev(a).views, { kernelTables: true, guestProcNet: false });
  });

  test('without the agent the guest view is skipped, and vigil says so', async () => {
    const r = await runVigil(['check', '--qmp', g.qmp, '--no-baseline', '--no-qga', '--policy', ...POLICIES]);
    assert.ok(r.code === 0 || r.code === 1, `exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /skipped lie-detector-guest: needs qemu-guest-agent; target is a live VM/);
  });
});
