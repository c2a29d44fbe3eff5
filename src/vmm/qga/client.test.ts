import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { QgaClient, type QgaClientOptions } from './client.js';

type Json = Record<string, unknown>;
/** What the fake agent does with one request: a reply object, a raw line, or nothing (silence). */
type Handler = (
  req: Json,
  agent: FakeAgent,
) => Json | string | undefined | Promise<Json | string | undefined>;

const dir = mkdtempSync(join(tmpdir(), 'vigil-qga-'));
/** Every fake agent and client, closed at the end even when a test failed half-way (else node hangs). */
const opened: { close(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(opened.map((o) => o.close().catch(() => undefined)));
  rmSync(dir, { recursive: true, force: true });
});
let serial = 0;

async function connect(path: string, options: QgaClientOptions = {}): Promise<QgaClient> {
  const c = await QgaClient.connect(path, options);
  opened.push(c);
  return c;
}

/**
 * A qemu-guest-agent on a unix socket, speaking like qemu-ga 7.2: a 0xFF from the client gets a JSON parse
 * error back, guest-sync-delimited gets 0xFF + its id, other commands go to `handlers`.
 */
class FakeAgent {
  readonly path = join(dir, `qga-${++serial}.sock`);
  readonly server: net.Server;
  readonly requests: Json[] = [];
  syncs = 0;
  /** Set when a request arrived before the previous one was answered. */
  overlapped = false;
  /** Bytes written to the client on connection, before anything is asked (stale data of an earlier client). */
  greetingJunk = '';
  silent = false;
  #busy = false;
  readonly sockets = new Set<net.Socket>();

  constructor(readonly handlers: Record<string, Handler> = {}) {
    this.server = net.createServer((s) => this.#serve(s));
  }

  listen(): Promise<this> {
    opened.push(this);
    return new Promise((resolve) => this.server.listen(this.path, () => resolve(this)));
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    if (!this.server.listening) return Promise.resolve();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  count(command: string): number {
    return this.requests.filter((r) => r.execute === command).length;
  }

  #serve(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
    if (this.greetingJunk) s.write(this.greetingJunk);
    let buf = Buffer.alloc(0);
    let chain = Promise.resolve();
    s.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const ff = buf.indexOf(0xff);
        const nl = buf.indexOf(0x0a);
        if (ff >= 0 && (nl < 0 || ff < nl)) {
          buf = buf.subarray(ff + 1);
          if (!this.silent)
            s.write('{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n');
          continue;
        }
        if (nl < 0) break;
        const line = buf.subarray(0, nl).toString();
        buf = buf.subarray(nl + 1);
        const req = JSON.parse(line) as Json;
        if (this.#busy) this.overlapped = true;
        this.#busy = true;
        chain = chain.then(() => this.#answer(s, req));
      }
    });
  }

