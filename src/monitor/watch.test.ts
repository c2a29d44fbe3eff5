import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Kernel } from '../os/linux/kernel.js';
import { MemoryBaselineStore } from '../policy/baseline.js';
import { definePolicy } from '../policy/policy.js';
import { VigilError } from '../util/errors.js';
import { parseWatchConfig } from './config.js';
import { Watcher } from './watch.js';
import { fakeConn, fakeKernel, waitFor, type FakeConn } from './watch-testkit.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vigil-watch-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Raises one finding per VM while the kernel is up. */
const probe = definePolicy<Kernel>({
  id: 'probe',
  title: 'probe',
  description: 'always finds one thing',
  severity: 'high',
  technique: 'T1040',
  requires: ['kernel'],
  defaultIntervalMs: 100,
  poll: () => [{ key: 'thing', severity: 'high', summary: 'a thing', evidence: { n: 1 } }],
});

function env() {
  const e = {
    stamps: new Map<string, string | undefined>(),
    conns: [] as FakeConn[],
    kernels: 0,
  };
  const deps = {
    async connect(spec: { qmp: string }) {
      if (e.stamps.get(spec.qmp) === undefined && !spec.qmp.startsWith(dir)) {
        throw new VigilError('vmm', 'io', 'refused');
      }
      const c = fakeConn();
      e.conns.push(c);
      return c;
    },
    async bootstrap() {
      return { ok: true as const, kernel: fakeKernel(++e.kernels), ms: 2 };
    },
    socketStamp: (p: string) => (p.startsWith(dir) ? 'disc' : e.stamps.get(p)),
    now: () => Date.now(),
  };
  return { e, deps };
}

async function scrape(url: string, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(url + path);
  return { status: r.status, body: await r.text() };
}

