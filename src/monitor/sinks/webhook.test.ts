import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeAlert, tempDir, waitFor } from './test-support.js';
import { parseRetryAfter, WebhookSink } from './webhook.js';

interface Received {
  headerId: string | undefined;
  idempotencyKey: string | undefined;
  auth: string | undefined;
  contentType: string | undefined;
  bodyId: string;
  vm: string;
}

/** A receiver on loopback; `answer` picks each response's status (and may hold the request). */
async function receiver(answer: (n: number, res: http.ServerResponse) => number | 'hold', port = 0) {
  const got: Received[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const doc = JSON.parse(body);
      const status = answer(n++, res);
      if (status === 'hold') return;
      if (status >= 200 && status < 300) {
        got.push({
          headerId: req.headers['x-vigil-alert-id'] as string | undefined,
          idempotencyKey: req.headers['idempotency-key'] as string | undefined,
          auth: req.headers.authorization,
          contentType: req.headers['content-type'],
          bodyId: doc.event.id,
          vm: doc.host.name,
        });
      }
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const close = () =>
    new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    });
  return { server, got, port: (server.address() as AddressInfo).port, requests: () => n, close };
}

async function freePort(): Promise<number> {
  const r = await receiver(() => 200);
  await r.close();
  return r.port;
}

const spooled = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.json'));
const fast = { retryBaseMs: 20, retryMaxMs: 150, timeoutMs: 2000 };

test('receiver down, then up: every alert arrives with its id, none lost, spool empty', async (t) => {
  const { dir, cleanup } = tempDir('webhook');
  t.after(cleanup);
  const port = await freePort();
  const failures: unknown[] = [];
  const sink = await WebhookSink.open(
    {
      type: 'webhook',
      url: `http://127.0.0.1:${port}/hook`,
      spoolDir: dir,
      headers: { Authorization: 'Bearer t0k', 'Content-Type': 'text/plain', 'X-Vigil-Alert-Id': 'forged' },
      ...fast,
    },
    { reporter: { failure: (e) => failures.push(e), success: () => {} } },
  );
  const alerts = Array.from({ length: 25 }, (_, i) => makeAlert({ vm: `vm${i}` }));
  for (const a of alerts) await sink.write(a);
  // Accepted means spooled: one file per alert, named by id, private.
  assert.deepEqual(spooled(dir).sort(), alerts.map((a) => `${a.id}.json`).sort());
  assert.equal(statSync(join(dir, `${alerts[0]!.id}.json`)).mode & 0o777, 0o600);
  assert.ok(await waitFor(() => failures.length >= 25), 'delivery failures reported while down');
  assert.equal(sink.status().healthy, false);
  assert.equal(sink.status().pending, 25);
  const r = await receiver(() => 200, port);
  t.after(r.close);
  assert.ok(
    await waitFor(() => sink.status().pending === 0, 10_000),
    `all delivered (${sink.status().pending} left)`,
  );
  await sink.close();
  const ids = new Set(r.got.map((g) => g.bodyId));
  assert.deepEqual([...ids].sort(), alerts.map((a) => a.id).sort());
  for (const g of r.got) {
    assert.equal(g.headerId, g.bodyId);
    assert.equal(g.idempotencyKey, g.bodyId);
    assert.equal(g.auth, 'Bearer t0k');
    assert.equal(g.contentType, 'application/json', "vigil's headers win over configured ones");
  }
  assert.deepEqual(spooled(dir), []);
  assert.deepEqual(readdirSync(join(dir, 'failed')), []);
  assert.equal(sink.status().healthy, true);
  t.diagnostic(`${sink.counts.attempts} attempts for 25 alerts; ${r.got.length} deliveries`);
});

test('500s and 429 then 200: retried until accepted', async (t) => {
  const { dir, cleanup } = tempDir('webhook');
  t.after(cleanup);
  const r = await receiver((n, res) => {
    if (n === 0) res.setHeader('retry-after', '0');
    return n < 6 ? (n === 3 ? 429 : 500) : 200;
  });
  t.after(r.close);
  const sink = await WebhookSink.open({
    type: 'webhook',
    url: `http://127.0.0.1:${r.port}/`,
    spoolDir: dir,
    ...fast,
  });
  const alerts = [makeAlert(), makeAlert(), makeAlert()];
  for (const a of alerts) await sink.write(a);
  assert.ok(await waitFor(() => sink.status().pending === 0, 10_000));
  await sink.close();
  assert.deepEqual([...new Set(r.got.map((g) => g.bodyId))].sort(), alerts.map((a) => a.id).sort());
  assert.ok(r.requests() >= 9, `${r.requests()} requests`);
  assert.ok(sink.status().failures >= 6);
  assert.deepEqual(spooled(dir), []);
});