  async #answer(s: net.Socket, req: Json): Promise<void> {
    this.requests.push(req);
    try {
      if (this.silent) return;
      const args = (req.arguments ?? {}) as Json;
      if (req.execute === 'guest-sync-delimited') {
        this.syncs++;
        s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${String(args.id)}}\n`)]));
        return;
      }
      const h = this.handlers[req.execute as string];
      const reply = h
        ? await h(args, this)
        : { error: { class: 'CommandNotFound', desc: 'no such command' } };
      if (reply === undefined) return;
      if (!s.destroyed) s.write((typeof reply === 'string' ? reply : JSON.stringify(reply)) + '\n');
    } finally {
      this.#busy = false;
    }
  }
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejectsWith(p: Promise<unknown>, kind: string, text?: RegExp): Promise<VigilError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof VigilError, `expected a VigilError, got ${String(e)}`);
    assert.equal(e.kind, kind, e.message);
    if (text) assert.match(e.message, text);
    return e;
  }
  assert.fail(`expected a ${kind} error`);
}

describe('qemu-guest-agent client: synchronisation', () => {
  it('drops stale replies and bytes before the 0xFF delimiter, then answers', async () => {
    const agent = await new FakeAgent({ 'guest-ping': () => ({ return: {} }) }).listen();
    // What an earlier client left unread, including a reply with a plausible id and a half line.
    agent.greetingJunk = '{"return": {"pid": 121}}\n{"return": 7}\n{"retu';
    const c = await connect(agent.path);
    await c.ping();
    assert.equal(agent.syncs, 1);
    assert.equal(agent.count('guest-ping'), 1);
    await c.close();
    await agent.close();
  });

  it('fails with a clear timeout when nothing answers (the port is there, qemu-ga is not)', async () => {
    const agent = await new FakeAgent().listen();
    agent.silent = true;
    const t0 = Date.now();
    const e = await rejectsWith(
      connect(agent.path, { syncTimeoutMs: 150 }),
      'timeout',
      /qemu-guest-agent did not answer guest-sync-delimited within 150 ms/,
    );
    assert.equal(e.origin, 'vmm');
    assert.ok(Date.now() - t0 < 2000);
    await agent.close();
  });

  it('fails a request the agent does not answer, then resynchronises and goes on', async () => {
    let first = true;
    const agent = await new FakeAgent({
      'guest-ping': async () => {
        if (!first) return { return: {} };
        first = false;
        await sleep(200); // answered after the client gave up: a stale reply
        return { return: { stale: true } };
      },
      'guest-info': () => ({ return: { version: '7.2.22', supported_commands: [] } }),
    }).listen();
    const c = await connect(agent.path);
    await rejectsWith(c.ping({ timeoutMs: 50 }), 'timeout', /did not answer guest-ping within 50 ms/);
    const info = await c.info();
    assert.equal(info.version, '7.2.22');
    assert.equal(agent.syncs, 2);
    await c.close();
    await agent.close();
  });

  it('reconnects lazily after the agent socket closed', async () => {
    const agent = await new FakeAgent({ 'guest-ping': () => ({ return: {} }) }).listen();
    const c = QgaClient.create(agent.path);
    opened.push(c);
    await c.ping();
    for (const s of agent.sockets) s.destroy();
    await sleep(20);
    await c.ping();
    assert.equal(agent.syncs, 2);
    await c.close();
    await rejectsWith(c.ping(), 'state', /closed/);
    await agent.close();
  });

  it('keeps one request in flight', async () => {
    const agent = await new FakeAgent({
      'guest-ping': async () => {
        await sleep(5);
        return { return: {} };
      },
      'guest-info': () => ({
        return: { version: '1', supported_commands: [{ name: 'guest-ping', enabled: true }] },
      }),
    }).listen();
    const c = await connect(agent.path);
    const results = await Promise.all([c.ping(), c.info(), c.ping(), c.info(), c.ping()]);
    assert.deepEqual(results[1], { version: '1', commands: ['guest-ping'] });
    assert.equal(agent.overlapped, false);
    assert.equal(agent.count('guest-ping'), 3);
    await c.close();
    await agent.close();
  });

  it('turns agent errors into protocol errors with a sanitised description', async () => {
    const agent = await new FakeAgent({
      'guest-ping': () => ({ error: { class: 'GenericError', desc: 'bad\u001b[31m thing' } }),
    }).listen();
    const c = await connect(agent.path);
    const e = await rejectsWith(c.ping(), 'protocol', /guest-ping: GenericError: bad/);
    assert.ok(!e.message.includes('\u001b'));
    await c.close();
    await agent.close();
  });
});

describe('qemu-guest-agent client: exec', () => {
  it('polls guest-exec-status until the program ends and decodes its output', async () => {
    let polls = 0;
    const agent = await new FakeAgent({
      'guest-exec': (a) => {
        assert.deepEqual(a, { path: '/bin/busybox', arg: ['ps'], 'capture-output': true });
        return { return: { pid: 42 } };
      },
      'guest-exec-status': (a) => {
        assert.equal(a.pid, 42);
        if (++polls < 3) return { return: { exited: false } };
        return {
          return: {
            exited: true,
            exitcode: 3,
            'out-data': b64('PID USER\n1 root\n'),
            'err-data': b64('oops\n'),
          },
        };
      },
    }).listen();
    const c = await connect(agent.path);
    const r = await c.exec('/bin/busybox', ['ps']);
    assert.equal(r.exitCode, 3);
    assert.equal(r.stdout.toString(), 'PID USER\n1 root\n');
    assert.equal(r.stderr.toString(), 'oops\n');
    assert.equal(r.truncated, false);
    assert.equal(polls, 3);
    await c.close();
    await agent.close();
  });

  it('reports a program killed by a signal as 128 + signal', async () => {
    const agent = await new FakeAgent({
      'guest-exec': () => ({ return: { pid: 7 } }),
      'guest-exec-status': () => ({ return: { exited: true, signal: 9 } }),
    }).listen();
    const c = await connect(agent.path);
    const r = await c.exec('/bin/sh', ['-c', 'kill -9 $$']);
    assert.equal(r.exitCode, 137);
    assert.equal(r.stdout.length, 0);
    await c.close();
    await agent.close();
  });

  it('bounds oversized output: keeps maxOutput bytes and says it cut', async () => {
    const big = randomBytes(3 << 20); // 4 MiB of base64 in one reply line
    const agent = await new FakeAgent({
      'guest-exec': () => ({ return: { pid: 9 } }),
      'guest-exec-status': () => ({
        return: { exited: true, exitcode: 0, 'out-data': b64(big), 'err-data': b64('e') },
      }),
    }).listen();
    const c = await connect(agent.path);
    const r = await c.exec('/bin/cat', ['/dev/urandom'], { maxOutput: 1000 });
    assert.equal(r.stdout.length, 1000);
    assert.deepEqual(r.stdout, big.subarray(0, 1000));
    assert.equal(r.stderr.toString(), 'e');
    assert.equal(r.truncated, true);
    // The agent's own truncation flag counts too.
    const exact = await c.exec('/bin/true', [], { maxOutput: 3 << 20 });
    assert.equal(exact.stdout.length, 3 << 20);
    assert.equal(exact.truncated, false);
    await c.close();
    await agent.close();
  });

  it('passes on the agent saying it truncated', async () => {
    const agent = await new FakeAgent({
      'guest-exec': () => ({ return: { pid: 9 } }),
      'guest-exec-status': () => ({
        return: { exited: true, exitcode: 0, 'out-data': b64('x'), 'out-truncated': true },
      }),
    }).listen();
    const c = await connect(agent.path);
    assert.equal((await c.exec('/bin/x', [])).truncated, true);
    await c.close();
    await agent.close();
  });

  it('gives up on a program that does not end in time', async () => {
    const agent = await new FakeAgent({
      'guest-exec': () => ({ return: { pid: 5 } }),
      'guest-exec-status': () => ({ return: { exited: false } }),
    }).listen();
    const c = await connect(agent.path);
    await rejectsWith(c.exec('/bin/sleep', ['99'], { timeoutMs: 120 }), 'timeout', /guest pid 5.*120 ms/);
    await c.close();
    await agent.close();
  });

  it('rejects replies of the wrong shape and output that is not base64', async () => {
    const agent = await new FakeAgent({
      'guest-exec': (a) => ({ return: a.path === '/bad-pid' ? { pid: 'one' } : { pid: 3 } }),
      'guest-exec-status': () => ({ return: { exited: true, exitcode: 0, 'out-data': 'not base64!' } }),
    }).listen();
    const c = await connect(agent.path);
    await rejectsWith(c.exec('/bad-pid', []), 'malformed');
    await rejectsWith(c.exec('/bin/x', []), 'malformed');
    await c.close();
    await agent.close();
  });

  it('drops a reply whose structure alone is oversized, and stays usable', async () => {
    const agent = await new FakeAgent({
      'guest-exec': () => `{"return": {"pid": 3, "junk": [${'1,'.repeat(200_000)}1]}}`,
      'guest-ping': () => ({ return: {} }),
    }).listen();
    const c = await connect(agent.path);
    await rejectsWith(c.exec('/bin/x', []), 'bound', /reply to guest-exec exceeds/);
    await c.ping();
    await c.close();
    await agent.close();
  });
});

describe('qemu-guest-agent client: readFile', () => {
  const content = randomBytes(600_000);
  /** An agent that serves `content` at most `piece` bytes per read, whatever the count asked. */
  function fileAgent(piece: number): FakeAgent {
    const open = new Map<number, number>();
    let next = 1000;
    return new FakeAgent({
      'guest-file-open': (a) => {
        if (a.path !== '/proc/modules') return { error: { class: 'GenericError', desc: 'No such file' } };
        assert.equal(a.mode, 'r');
        open.set(next, 0);
        return { return: next++ };
      },
      'guest-file-read': (a) => {
        const h = a.handle as number;
        const at = open.get(h);
        if (at === undefined) return { error: { class: 'GenericError', desc: 'bad handle' } };
        const n = Math.min(piece, a.count as number, content.length - at);
        open.set(h, at + n);
        return {
          return: { count: n, 'buf-b64': b64(content.subarray(at, at + n)), eof: at + n === content.length },
        };
      },
      'guest-file-close': (a) => {
        open.delete(a.handle as number);
        return { return: {} };
      },
    });
  }

  it('reads in chunks until eof and closes the handle', async () => {
    const agent = await fileAgent(70_000).listen();
    const c = await connect(agent.path);
    const data = await c.readFile('/proc/modules');
    assert.deepEqual(data, content);
    assert.equal(agent.count('guest-file-read'), Math.ceil(content.length / 70_000));
    assert.equal(agent.count('guest-file-close'), 1);
    await c.close();
    await agent.close();
  });

  it('fails on a file larger than maxBytes, and still closes the handle', async () => {
    const agent = await fileAgent(1 << 20).listen();
    const c = await connect(agent.path);
    await rejectsWith(
      c.readFile('/proc/modules', { maxBytes: 100_000 }),
      'bound',
      /larger than 100000 bytes/,
    );
    assert.equal(agent.count('guest-file-close'), 1);
    const reads = agent.requests.filter((r) => r.execute === 'guest-file-read');
    assert.ok(reads.every((r) => ((r.arguments as Json).count as number) <= 100_001));
    // Exactly at the bound is fine.
    assert.equal((await c.readFile('/proc/modules', { maxBytes: content.length })).length, content.length);
    await c.close();
    await agent.close();
  });

  it('gives up on a read that trickles past its time, and still closes the handle', async () => {
    const agent = await new FakeAgent({
      'guest-file-open': () => ({ return: 1 }),
      'guest-file-read': async () => {
        await sleep(30);
        return { return: { count: 1, 'buf-b64': b64('x'), eof: false } };
      },
      'guest-file-close': () => ({ return: {} }),
    }).listen();
    const c = await connect(agent.path);
    await rejectsWith(c.readFile('/dev/zero', { timeoutMs: 100 }), 'timeout', /took over 100 ms/);
    assert.equal(agent.count('guest-file-close'), 1);
    await c.close();
    await agent.close();
  });

  it('reports a file the agent cannot open', async () => {
    const agent = await fileAgent(1000).listen();
    const c = await connect(agent.path);
    await rejectsWith(c.readFile('/etc/shadow'), 'protocol', /guest-file-open: GenericError: No such file/);
    await c.close();
    await agent.close();
  });

  it('rejects a read that brings more than it was asked for or lies about its count', async () => {
    const agent = await new FakeAgent({
      'guest-file-open': () => ({ return: 1 }),
      'guest-file-read': (a) =>
        a.count === 1
          ? { return: { count: 3, 'buf-b64': b64('abc'), eof: false } }
          : { return: { count: 5, 'buf-b64': b64('abc'), eof: true } },
      'guest-file-close': () => ({ return: {} }),
    }).listen();
    const c = await connect(agent.path);
    await rejectsWith(c.readFile('/x', { maxBytes: 0 }), 'malformed');
    await rejectsWith(c.readFile('/x'), 'malformed');
    assert.equal(agent.count('guest-file-close'), 2);
    await c.close();
    await agent.close();
  });
});
