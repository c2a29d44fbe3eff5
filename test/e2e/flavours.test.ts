// The walkers on another kernel flavour: Debian's linux-image-cloud-amd64 (another config, other struct
// layouts, other built-ins) must need nothing but what vigil finds in guest memory. Every expectation comes
// from the guest's own /proc, /sys and uname: nothing here names a kernel version.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import { runVigil, vigilJson } from '../support/cli.js';
import { guestRun, parseVigilPs, sharedGuest, type GuestProcess } from '../support/guest.js';

const GUEST = 'vigil-test-cloud';

interface PsRow {
  pid: number;
  ppid: number | null;
  comm: string;
  name: string;
  uid: number | null;
  flags: string;
}
interface ModuleRow {
  name: string;
  size: number;
}
interface DeviceRow {
  name: string;
  mac?: string;
}
interface KernelReport {
  release: string;
  pagingLevels: number;
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

/** PF_WQ_WORKER: /proc names a workqueue worker after its latest work ("comm+desc"), which changes. */
const PF_WQ_WORKER = 0x20n;

function comparableName(r: PsRow, truth: readonly string[]): string {
  if ((BigInt(r.flags) & PF_WQ_WORKER) === 0n || truth.includes(r.name)) return r.name;
  return truth.find((t) => t.startsWith(r.comm) && /^[+-]/.test(t.slice(r.comm.length))) ?? r.name;
}

const key = (p: { pid: number; ppid: number | null; uid: number | null }, comm: string) =>
  JSON.stringify([p.pid, comm, p.ppid, p.uid]);

/** /proc/modules: "name size refcount users state address". */
function procModules(text: string): { name: string; size: number }[] {
  const out: { name: string; size: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\S+) (\d+) -?\d+ \S+ (?:Live|Loading|Unloading) 0x[0-9a-f]+/.exec(line.trim());
    if (m) out.push({ name: m[1]!, size: Number(m[2]) });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

describe('the walkers on linux-image-cloud-amd64', { timeout: 900_000 }, () => {
  let guest: GuestState;

  before(async () => {
    guest = await sharedGuest(GUEST, { flavour: 'cloud-amd64' });
    assert.equal(guest.flavour, 'cloud-amd64');
  });
  after(async () => {
    await stopGuest(GUEST);
  });

  it('vigil ps --json: the processes /proc shows, with their pid, name, parent and uid', async () => {
    // The console's reads and vigil's are not atomic: /proc before and after, and vigil held to every
    // process present in both; anything else vigil shows must have come or gone in between.
    const beforeView = await consoleView(guest);
    const rows = await vigilJson<PsRow[]>(['ps', '--qmp', guest.qmp]);
    const afterView = await consoleView(guest);
    const mine = new Map(rows.map((r) => [r.pid, r]));
    const problems: string[] = [];
    let compared = 0;
    for (const [pid, b] of beforeView.procs) {
      const a = afterView.procs.get(pid);
      if (!a) continue;
      const r = mine.get(pid);
      const truth = [key(b, b.comm), key(a, a.comm)];
      if (!r) problems.push(`missing ${truth[0]}`);
      else if (!truth.includes(key(r, comparableName(r, [b.comm, a.comm])))) {
        problems.push(`vigil ${key(r, r.name)} vs /proc ${truth.join(' / ')}`);
      } else compared++;
    }
    for (const r of rows) {
      if (beforeView.procs.has(r.pid) || afterView.procs.has(r.pid)) continue;
      if (r.pid < beforeView.self) problems.push(`vigil shows ${key(r, r.name)}, which /proc never showed`);
    }
    assert.deepEqual(problems, []);
    assert.ok(compared >= 20, `only ${compared} processes compared`);
    assert.ok(rows.some((r) => r.pid === 1 && r.uid === 0));
    assert.ok(
      rows.some((r) => r.name === 'vigil-user-idle' && r.uid === 1000),
      'the uid-1000 process',
    );
  });

  it('vigil modules --json: the names and sizes of /proc/modules', async () => {
    const truth = procModules(await guestRun(guest, 'cat /proc/modules'));
    const mine = await vigilJson<ModuleRow[]>(['modules', '--qmp', guest.qmp]);
    assert.deepEqual(
      mine.map((m) => ({ name: m.name, size: m.size })).sort((a, b) => a.name.localeCompare(b.name)),
      truth,
    );
    // The lab's init loads virtio_net when the flavour builds it as a module: then there is a list to walk.
    const files = await guestRun(guest, 'ls /modules 2>/dev/null; true');
    if (/virtio_net\.ko/.test(files)) assert.ok(truth.some((m) => m.name === 'virtio_net'));
  });

  it('vigil netdev --json: eth0 with the MAC of /sys/class/net/eth0/address', async () => {
    const mac = (await guestRun(guest, 'cat /sys/class/net/eth0/address')).trim();
    assert.match(mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    const devs = await vigilJson<DeviceRow[]>(['netdev', '--qmp', guest.qmp]);
    const eth0 = devs.find((d) => d.name === 'eth0');
    assert.ok(eth0, `no eth0 among ${devs.map((d) => d.name).join(', ')}`);
    assert.equal(eth0.mac, mac);
  });

  it('vigil kernel --json: the release uname -r prints', async () => {
    const release = (await guestRun(guest, 'uname -r')).trim();
    assert.match(release, /cloud-amd64$/, 'the guest runs the cloud flavour');
    const k = await vigilJson<KernelReport>(['kernel', '--qmp', guest.qmp]);
    assert.equal(k.release, release);
    assert.equal(k.pagingLevels, guest.paging);
    const human = await runVigil(['kernel', '--qmp', guest.qmp]);
    assert.equal(human.code, 0, human.stderr);
  });
});
