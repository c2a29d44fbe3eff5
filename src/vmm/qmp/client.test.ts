import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { QmpClient, type QmpEvent } from './client.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vigil-qmp-test-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let counter = 0;

const GREETING = {
  QMP: {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7' },
    capabilities: ['oob'],
  },
};

type Msg = { execute: string; arguments?: Record<string, unknown>; id?: unknown };
/** Return a reply object, 'silent' for no reply, or 'drop' to cut the connection. */
type Handler = (msg: Msg, peer: net.Socket) => Record<string, unknown> | 'silent' | 'drop';

/** A scripted QMP server on a temporary unix socket, speaking the wire protocol byte for byte. */
class FakeQmp {
  readonly path = path.join(dir, `qmp-${++counter}.sock`);
  readonly received: Msg[] = [];
  readonly peers: net.Socket[] = [];
  connections = 0;
  greeting: unknown = GREETING;
  handler: Handler = (msg) => ({ return: {}, id: msg.id });
  #server = net.createServer((peer) => this.#accept(peer));

  listen(): Promise<this> {
    return new Promise((resolve) => this.#server.listen(this.path, () => resolve(this)));
  }

  #accept(peer: net.Socket): void {
    this.connections++;
    this.peers.push(peer);
    peer.on('error', () => undefined);
    if (this.greeting !== null) peer.write(JSON.stringify(this.greeting) + '\r\n');
    let buf = '';
    peer.on('data', (d) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as Msg;
        buf = buf.slice(nl + 1);
        this.received.push(msg);
        const r = this.handler(msg, peer);
        if (r === 'drop') peer.destroy();
        else if (r !== 'silent') peer.write(JSON.stringify(r) + '\r\n');
      }
    });
  }

  event(name: string, data: Record<string, unknown> = {}, seconds = 1795704153, micro = 225581): void {
    const line = JSON.stringify({ timestamp: { seconds, microseconds: micro }, event: name, data }) + '\r\n';
    for (const p of this.peers) if (!p.destroyed) p.write(line);
  }

  dropAll(): void {
    for (const p of this.peers) p.destroy();
  }

  close(): Promise<void> {
    this.dropAll();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

const isVigil = (kind: string, text?: RegExp) => (e: unknown) =>
  e instanceof VigilError && e.kind === kind && (!text || text.test(e.message));

test('greeting, capabilities negotiation, a command with arguments', async () => {
  const srv = await new FakeQmp().listen();
  srv.handler = (msg) =>
    msg.execute === 'qom-get'
      ? { return: '/dev/shm/vm', id: msg.id }
      : msg.execute === 'query-status'
        ? { return: { status: 'running', singlestep: false, running: true }, id: msg.id }
        : { return: {}, id: msg.id };
  const c = await QmpClient.connect(srv.path);
  assert.equal(c.greeting.version.qemu.major, 7);
  assert.deepEqual(c.greeting.capabilities, ['oob']);
  assert.equal(srv.received[0].execute, 'qmp_capabilities');
  assert.equal(await c.qomGet('/objects/mem', 'mem-path'), '/dev/shm/vm');
  assert.deepEqual(srv.received[1].arguments, { path: '/objects/mem', property: 'mem-path' });
  assert.equal(typeof srv.received[1].id, 'string');
  assert.notEqual(srv.received[1].id, srv.received[0].id);
  assert.deepEqual(await c.queryStatus(), { status: 'running', singlestep: false, running: true });
  assert.equal(c.state, 'connected');
  await c.close();
  assert.equal(c.state, 'closed');
  await assert.rejects(c.stop(), isVigil('state'));
  await srv.close();
});

test('an error response becomes VigilError protocol "<class>: <desc>"', async () => {
  const srv = await new FakeQmp().listen();
  srv.handler = (msg) =>
    msg.execute === 'bogus'
      ? { error: { class: 'CommandNotFound', desc: 'The command bogus has not been found' }, id: msg.id }
      : { return: {}, id: msg.id };
  const c = await QmpClient.connect(srv.path);
  await assert.rejects(
    c.execute('bogus'),
    isVigil('protocol', /^CommandNotFound: The command bogus has not been found$/),
  );
  // The connection stays usable after an error.
  await c.cont();
  await c.close();
  await srv.close();
});

test('replies are matched by id, even out of order; id-less errors go to the oldest command', async () => {
  const srv = await new FakeQmp().listen();
  const held: Msg[] = [];
  srv.handler = (msg, peer) => {
    if (msg.execute === 'first') {
      held.push(msg);
      return 'silent';
    }
    if (msg.execute === 'second') {
      peer.write(JSON.stringify({ return: 'two', id: msg.id }) + '\n');
      return { return: 'one', id: held[0].id };
    }
    if (msg.execute === 'garbled') return { error: { class: 'GenericError', desc: 'JSON parse error' } };
    return { return: {}, id: msg.id };
  };
  const c = await QmpClient.connect(srv.path);
  const first = c.execute('first');
  const second = c.execute('second');
  assert.deepEqual(await Promise.all([first, second]), ['one', 'two']);
  await assert.rejects(c.execute('garbled'), isVigil('protocol', /GenericError: JSON parse error/));
  await c.close();
  await srv.close();
});

test('events arrive through events() and onEvent with QEMU timestamps', async () => {
  const srv = await new FakeQmp().listen();
  const c = await QmpClient.connect(srv.path);
  const stream = c.events();
  const heard: QmpEvent[] = [];
  const off = c.onEvent((e) => heard.push(e));
  srv.event('NIC_RX_FILTER_CHANGED', {
    name: 'n0',
    path: '/machine/peripheral-anon/device[0]/virtio-backend',
  });
  const first = await stream.next();
  assert.equal(first.done, false);
  const ev = first.value as QmpEvent;
  assert.equal(ev.event, 'NIC_RX_FILTER_CHANGED');
  assert.equal(ev.data.name, 'n0');
  assert.equal(ev.time, 1795704153 * 1000 + 225);
  assert.equal(heard.length, 1);
  off();
  srv.event('STOP');
  assert.equal((await stream.next()).value?.event, 'STOP');
  assert.equal(heard.length, 1, 'unsubscribed listener hears nothing');
  await c.close();
  assert.deepEqual(await stream.next(), { value: undefined, done: true });
  await srv.close();
});

test('a slow consumer loses the oldest events and the loss is counted', async () => {
  const srv = await new FakeQmp().listen();
  const c = await QmpClient.connect(srv.path);
  const stream = c.events({ bufferSize: 3 });
  for (let i = 0; i < 10; i++) srv.event('TICK', { i });
  await c.waitForEvent('TICK', { filter: (e) => e.data.i === 9 });
  assert.equal(stream.dropped, 7);
  assert.equal(c.droppedEvents, 7);
  const got = [];
  for (let i = 0; i < 3; i++) got.push((await stream.next()).value?.data.i);
  assert.deepEqual(got, [7, 8, 9]);
  await c.close();
  await srv.close();
});

test('a command without reply times out; its late reply is discarded', async () => {
  const srv = await new FakeQmp().listen();
  let late: Msg | undefined;
  srv.handler = (msg) => {
    if (msg.execute === 'slow') {
      late = msg;
      return 'silent';
    }
    return { return: msg.execute, id: msg.id };
  };
  const c = await QmpClient.connect(srv.path);
  const t0 = Date.now();
  await assert.rejects(c.execute('slow', undefined, { timeoutMs: 50 }), isVigil('timeout', /slow/));
  assert.ok(Date.now() - t0 >= 45);
  srv.peers[0].write(JSON.stringify({ return: 'stale', id: late!.id }) + '\n');
  assert.equal(await c.execute('next'), 'next');
  await c.close();
  await srv.close();
});

test('JSON split into single bytes and several objects per write parse correctly', async () => {
  const srv = await new FakeQmp().listen();
  srv.handler = (msg, peer) => {
    const text = JSON.stringify({ return: { big: 'x'.repeat(5000), é: '€' }, id: msg.id }) + '\r\n';
    const ev = JSON.stringify({ event: 'RESUME', timestamp: { seconds: 1, microseconds: 0 } }) + '\n';
    if (msg.execute === 'bytes') {
      const bytes = Buffer.from(text);
      for (let i = 0; i < bytes.length; i++) peer.write(bytes.subarray(i, i + 1));
      return 'silent';
    }
    if (msg.execute === 'batch') {
      peer.write(ev + text + ev);
      return 'silent';
    }
    return { return: {}, id: msg.id };
  };
  const c = await QmpClient.connect(srv.path);
  const stream = c.events();
  const r = await c.execute<{ big: string; é: string }>('bytes');
  assert.equal(r.big.length, 5000);
  assert.equal(r.é, '€');
  assert.equal((await c.execute<{ big: string }>('batch')).big.length, 5000);
  assert.equal((await stream.next()).value?.event, 'RESUME');
  assert.equal((await stream.next()).value?.event, 'RESUME');
  await c.close();
  await srv.close();
});

test('a line over the cap drops the connection with a bound error', async () => {
  const srv = await new FakeQmp().listen();
  srv.handler = (msg, peer) => {
    if (msg.execute === 'huge') {
      peer.write('{"return": "' + 'y'.repeat(4096));
      return 'silent';
    }
    return { return: {}, id: msg.id };
  };
  const c = await QmpClient.connect(srv.path, { maxLineBytes: 1024 });
  await assert.rejects(c.execute('huge'), isVigil('bound'));
  assert.equal(c.state, 'disconnected');
  await c.close();
  await srv.close();
});

test('a dropped connection fails commands in flight and event streams', async () => {
  const srv = await new FakeQmp().listen();
  srv.handler = (msg) => (msg.execute === 'die' ? 'drop' : { return: {}, id: msg.id });
  const c = await QmpClient.connect(srv.path);
  const stream = c.events();
  const states: string[] = [];
  c.onState((s) => states.push(s));
  await assert.rejects(c.execute('die'), isVigil('io', /closed/));
  assert.equal(c.state, 'disconnected');
  assert.deepEqual(states, ['disconnected']);
  await assert.rejects(stream.next(), isVigil('io'));
  await assert.rejects(c.stop(), isVigil('io', /reconnect/));
  // A manual reconnect brings it back.
  await c.reconnect();
  assert.equal(c.state, 'connected');
  await c.stop();
  assert.equal(srv.connections, 2);
  await c.close();
  await srv.close();
});

test('autoReconnect: events resume on the same stream after the server drops us', async () => {
  const srv = await new FakeQmp().listen();
  const c = await QmpClient.connect(srv.path, { autoReconnect: { initialDelayMs: 10, attempts: 20 } });
  const stream = c.events();
  srv.event('BEFORE');
  assert.equal((await stream.next()).value?.event, 'BEFORE');
  const reconnected = new Promise<void>((resolve) => c.onState((s) => s === 'connected' && resolve()));
  srv.dropAll();
  await reconnected;
  assert.equal(srv.connections, 2);
  assert.equal(srv.received.filter((m) => m.execute === 'qmp_capabilities').length, 2);
  srv.event('AFTER');
  assert.equal((await stream.next()).value?.event, 'AFTER');
  await c.cont();
  await c.close();
  await srv.close();
});

test('autoReconnect gives up after its attempts and fails the streams', async () => {
  const srv = await new FakeQmp().listen();
  const c = await QmpClient.connect(srv.path, {
    autoReconnect: { initialDelayMs: 5, maxDelayMs: 10, attempts: 3 },
  });
  const stream = c.events();
  await srv.close();
  await assert.rejects(stream.next(), isVigil('not-found'));
  assert.equal(c.state, 'disconnected');
  await c.close();
});

test('connect errors: missing socket, not a socket, stale socket, silent peer, not QMP', async () => {
  const missing = path.join(dir, 'nope.qmp');
  await assert.rejects(
    QmpClient.connect(missing),
    isVigil('not-found', new RegExp(`^no QMP socket at ${missing}$`)),
  );

  const regular = path.join(dir, 'regular');
  fs.writeFileSync(regular, 'x');
  await assert.rejects(QmpClient.connect(regular), isVigil('usage', /is not a socket/));

  const live = await new FakeQmp().listen();
  const stale = path.join(dir, 'stale.qmp');
  fs.linkSync(live.path, stale);
  await live.close();
  await assert.rejects(QmpClient.connect(stale), isVigil('io', /refused.*stale/));

  const silent = await new FakeQmp().listen();
  silent.greeting = null;
  await assert.rejects(
    QmpClient.connect(silent.path, { connectTimeoutMs: 100 }),
    isVigil('timeout', /no QMP greeting.*one client/),
  );
  await silent.close();

  const other = await new FakeQmp().listen();
  other.greeting = { hello: 'I am not QEMU' };
  await assert.rejects(QmpClient.connect(other.path), isVigil('protocol', /did not greet like a QMP server/));
  await other.close();
});

test('TCP host:port works like a unix path', async () => {
  const server = net.createServer((peer) => {
    peer.write(JSON.stringify(GREETING) + '\n');
    peer.on('data', (d) => {
      for (const line of d.toString().split('\n').filter(Boolean)) {
        const msg = JSON.parse(line) as Msg;
        peer.write(JSON.stringify({ return: msg.execute, id: msg.id }) + '\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  const c = await QmpClient.connect(`127.0.0.1:${port}`);
  assert.equal(c.target.kind, 'tcp');
  assert.equal(await c.execute('query-name'), 'query-name');
  await c.close();
  await new Promise((resolve) => server.close(resolve));
  await assert.rejects(QmpClient.connect(`127.0.0.1:${port}`), isVigil('io', /connection refused/));
});

test('convenience commands send what QEMU expects', async () => {
  const srv = await new FakeQmp().listen();
  srv.handler = (msg, peer) => {
    switch (msg.execute) {
      case 'human-monitor-command':
        return { return: `ran ${String(msg.arguments?.['command-line'])}`, id: msg.id };
      case 'query-rx-filter':
        return {
          return: [{ name: 'virtio-net-pci.0', promiscuous: true, 'main-mac': '52:54:00:12:34:56' }],
          id: msg.id,
        };
      case 'query-cpus-fast':
        return {
          return: [
            { 'cpu-index': 0, 'qom-path': '/machine/unattached/device[0]', 'thread-id': 1, target: 'x86_64' },
          ],
          id: msg.id,
        };
      case 'dump-guest-memory':
        if (msg.arguments?.detach) {
          setTimeout(
            () =>
              peer.write(
                JSON.stringify({ event: 'DUMP_COMPLETED', data: { result: { status: 'completed' } } }) + '\n',
              ),
            20,
          );
        }
        return { return: {}, id: msg.id };
      default:
        return { return: {}, id: msg.id };
    }
  };
  const c = await QmpClient.connect(srv.path);
  assert.equal(await c.humanMonitor('info registers', { cpuIndex: 1 }), 'ran info registers');
  assert.deepEqual(srv.received.at(-1)?.arguments, { 'command-line': 'info registers', 'cpu-index': 1 });
  assert.equal((await c.queryRxFilter())[0].promiscuous, true);
  assert.equal((await c.queryCpusFast())[0]['cpu-index'], 0);
  await c.dumpGuestMemory('relative/core.elf');
  assert.deepEqual(srv.received.at(-1)?.arguments, {
    paging: false,
    protocol: `file:${path.resolve('relative/core.elf')}`,
  });
  await c.dumpGuestMemory('/tmp/x.elf', { detach: true, timeoutMs: 2000 });
  assert.equal(srv.received.at(-1)?.arguments?.detach, true);
  await c.stop();
  await c.cont();
  assert.deepEqual(
    srv.received.slice(-2).map((m) => m.execute),
    ['stop', 'cont'],
  );
  await c.close();
  await srv.close();
});
