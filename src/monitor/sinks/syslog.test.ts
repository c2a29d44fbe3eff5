import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Alert } from '../../policy/types.js';
import { SyslogSink } from './syslog.js';
import { escapeParamValue, formatSyslog, frameSyslog, SYSLOG_SEVERITY } from './syslog-format.js';
import { loadUnixDgram, type UnixDgramModule } from './syslog-transport.js';
import { makeAlert, parseRfc5424, tempDir, waitFor } from './test-support.js';

const FMT = {
  facility: 10,
  hostname: 'hv1',
  procId: '99',
  sdId: 'vigil@32473',
  evidence: false,
  maxBytes: 8192,
};

/** Split an octet-counted stream (RFC 6587 §3.4.1) into messages; returns the unconsumed rest. */
function deframe(buf: Buffer, out: string[]): Buffer {
  for (;;) {
    const sp = buf.indexOf(0x20);
    if (sp < 0) return buf;
    const len = Number(buf.subarray(0, sp).toString('ascii'));
    assert.ok(Number.isInteger(len) && len > 0, `bad frame length ${buf.subarray(0, sp).toString()}`);
    if (buf.length < sp + 1 + len) return buf;
    out.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
    buf = buf.subarray(sp + 1 + len);
  }
}

function checkAlert(text: string, alert: Alert, facility = 10): void {
  const m = parseRfc5424(text);
  assert.equal(m.version, 1);
  assert.equal(m.facility, facility);
  assert.equal(m.severity, SYSLOG_SEVERITY[alert.severity]);
  assert.equal(m.timestamp, alert.time);
  assert.equal(m.appName, 'vigil');
  assert.equal(m.procId, String(process.pid));
  assert.equal(m.msgId, alert.policy);
  assert.equal(m.sd.length, 1);
  assert.equal(m.sd[0]!.id, 'vigil@32473');
  assert.deepEqual(m.sd[0]!.params, {
    id: alert.id,
    vm: alert.vm,
    policy: alert.policy,
    severity: alert.severity,
    technique: alert.technique,
  });
  assert.equal(m.msg, alert.summary);
}

test('RFC 5424 message: header, PRI, SD escaping, MSG', () => {
  const alert = makeAlert({
    vm: 'we"b]0\\1',
    summary: 'ünïcode summary',
    technique: undefined,
    severity: 'critical',
  });
  const text = formatSyslog(alert, FMT).toString('utf8');
  assert.ok(
    text.startsWith(
      `<82>1 2026-11-26T14:00:00.123Z hv1 vigil 99 raw-socket [vigil@32473 id="${alert.id}" vm="we\\"b\\]0\\\\1"`,
    ),
  );
  const m = parseRfc5424(text);
  assert.equal(m.pri, 10 * 8 + 2);
  assert.equal(m.sd[0]!.params.vm, 'we"b]0\\1');
  assert.equal(m.sd[0]!.params.technique, undefined);
  assert.equal(m.msg, 'ünïcode summary');
  assert.ok(text.includes(' \ufeffünïcode'), 'UTF-8 MSG starts with a BOM');
  assert.ok(!formatSyslog(makeAlert(), FMT).includes('\ufeff'), 'ASCII MSG has none');
});

test('guest text cannot forge a second message or SD element', () => {
  const alert = makeAlert({ summary: 'x\n<14>1 - fake', vm: 'a"] [evil@1 x="y', policy: 'bad id\n' });
  const text = formatSyslog(alert, FMT).toString('utf8');
  assert.doesNotMatch(text, /\n/);
  const m = parseRfc5424(text);
  assert.equal(m.sd.length, 1);
  assert.equal(m.sd[0]!.params.vm, 'a"] [evil@1 x="y');
  assert.equal(m.msgId, 'bad_id_');
  assert.equal(m.msg, 'x\\x0a<14>1 - fake');
  // The sanitiser makes NUL visible as \x00; that backslash is then escaped like any other.
  assert.equal(escapeParamValue('\x00]'), '\\\\x00\\]');
});