test('a restarted sink resends what the spool holds', async (t) => {
  const { dir, cleanup } = tempDir('webhook');
  t.after(cleanup);
  const port = await freePort();
  const config = {
    type: 'webhook' as const,
    url: `http://127.0.0.1:${port}/`,
    spoolDir: dir,
    ...fast,
    closeTimeoutMs: 500,
  };
  const first = await WebhookSink.open(config);
  const alerts = Array.from({ length: 5 }, () => makeAlert());
  for (const a of alerts) await first.write(a);
  const started = Date.now();
  await first.close();
  assert.ok(Date.now() - started < 1500, 'close is bounded');
  assert.equal(spooled(dir).length, 5);
  // A crash mid-write leaves a temporary file: it is not an accepted alert and is cleaned up.
  writeFileSync(join(dir, '.tmp-crashed-1-abcd'), '{"partial');
  const r = await receiver(() => 200, port);
  t.after(r.close);
  const second = await WebhookSink.open(config);
  assert.equal(second.counts.resent, 5);
  assert.ok(await waitFor(() => second.status().pending === 0, 10_000));
  await second.close();
  assert.deepEqual([...new Set(r.got.map((g) => g.bodyId))].sort(), alerts.map((a) => a.id).sort());
  assert.deepEqual(
    readdirSync(dir).filter((f) => f !== 'failed'),
    [],
  );
});

test('a body the receiver rejects (400) or a damaged spool file goes to failed/, not round and round', async (t) => {
  const { dir, cleanup } = tempDir('webhook');
  t.after(cleanup);
  const r = await receiver(() => 400);
  t.after(r.close);
  writeFileSync(join(dir, 'junk.json'), 'not json');
  const sink = await WebhookSink.open({
    type: 'webhook',
    url: `http://127.0.0.1:${r.port}/`,
    spoolDir: dir,
    ...fast,
  });
  const a = makeAlert();
  await sink.write(a);
  assert.ok(await waitFor(() => sink.status().pending === 0));
  await new Promise((res) => setTimeout(res, 100));
  await sink.close();
  assert.equal(r.requests(), 1, 'sent once, not retried');
  assert.deepEqual(readdirSync(join(dir, 'failed')).sort(), [`${a.id}.json`, 'junk.json'].sort());
  assert.equal(sink.counts.failed, 2);
  assert.equal(sink.status().healthy, false);
});

test('maxRetries moves an alert to failed/ after that many retries', async (t) => {
  const { dir, cleanup } = tempDir('webhook');
  t.after(cleanup);
  const r = await receiver(() => 503);
  t.after(r.close);
  const sink = await WebhookSink.open({
    type: 'webhook',
    url: `http://127.0.0.1:${r.port}/`,
    spoolDir: dir,
    ...fast,
    maxRetries: 2,
  });
  await sink.write(makeAlert());
  assert.ok(await waitFor(() => sink.counts.failed === 1));
  await sink.close();
  assert.equal(r.requests(), 3);
  assert.equal(readdirSync(join(dir, 'failed')).length, 1);
});

test('close() waits a bounded time for a hung receiver and keeps the alert spooled', async (t) => {
  const { dir, cleanup } = tempDir('webhook');
  t.after(cleanup);
  const held: http.ServerResponse[] = [];
  const r = await receiver((_n, res) => {
    held.push(res);
    return 'hold';
  });
  t.after(r.close);
  const sink = await WebhookSink.open({
    type: 'webhook',
    url: `http://127.0.0.1:${r.port}/`,
    spoolDir: dir,
    ...fast,
    timeoutMs: 60_000,
    closeTimeoutMs: 200,
  });
  await sink.write(makeAlert());
  assert.ok(await waitFor(() => held.length === 1));
  const started = Date.now();
  await sink.close();
  const took = Date.now() - started;
  assert.ok(took >= 150 && took < 1500, `close took ${took} ms`);
  assert.equal(spooled(dir).length, 1);
  await assert.rejects(sink.write(makeAlert()), /closed/);
});

test('maxSpool bounds the spool; the refused write says so', async (t) => {
  const { dir, cleanup } = tempDir('webhook');
  t.after(cleanup);
  const port = await freePort();
  const sink = await WebhookSink.open({
    type: 'webhook',
    url: `http://127.0.0.1:${port}/`,
    spoolDir: dir,
    ...fast,
    maxSpool: 2,
  });
  await sink.write(makeAlert());
  await sink.write(makeAlert());
  await assert.rejects(sink.write(makeAlert()), /spool full/);
  assert.equal(sink.status().dropped, 1);
  await sink.close();
  assert.equal(spooled(dir).length, 2);
  assert.ok(existsSync(join(dir, 'failed')));
});

test('Retry-After: seconds or an HTTP date', () => {
  assert.equal(parseRetryAfter('7'), 7000);
  assert.equal(parseRetryAfter(new Date(60_000).toUTCString(), 0), 60_000);
  assert.equal(parseRetryAfter('soon'), undefined);
  assert.equal(parseRetryAfter(null), undefined);
});
