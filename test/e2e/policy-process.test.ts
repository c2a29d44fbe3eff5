// Acceptance for the process and network detectors (lie-detector, raw-socket, nic-access,
// privilege-escalation, fileless, reverse-shell): a guest booted with the attack suite gives no alert from
// them while clean; then each attack runs and `vigil check --qmp` (one sweep, as a user runs it) must raise
// the expected alert with the attack's own evidence (its pid, the NIC, the socket). An ELF dump taken with
// every attack in place must give the same alerts from the policies that apply to dumps. Last, the
// event path of nic-access: NIC_RX_FILTER_CHANGED alone (no sweep) raises the promiscuous-mode alert.
// The first run builds the attack suite (kernel headers, rootkit modules): allow minutes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { attackImage, runAttack, type AttackResult } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import { Kernel } from '../../src/os/linux/kernel.js';
import { Engine } from '../../src/policy/engine.js';
import { nicAccessPolicy } from '../../src/policy/policies/nic-access.js';
import type { Alert } from '../../src/policy/types.js';
import { connectQemu } from '../../src/vmm/qemu/machine.js';
import { runVigil } from '../support/cli.js';
import { dumpGuest } from '../support/dump.js';
import { guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-attacks-process';
const POLICIES = [
  'lie-detector',
  'raw-socket',
  'nic-access',
  'privilege-escalation',
  'fileless',
  'reverse-shell',
];
const progress = (line: string) => process.stderr.write(`[policy-process] ${line}\n`);

/** One `vigil check` of these policies; exit 0 (clean) or 1 (alerts), never 2. */
async function check(target: string[]): Promise<Alert[]> {
  const r = await runVigil(['check', ...target, '--json', '--no-baseline', '--policy', ...POLICIES]);
  assert.ok(r.code === 0 || r.code === 1, `vigil check exited ${r.code}: ${r.stderr}`);
  const alerts = JSON.parse(r.stdout) as Alert[];
  assert.equal(r.code, alerts.some((a) => a.policy !== 'vigil-health' || a.severity !== 'info') ? 1 : 0);
  return alerts;
}

/** The one alert of `policy` matching `pred`, with a message listing what there was. */
function find(alerts: Alert[], policy: string, pred: (a: Alert) => boolean): Alert {
  const hit = alerts.filter((a) => a.policy === policy && pred(a));
  assert.equal(
    hit.length,
    1,
    `expected one ${policy} alert, got ${hit.length}:\n${alerts.map((a) => `${a.policy} ${a.key}: ${a.summary}`).join('\n')}`,
  );
  return hit[0]!;
}

const num = (r: AttackResult, key: string): number => {
  const v = r.fields[key];
  assert.ok(v !== undefined, `attack ${r.name} reported no ${key}=`);
  return Number(v);
};
const ev = (a: Alert) => a.evidence as Record<string, unknown>;

/** What every attack left behind, checked again on the dump. */
const expected: { name: string; policy: string; pred: (a: Alert) => boolean }[] = [];

describe('process and network policies against the attack suite', { timeout: 1_800_000 }, () => {
  let g: GuestState;
  let qmp: string[];
  let dir: string;

  before(async () => {
    g = await sharedGuest(GUEST, await attackImage({ progress }));
    qmp = ['--qmp', g.qmp];
    dir = mkdtempSync(join(tmpdir(), 'vigil-policy-process-'));
  });

  after(async () => {
    // Two cores: the guest is this file's own.
    await stopGuest(GUEST);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Run an attack, check, and expect an alert; remember it for the dump. */
  async function attack(
    name: string,
    policy: string,
    pred: (r: AttackResult) => (a: Alert) => boolean,
  ): Promise<{ a: Alert; r: AttackResult }> {
    const r = await runAttack(g, name);
    const p = pred(r);
    const a = find(await check(qmp), policy, p);
    expected.push({ name, policy, pred: p });
    return { a, r };
  }

  it('gives no alert (and no health alert about these policies) on the clean guest', async () => {
    const alerts = await check(qmp);
    // Engine health (a slow sweep on a busy host) is not these policies' doing; their own failures are.
    const ours = alerts.filter(
      (a) =>
        POLICIES.includes(a.policy) ||
        (a.policy === 'vigil-health' && POLICIES.some((p) => a.key.includes(`:${p}`))),
    );
    assert.deepEqual(
      ours.map((a) => `${a.policy} ${a.key}: ${a.summary}`),
      [],
    );
  });

  it('sniffer: the packet socket, its process and its inode', async () => {
    const { a, r } = await attack('sniffer', 'raw-socket', (r) => (x) => ev(x).pid === r.pid);
    assert.equal(a.severity, 'high');
    assert.equal(a.technique, 'T1040');
    assert.equal(ev(a).comm, 'sniffer');
    assert.equal(ev(a).exe, '/attacks/bin/sniffer');
    assert.equal(ev(a).protocol, '0x0003');
    assert.equal(ev(a).netid, 'packet');
    assert.equal(ev(a).inode, num(r, 'inode'));
    assert.equal((ev(a).holders as { fd: number }[])[0]!.fd, num(r, 'fd'));
  });

  it('promisc: eth0 in promiscuous mode, confirmed by QEMU', async () => {
    const { a } = await attack(
      'promisc',
      'nic-access',
      () => (x) => x.key.startsWith('promisc:') && ev(x).device === 'eth0',
    );
    assert.equal(ev(a).promiscFlag, true);
    assert.equal(ev(a).promiscRequested, true);
    assert.deepEqual((ev(a).qemu as { promiscuous: boolean }).promiscuous, true);
  });

  it('macchange: eth0’s MAC differs from its permanent address', async () => {
    const { a } = await attack(
      'macchange',
      'nic-access',
      (r) => (x) => x.key.startsWith('mac:') && ev(x).mac === r.fields.new,
    );
    assert.equal(ev(a).device, 'eth0');
    assert.equal(ev(a).permAddr, '52:54:00:12:34:56');
    assert.equal(ev(a).addrAssign, 'set');
    assert.equal(a.technique, 'T1557');
  });

  it('bindshell: the shell on the accepted connection', async () => {
    const { a } = await attack('bindshell', 'reverse-shell', (r) => (x) => ev(x).pid === num(r, 'shell'));
    assert.equal(ev(a).comm, 'sh');
    assert.equal(ev(a).kind, 'bind');
    assert.equal(ev(a).local, '127.0.0.1:4444');
    assert.equal(ev(a).state, 'ESTABLISHED');
    assert.equal((ev(a).parent as { comm: string }).comm, 'bindshell');
  });

  it('revshell: the shell connected out to its catcher', async () => {
    const { a } = await attack('revshell', 'reverse-shell', (r) => (x) => ev(x).pid === r.pid);
    assert.equal(ev(a).kind, 'reverse');
    assert.equal(ev(a).remote, '127.0.0.1:4445');
    assert.deepEqual(
      (ev(a).sockets as { fd: number }[]).map((s) => s.fd),
      [0, 1, 2],
    );
  });

  it('fileless: a process running from a memfd, with its executable mapping', async () => {
    const { a } = await attack(
      'fileless',
      'fileless',
      (r) => (x) => x.key.startsWith('memfd-exe:') && ev(x).pid === r.pid,
    );
    assert.equal(ev(a).exe, '/memfd:vigil-payload (deleted)');
    assert.equal(ev(a).memfd, 'vigil-payload');
    const maps = ev(a).mappings as { perms: string }[];
    assert.ok(maps.length >= 1 && maps.every((m) => m.perms.includes('x')), JSON.stringify(maps));
  });

  it('fileless-deleted: a process running from a deleted file in /tmp', async () => {
    const { a } = await attack(
      'fileless-deleted',
      'fileless',
      (r) => (x) => x.key.startsWith('deleted-exe:') && ev(x).pid === r.pid,
    );
    assert.equal(ev(a).exe, '/tmp/.vigil-dropper (deleted)');
    assert.equal(a.severity, 'high');
  });

  it('rootkit-dkom: a process unlinked from the task list, still in the PID table', async () => {
    const { a } = await attack('rootkit-dkom', 'lie-detector', (r) => (x) => ev(x).pid === r.pid);
    assert.equal(a.severity, 'critical');
    assert.equal(ev(a).comm, 'vk-unlinked');
    assert.deepEqual(ev(a).views, { taskList: false, pidTable: true, runQueue: null });
  });

  it('rootkit-root: root credentials under a uid-1000 parent with no set-uid exe', async () => {
    const { a, r } = await attack('rootkit-root', 'privilege-escalation', (r) => (x) => ev(x).pid === r.pid);
    assert.equal(ev(a).comm, 'vk-rooted');
    assert.equal((ev(a).parent as { pid: number }).pid, num(r, 'parent'));
    assert.equal((ev(a).parent as { comm: string; cred: { uid: number } }).cred.uid, 1000);
    assert.equal((ev(a).cred as { uid: number; euid: number }).euid, 0);
    assert.equal(ev(a).exe, '/attacks/bin/rootme');
  });

  it('an ELF dump taken with every attack in place gives the same alerts', async () => {
    const path = join(dir, 'attacks.elf');
    await dumpGuest(g, path, 'elf');
    const alerts = await check(['--dump', path]);
    for (const e of expected) find(alerts, e.policy, e.pred);
    // The dump has no QEMU to ask: the promiscuous-mode alert comes from the kernel alone.
    const promisc = find(alerts, 'nic-access', (x) => x.key.startsWith('promisc:'));
    assert.equal(ev(promisc).qemu, undefined);
  });

  it('nic-access raises on NIC_RX_FILTER_CHANGED alone, once per occurrence', async () => {
    // In-process: a watching engine holds the QMP connection (QEMU serves one client), so no CLI here.
    const m = await connectQemu(g.qmp);
    const events: Promise<Alert[]>[] = [];
    try {
      const k = Kernel.bootstrap(m.memory, { live: true });
      const engine = new Engine<Kernel>({ vm: GUEST, machine: m, policies: [nicAccessPolicy], kernel: k });
      // A first sweep takes ownership of what is already there (promiscuous, MAC changed).
      await engine.runOnce();
      const pump = (async () => {
        for await (const e of m.events!)
          if (e.name === 'NIC_RX_FILTER_CHANGED') events.push(engine.handleEvent(e));
      })();
      void pump.catch(() => undefined);
      await guestRun(g, 'ip link set eth0 promisc off');
      await waitFor(() => events.length >= 1);
      await Promise.all(events);
      const off = (await Promise.all(events)).flat().filter((a) => a.policy === 'nic-access');
      assert.deepEqual(off, [], 'turning promiscuous mode off raises nothing');
      const seen = events.length;
      await guestRun(g, 'ip link set eth0 promisc on');
      await waitFor(() => events.length > seen);
      const on = (await Promise.all(events.slice(seen))).flat().filter((a) => a.policy === 'nic-access');
      assert.equal(on.length, 1, JSON.stringify(on));
      assert.ok(on[0]!.key.startsWith('promisc:'));
      assert.ok((on[0]!.evidence.promiscuity as number) >= 1, JSON.stringify(on[0]!.evidence));
      // The kernel sets the flag at once; virtio-net tells QEMU from deferred rx-mode work, so the event that
      // woke the policy may come a moment before QEMU's own view turns: that view must follow.
      await waitFor(
        async () => {
          const nics = await m.qmp.execute<{ promiscuous: boolean }[]>('query-rx-filter');
          return nics.some((n) => n.promiscuous);
        },
        15_000,
        "QEMU's rx filter to show the NIC promiscuous",
      );
      // The next sweep does not repeat what the event raised.
      const sweep = (await engine.runOnce()).filter(
        (a) => a.policy === 'nic-access' && a.key.startsWith('promisc:'),
      );
      assert.deepEqual(sweep, []);
    } finally {
      await m.close();
    }
  });
});

async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
  what = 'a NIC_RX_FILTER_CHANGED event',
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