test('evidence as JSON after the summary, omitted when it does not fit', () => {
  const alert = makeAlert({ evidence: { pid: 42, addr: 0xffffffff81000000n } });
  const m = parseRfc5424(formatSyslog(alert, { ...FMT, evidence: true }).toString());
  assert.equal(m.msg, 'raw socket opened by nc {"pid":42,"addr":"0xffffffff81000000"}');
  const big = makeAlert({ evidence: { blob: 'z'.repeat(5000) } });
  const small = formatSyslog(big, { ...FMT, evidence: true, maxBytes: 1024 });
  assert.ok(small.length <= 1024);
  assert.match(
    parseRfc5424(small.toString()).msg,
    /^raw socket opened by nc \[evidence omitted: \d+ bytes\]$/,
  );
  const huge = formatSyslog(makeAlert({ summary: 'é'.repeat(3000) }), { ...FMT, maxBytes: 1000 });
  assert.ok(huge.length <= 1000);
  assert.doesNotMatch(huge.toString('utf8'), /\ufffd/, 'cut on a character boundary');
});

test('framing: octet-counting and LF', () => {
  const msg = Buffer.from('<14>1 - - - - - - hé');
  assert.equal(frameSyslog(msg, 'octet-counting').toString(), `${msg.length} <14>1 - - - - - - hé`);
  assert.equal(frameSyslog(msg, 'lf').toString(), '<14>1 - - - - - - hé\n');
});

test('UDP: one datagram per alert, parsed by a receiver', async (t) => {
  const server = dgram.createSocket('udp4');
  const got: string[] = [];
  server.on('message', (m) => got.push(m.toString('utf8')));
  await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
  t.after(() => server.close());
  const sink = await SyslogSink.create(
    { type: 'syslog', transport: 'udp', host: '127.0.0.1', port: server.address().port, facility: 'local0' },
    { hostname: 'hv1' },
  );
  const alerts = [makeAlert(), makeAlert({ severity: 'info', policy: 'modules', technique: 'T1547.006' })];
  for (const a of alerts) await sink.write(a);
  assert.ok(await waitFor(() => got.length === 2));
  await sink.close();
  got.forEach((text, i) => checkAlert(text, alerts[i]!, 16));
  assert.equal(parseRfc5424(got[0]!).hostname, 'hv1');
});