function jsonl(path: string): { vigil: { vm: string; policy: string; key: string; id: string } }[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

test('watches VMs into the sinks, counts them in metrics, reports a lost VM', async () => {
  const { e, deps } = env();
  e.stamps.set('/run/vigil/a.qmp', '1');
  e.stamps.set('/run/vigil/b.qmp', '1');
  const alerts = join(dir, 'alerts.jsonl');
  const config = parseWatchConfig(
    {
      targets: [{ qmp: '/run/vigil/a.qmp' }, { name: 'bee', qmp: '/run/vigil/b.qmp' }],
      sinks: [{ type: 'jsonl', path: alerts, fsync: false }],
      metrics: { port: 0 },
      retry: { reconnect: { initialMs: 20, maxMs: 50 }, bootstrap: { initialMs: 10, maxMs: 20 } },
    },
    { policies: [probe] },
  );
  const log: string[] = [];
  const w = await Watcher.start({
    config,
    policies: [probe],
    deps,
    log: (l) => log.push(l),
    baselines: new MemoryBaselineStore(),
  });
  try {
    await waitFor('both watching', () => w.status().every((s) => s.state === 'watching'));
    await waitFor('an alert per VM', () => {
      try {
        return new Set(jsonl(alerts).map((a) => a.vigil.vm)).size === 2;
      } catch {
        return false;
      }
    });
    const first = jsonl(alerts);
    assert.deepEqual(first.map((a) => [a.vigil.policy, a.vigil.key]).sort(), [
      ['probe', 'thing'],
      ['probe', 'thing'],
    ]);
    assert.ok(w.metricsUrl);
    const m = await scrape(w.metricsUrl!, '/metrics');
    assert.match(m.body, /^vigil_vms\{state="watching"\} 2$/m);
    assert.match(m.body, /^vigil_vms\{state="lost"\} 0$/m);
    assert.match(m.body, /^vigil_sweeps_total\{vm="a",result="ok"\} [1-9]/m);
    assert.match(m.body, /^vigil_alerts_total\{vm="bee",policy="probe",severity="high"\} 1$/m);
    assert.match(m.body, /^vigil_sweep_duration_seconds_count\{vm="a"\} [1-9]/m);
    assert.deepEqual(JSON.parse((await scrape(w.metricsUrl!, '/healthz')).body), {
      ok: true,
      vms: { a: 'watching', bee: 'watching' },
      sinks: { [`jsonl:${alerts}`]: 'ok' },
    });

    // bee's QEMU goes away with its socket.
    e.stamps.set('/run/vigil/b.qmp', undefined);
    e.conns[1]!.qmp.drop();
    await waitFor('bee lost', () => w.status().find((s) => s.name === 'bee')!.state === 'lost');
    await waitFor('lost alert written', () => jsonl(alerts).some((a) => a.vigil.key === 'vm-lost'));
    const lost = jsonl(alerts).find((a) => a.vigil.key === 'vm-lost')!;
    assert.equal(lost.vigil.vm, 'bee');
    assert.equal(lost.vigil.policy, 'vigil-health');
    const h = await scrape(w.metricsUrl!, '/healthz');
    assert.equal(h.status, 503);
    assert.match((await scrape(w.metricsUrl!, '/metrics')).body, /^vigil_vms\{state="lost"\} 1$/m);

    // It comes back; the alert raised again on the new boot has a new id.
    e.stamps.set('/run/vigil/b.qmp', '2');
    await waitFor('bee watching again', () => w.status().find((s) => s.name === 'bee')!.state === 'watching');
    await waitFor(
      'alert after the restart',
      () => jsonl(alerts).filter((a) => a.vigil.vm === 'bee' && a.vigil.key === 'thing').length === 2,
    );
    const ids = jsonl(alerts).map((a) => a.vigil.id);
    assert.equal(new Set(ids).size, ids.length, 'every alert has its own id');
  } finally {
    await w.stop();
  }
  const lines = log.map((l) => l.replace(/^\S+ /, ''));
  assert.ok(lines.includes('vm a: connecting -> bootstrapping (connected (running, RAM via shm))'));
  assert.ok(lines.some((l) => /^vm bee: watching -> lost \(.*closed by the other side\)$/.test(l)));
  assert.ok(lines.includes('vm bee: lost -> connecting (QMP socket is back)'));
  assert.ok(lines.includes('vm a: watching -> stopped (vigil is stopping)'));
  assert.equal(lines.at(-1), 'watch stopped');
  for (const l of log) assert.match(l, /^\d{4}-\d\d-\d\dT\S+Z (watch|vm) /);
});

test('discovered sockets become targets and are dropped when their socket goes', async () => {
  const { e, deps } = env();
  const run = join(dir, 'disc');
  mkdirSync(run, { recursive: true });
  const listen = (p: string) =>
    new Promise<Server>((resolve) => {
      const s = createServer();
      s.listen(p, () => resolve(s));
    });
  const s1 = await listen(join(run, 'web.qmp'));
  const config = parseWatchConfig(
    {
      discovery: { globs: [join(run, '*.qmp')], intervalMs: 500 },
      sinks: [{ type: 'jsonl', path: join(dir, 'disc.jsonl'), fsync: false }],
    },
    { policies: [probe] },
  );
  const log: string[] = [];
  const w = await Watcher.start({ config, policies: [probe], deps, log: (l) => log.push(l) });
  try {
    await waitFor('web watching', () => w.status().some((s) => s.name === 'web' && s.state === 'watching'));
    assert.equal(w.status()[0]!.discovered, true);
    const s2 = await listen(join(run, 'db.qmp'));
    await waitFor('db found', () => w.status().some((s) => s.name === 'db'), 3000);
    await new Promise<void>((r) => s1.close(() => r()));
    await waitFor('web dropped', () => !w.status().some((s) => s.name === 'web'), 3000);
    assert.ok(
      log.some((l) =>
        l.endsWith(`watch ${'web'}: QMP socket ${join(run, 'web.qmp')} is gone; no longer watched`),
      ),
    );
    assert.equal(e.conns[0]!.closed, true);
    await new Promise<void>((r) => s2.close(() => r()));
  } finally {
    await w.stop();
  }
});

test('nothing to watch is a usage error', async () => {
  const config = parseWatchConfig({}, { policies: [] });
  await assert.rejects(
    Watcher.start({ config, policies: [], log: () => undefined }),
    (err: unknown) =>
      err instanceof VigilError && err.kind === 'usage' && /nothing to watch/.test(err.message),
  );
});
