// `vigil watch` end to end, run as a user runs it: one long-lived process watching two lab guests from a
// YAML config, alerts into a JSON-lines file and a webhook. Guest A reboots (a new kernel, new KASLR) and
// guest B's QEMU is killed and started again (a new process, a new RAM file, the same socket path): both
// are watched again without help. Then a sniffer runs in each and the alert reaches both sinks; the
// webhook receiver is down meanwhile and every alert still arrives once it is back, under the same id.
// `kill -9` of vigil leaves the JSON-lines file valid; SIGTERM stops it with exit 0; a bad config is one
// line and exit 2.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { attackImage, runAttack } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import { runVigil } from '../support/cli.js';
import { consoleBack, consoleWrite, sharedGuest } from '../support/guest.js';
import { readJsonl, until, WatchProcess } from '../support/watch.js';

const A = 'vigil-test-watch-a';
const B = 'vigil-test-watch-b';
const say = (s: string) => process.stderr.write(`[watch] ${s}\n`);

/** The webhook receiver: records every delivery; can go down and come back on the same port. */
class Receiver {
  server: Server | undefined;
  port = 0;
  readonly received: { id: string; vm: string; policy: string; key: string; header: string | undefined }[] =
    [];

  async up(): Promise<void> {
    const server = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        const doc = JSON.parse(body) as { vigil: { id: string; vm: string; policy: string; key: string } };
        const header = req.headers['x-vigil-alert-id'];
        this.received.push({ ...doc.vigil, header: typeof header === 'string' ? header : undefined });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', () => resolve()));
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

describe('vigil watch', { timeout: 900_000 }, () => {
  let image: { kernel: string; initrd: string; kernelRelease: string };
  let ga: GuestState;
  let gb: GuestState;
  let dir: string;
  let configPath: string;
  const receiver = new Receiver();
  const running: WatchProcess[] = [];

  before(async () => {
    image = await attackImage({ progress: (l) => say(l) });
    ga = await sharedGuest(A, image);
    gb = await sharedGuest(B, image);
    dir = mkdtempSync(join(tmpdir(), 'vigil-e2e-watch-'));
    await receiver.up();
    configPath = join(dir, 'watch.yaml');
    writeFileSync(
      configPath,
      `# two lab guests, one detector, both sinks; short intervals keep the test fast
targets:
  - name: ${A}
    qmp: ${ga.qmp}
  - name: ${B}
    qmp: ${gb.qmp}
policies:
  '*': { enabled: false }
  raw-socket: { enabled: true, intervalMs: 1000 }
sinks:
  - { type: jsonl, path: alerts.jsonl }
  - type: webhook
    url: http://127.0.0.1:${receiver.port}/alerts
    spoolDir: spool
    retryBaseMs: 200
    retryMaxMs: 1000
    timeoutMs: 10000
metrics: { port: 0 }
baselineDir: baselines
retry:
  reconnect: { initialMs: 200, maxMs: 1000 }
  bootstrap: { initialMs: 250, maxMs: 1000 }
identityCheckMs: 2000
`,
    );
  });

  after(async () => {
    for (const p of running) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await receiver.down();
    await stopGuest(A).catch(() => undefined);
    await stopGuest(B).catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a malformed config names the key and exits 2 on one line', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `targets:\n  - name: a\n    qmp: /run/vigil/a.qmp\n  - name: b\n`);
    const r = await runVigil(['watch', '--config', bad]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, `vigil: monitor usage: config ${bad}: targets[1].qmp: required\n`);
    const typo = join(dir, 'typo.yaml');
    writeFileSync(typo, `targets:\n  - qmp: /run/vigil/a.qmp\nsink:\n  - { type: stdout }\n`);
    const t = await runVigil(['watch', '--config', typo]);
    assert.equal(t.code, 2);
    assert.match(t.stderr, /^vigil: monitor usage: config \S+: sink: unknown key\n$/);
  });

  it('survives a reboot and a QEMU restart, and every alert reaches both sinks', async () => {
    const jsonl = join(dir, 'alerts.jsonl');
    const w = new WatchProcess(['--config', configPath]);
    running.push(w);
    const [wa, wb] = await Promise.all([
      w.transition(A, 'watching', 0, 120_000),
      w.transition(B, 'watching', 0, 120_000),
    ]);
    say(`attached: ${A} in ${secs(wa.at - w.started)}, ${B} in ${secs(wb.at - w.started)} (${wa.reason})`);
    const metrics = w.metricsUrl();
    assert.match(await (await fetch(`${metrics}/metrics`)).text(), /^vigil_vms\{state="watching"\} 2$/m);

    // A reboots from inside; B's QEMU is killed and started again. In parallel: the machine is slow enough.
    const rebootA = (async () => {
      const t0 = Date.now();
      await consoleWrite(ga, 'reboot -f\n');
      const down = await w.transition(A, 'bootstrapping', t0, 60_000);
      const up = await w.transition(A, 'watching', down.at, 240_000);
      say(
        `${A}: reboot noticed in ${secs(down.at - t0)} (${down.reason}); watching again ${secs(up.at - t0)} after the reboot (${up.reason})`,
      );
      assert.notEqual(up.reason, wa.reason, 'a new kernel (new KASLR offset) was bootstrapped');
      await consoleBack(ga, 240_000);
    })();
    const restartB = (async () => {
      const t0 = Date.now();
      await stopGuest(B);
      const lost = await w.transition(B, 'lost', t0, 60_000);
      say(`${B}: lost ${secs(lost.at - t0)} after its QEMU was stopped (${lost.reason})`);
      const t1 = Date.now();
      gb = await sharedGuest(B, image);
      const ready = Date.now();
      const up = await w.transition(B, 'watching', lost.at, 240_000);
      say(
        `${B}: QEMU started again; watching ${secs(up.at - t1)} after the start ` +
          `(console ready after ${secs(ready - t1)}): ${up.reason}`,
      );
      const path = w.transitions.filter((t) => t.vm === B && t.at >= lost.at && t !== lost).map((t) => t.to);
      assert.deepEqual(path.slice(0, 3), ['connecting', 'bootstrapping', 'watching']);
    })();
    await Promise.all([rebootA, restartB]);

    // The webhook receiver goes down; the sniffers start; alerts are raised meanwhile.
    await receiver.down();
    const sniffA = await runAttack(ga, 'sniffer');
    const sniffB = await runAttack(gb, 'sniffer');
    say(`sniffers: ${A} pid ${sniffA.pid}, ${B} pid ${sniffB.pid}`);
    const tAttack = Date.now();
    const found = await until(
      'a raw-socket alert from each VM in the JSONL file',
      () => {
        const alerts = readJsonl(jsonl).filter((a) => a.vigil.policy === 'raw-socket');
        const a = alerts.find((x) => x.vigil.vm === A);
        const b = alerts.find((x) => x.vigil.vm === B);
        return a && b ? { a, b } : undefined;
      },
      60_000,
    );
    say(`raw-socket alerts in the JSONL file ${secs(Date.now() - tAttack)} after the attacks`);
    for (const [alert, pid] of [
      [found.a, sniffA.pid],
      [found.b, sniffB.pid],
    ] as const) {
      const ev = JSON.stringify(alert.vigil.evidence);
      assert.match(ev, /sniffer/, 'the evidence names the sniffer');
      assert.ok(ev.includes(String(pid)), `the evidence has its pid ${pid}`);
    }
    const health = readJsonl(jsonl).filter((a) => a.vigil.policy === 'vigil-health');
    assert.ok(
      health.some((a) => a.vigil.vm === B && a.vigil.key === 'vm-lost'),
      'B lost: a health alert',
    );
    assert.ok(
      health.some((a) => a.vigil.vm === A && a.vigil.key === 'vm-reset'),
      'A reset: a health alert',
    );
    await new Promise((r) => setTimeout(r, 2_000)); // a few retries against the closed port

    // Back up: every alert of the file arrives, under the same id.
    await receiver.up();
    const tUp = Date.now();
    await until(
      'every alert at the webhook',
      () => {
        const got = new Set(receiver.received.map((r) => r.id));
        return readJsonl(jsonl).every((a) => got.has(a.vigil.id));
      },
      60_000,
    );
    say(
      `all ${readJsonl(jsonl).length} alerts delivered ${secs(Date.now() - tUp)} after the receiver came back`,
    );
    for (const r of receiver.received) assert.equal(r.header, r.id, 'X-Vigil-Alert-Id repeats the body id');
    const sniffIds = [found.a.vigil.id, found.b.vigil.id];
    for (const id of sniffIds) {
      const r = receiver.received.find((x) => x.id === id);
      assert.ok(r, `alert ${id} reached the webhook`);
      assert.equal(r.policy, 'raw-socket');
    }
    const m = await (await fetch(`${metrics}/metrics`)).text();
    assert.match(m, /^vigil_vms\{state="watching"\} 2$/m);
    assert.match(
      m,
      new RegExp(`^vigil_alerts_total\\{vm="${A}",policy="raw-socket",severity="\\w+"\\} [1-9]`, 'm'),
    );
    assert.match(m, new RegExp(`^vigil_events_total\\{vm="${A}",source="qmp"\\} [1-9]`, 'm'));
    assert.match(m, new RegExp(`^vigil_sweeps_total\\{vm="${B}",result="ok"\\} [1-9]`, 'm'));

    // kill -9 mid-run: the file stays valid line by line.
    w.child.kill('SIGKILL');
    await w.exited;
    const afterKill = readJsonl(jsonl);
    assert.ok(afterKill.length >= 4);

    // Started again: attaches to running guests, re-raises the sniffers (a new run), stops on SIGTERM.
    const w2 = new WatchProcess(['--config', configPath]);
    running.push(w2);
    const [a2, b2] = await Promise.all([
      w2.transition(A, 'watching', 0, 60_000),
      w2.transition(B, 'watching', 0, 60_000),
    ]);
    say(`restarted vigil attached in ${secs(a2.at - w2.started)} and ${secs(b2.at - w2.started)}`);
    await until(
      'the sniffer alerts of the second run',
      () => readJsonl(jsonl).filter((a) => a.vigil.policy === 'raw-socket').length >= 4,
      30_000,
    );
    const t0 = Date.now();
    w2.child.kill('SIGTERM');
    const exit = await w2.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    say(`SIGTERM: exit 0 after ${secs(Date.now() - t0)}`);
    assert.match(w2.lines.at(-1)?.text ?? '', / watch stopped$/);
    readJsonl(jsonl);
  });
});