async function tcpServer(
  port = 0,
): Promise<{ server: net.Server; port: number; got: string[]; sockets: net.Socket[] }> {
  const got: string[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    let rest: Buffer = Buffer.alloc(0);
    s.on('data', (d) => (rest = deframe(Buffer.concat([rest, d]), got)));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { server, port: (server.address() as net.AddressInfo).port, got, sockets };
}

const closeServer = (s: net.Server, sockets: net.Socket[]) =>
  new Promise<void>((r) => {
    for (const c of sockets) c.destroy();
    s.close(() => r());
  });

test('TCP: octet-counted frames, default facility authpriv', async (t) => {
  const srv = await tcpServer();
  t.after(() => closeServer(srv.server, srv.sockets));
  const sink = await SyslogSink.create({
    type: 'syslog',
    transport: 'tcp',
    host: '127.0.0.1',
    port: srv.port,
  });
  const alerts = Array.from({ length: 50 }, (_, i) => makeAlert({ summary: `alert ${i} ${'é'.repeat(i)}` }));
  for (const a of alerts) await sink.write(a);
  assert.ok(await waitFor(() => srv.got.length === 50));
  await sink.close();
  srv.got.forEach((text, i) => checkAlert(text, alerts[i]!));
});

test('TCP: queues while the receiver is down, reconnects, then delivers in order', async (t) => {
  // Find a free port, then leave it closed.
  const probe = await tcpServer();
  const port = probe.port;
  await closeServer(probe.server, probe.sockets);
  const failures: unknown[] = [];
  let successes = 0;
  const sink = await SyslogSink.create(
    {
      type: 'syslog',
      transport: 'tcp',
      host: '127.0.0.1',
      port,
      reconnectBaseMs: 20,
      reconnectMaxMs: 100,
      maxQueue: 10,
    },
    { reporter: { failure: (e) => failures.push(e), success: () => successes++ } },
  );
  const alerts = Array.from({ length: 10 }, (_, i) => makeAlert({ summary: `queued ${i}` }));
  for (const a of alerts) await sink.write(a);
  await assert.rejects(sink.write(makeAlert()), /queue full/);
  assert.ok(await waitFor(() => failures.length >= 2), 'connection failures reported');
  assert.equal(sink.status().healthy, false);
  assert.equal(sink.status().pending, 10);
  assert.equal(sink.status().dropped, 1);
  const srv = await tcpServer(port);
  t.after(() => closeServer(srv.server, srv.sockets));
  assert.ok(await waitFor(() => srv.got.length === 10), `delivered after reconnect (${srv.got.length})`);
  assert.deepEqual(
    srv.got.map((m) => parseRfc5424(m).msg),
    alerts.map((a) => a.summary),
  );
  assert.ok(successes >= 1);
  assert.equal(sink.status().healthy, true);
  // The receiver drops the connection: the sink reconnects and keeps delivering.
  for (const s of srv.sockets) s.destroy();
  assert.ok(await waitFor(() => failures.length >= 3));
  await waitFor(() => sink.status().healthy);
  await sink.write(makeAlert({ summary: 'after reset' }));
  assert.ok(await waitFor(() => srv.got.length === 11));
  assert.equal(parseRfc5424(srv.got[10]!).msg, 'after reset');
  await sink.close();
});

test('TCP: close() reports messages it could not deliver', async () => {
  const probe = await tcpServer();
  await closeServer(probe.server, probe.sockets);
  const sink = await SyslogSink.create({
    type: 'syslog',
    transport: 'tcp',
    host: '127.0.0.1',
    port: probe.port,
    reconnectBaseMs: 1000,
    closeTimeoutMs: 100,
  });
  await sink.write(makeAlert());
  await assert.rejects(sink.close(), /1 message\(s\) not delivered/);
});

test('unix stream socket: LF-framed messages', async (t) => {
  const { dir, cleanup } = tempDir('syslog');
  t.after(cleanup);
  const path = join(dir, 'log.sock');
  let data = '';
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    s.on('data', (d) => (data += d.toString('utf8')));
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => closeServer(server, sockets));
  const sink = await SyslogSink.create({ type: 'syslog', transport: 'unix', socketType: 'stream', path });
  const alerts = [makeAlert(), makeAlert({ summary: 'second' })];
  for (const a of alerts) await sink.write(a);
  assert.ok(await waitFor(() => data.split('\n').length === 3));
  await sink.close();
  const lines = data.split('\n');
  assert.equal(lines[2], '');
  lines.slice(0, 2).forEach((l, i) => checkAlert(l, alerts[i]!));
});

function unixDgram(): UnixDgramModule | undefined {
  try {
    return loadUnixDgram();
  } catch {
    return undefined;
  }
}

test(
  'unix datagram socket (/dev/log style)',
  { skip: unixDgram() ? false : 'optional package unix-dgram not installed' },
  async (t) => {
    const mod = unixDgram()!;
    const { dir, cleanup } = tempDir('syslog');
    t.after(cleanup);
    const path = join(dir, 'dev-log');
    const got: string[] = [];
    const server = mod.createSocket('unix_dgram', (m) => got.push(m.toString('utf8')));
    server.bind(path);
    t.after(() => server.close());
    const sink = await SyslogSink.create({ type: 'syslog', transport: 'unix', path, evidence: true });
    const alerts = [makeAlert(), makeAlert({ severity: 'low' })];
    for (const a of alerts) await sink.write(a);
    assert.ok(await waitFor(() => got.length === 2));
    await sink.close();
    got.forEach((text, i) => {
      const m = parseRfc5424(text);
      assert.equal(m.severity, SYSLOG_SEVERITY[alerts[i]!.severity]);
      assert.equal(m.sd[0]!.params.id, alerts[i]!.id);
      assert.equal(m.msg, 'raw socket opened by nc {"pid":42,"comm":"nc","inode":1234}');
    });
    // No receiver: the write fails (and says so) instead of vanishing.
    const orphan = await SyslogSink.create({ type: 'syslog', transport: 'unix', path: join(dir, 'nobody') });
    await assert.rejects(orphan.write(makeAlert()), /send to .* failed/);
    await orphan.close();
  },
);

test(
  'unix datagram without the optional package explains what to do',
  { skip: unixDgram() ? 'unix-dgram is installed' : false },
  async () => {
    await assert.rejects(SyslogSink.create({ type: 'syslog', transport: 'unix' }), /unix-dgram/);
  },
);
