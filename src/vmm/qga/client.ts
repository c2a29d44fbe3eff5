// A qemu-guest-agent client: what the guest itself says, through the agent's chardev socket on the host.
// The agent has no greeting and no request ids: the client resynchronises with guest-sync-delimited on
// connecting and after anything that may leave a reply in flight (a timeout, a malformed reply), then sends
// one request at a time and takes the next reply as its answer. An agent that is not running still lets the
// socket accept (QEMU holds it), so every request is bounded in time; everything the agent sends is
// bounded in size, since the agent is the guest's.

import { randomInt } from 'node:crypto';
import type net from 'node:net';
import { isObject, positive, type Json } from '../json-values.js';
import { VigilError, describeSysError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import { describeTarget, openSocket, parseSocketTarget, type SocketTarget } from '../qmp/transport.js';
import type { GuestAgent, GuestExecResult } from '../types.js';
import {
  DEFAULT_READER_LIMITS,
  ReplyReader,
  SYNC_DELIMITER,
  base64Length,
  decodeBase64,
  type ReaderLimits,
  type ReaderOutput,
} from './protocol.js';

export interface QgaClientOptions {
  /** Opening the socket (default 3000 ms). */
  connectTimeoutMs?: number;
  /** The guest-sync-delimited handshake (default 3000 ms): how long a silent agent is waited for. */
  syncTimeoutMs?: number;
  /** Default reply timeout of one request (default 10000 ms). */
  commandTimeoutMs?: number;
}

export interface QgaExecOptions {
  /** Until the program ends (default 30000 ms; checked between polls, each bounded by commandTimeoutMs). */
  timeoutMs?: number;
  /** Bytes kept of stdout, and of stderr (default 1 MiB each); more sets `truncated`. */
  maxOutput?: number;
}

export interface QgaReadOptions {
  /** Largest file accepted (default 16 MiB); a larger one fails with kind 'bound'. */
  maxBytes?: number;
  /** For the whole read (default 30000 ms; checked between reads, each bounded by commandTimeoutMs). */
  timeoutMs?: number;
}

export interface QgaInfo {
  version: string;
  /** Names of the commands the agent has enabled. */
  commands: string[];
}

const DEFAULT_MAX_OUTPUT = 1 << 20;
const MAX_OUTPUT_CAP = 64 << 20;
const DEFAULT_MAX_FILE = 16 << 20;
const MAX_FILE_CAP = 1 << 30;
/** Bytes asked for per guest-file-read. */
const READ_CHUNK = 256 * 1024;
const MAX_ARGS = 4096;
const MAX_COMMANDS = 1024;
/** Replies of small commands: nothing in them needs more. */
const SMALL_REPLY: ReaderLimits = { maxString: 4096, maxStrings: 256 * 1024, maxStructure: 256 * 1024 };

interface Waiter {
  onOutput(o: ReaderOutput): void;
  onClose(e: VigilError): void;
}

interface Connection {
  socket: net.Socket;
  reader: ReplyReader;
  waiter?: Waiter;
  closed?: VigilError;
}

export class QgaClient implements GuestAgent {
  /** The socket as given: a unix path or host:port. */
  readonly address: string;
  readonly #target: SocketTarget;
  readonly #connectTimeoutMs: number;
  readonly #syncTimeoutMs: number;
  readonly #commandTimeoutMs: number;
  #conn: Connection | undefined;
  #synced = false;
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(address: string, options: QgaClientOptions) {
    this.address = address;
    this.#target = parseSocketTarget(address);
    this.#connectTimeoutMs = positive(options.connectTimeoutMs ?? 3000, 'connectTimeoutMs');
    this.#syncTimeoutMs = positive(options.syncTimeoutMs ?? 3000, 'syncTimeoutMs');
    this.#commandTimeoutMs = positive(options.commandTimeoutMs ?? 10_000, 'commandTimeoutMs');
  }

  /** A client that connects and synchronises on its first request (and again after any failure). */
  static create(address: string, options: QgaClientOptions = {}): QgaClient {
    return new QgaClient(address, options);
  }

  /** Connect and synchronise now: fails (kind 'timeout') when no agent answers within syncTimeoutMs. */
  static async connect(address: string, options: QgaClientOptions = {}): Promise<QgaClient> {
    const client = new QgaClient(address, options);
    try {
      await client.#exclusive(() => client.#ready());
    } catch (e) {
      await client.close();
      throw e;
    }
    return client;
  }

  // ---- commands ------------------------------------------------------------------------------------

  /**
   * Run an agent command and return its `return` value. `limits` bounds what is kept of the reply (strings
   * beyond them are cut: `truncated` says so). The agent's errors are VigilError kind 'protocol'.
   */
  async execute<T = unknown>(
    command: string,
    args?: Json,
    options: { timeoutMs?: number; limits?: ReaderLimits } = {},
  ): Promise<T> {
    return (await this.#executeReply(command, args, options)).value as T;
  }

  /** True when the agent answers guest-ping. */
  async ping(options: { timeoutMs?: number } = {}): Promise<void> {
    await this.execute('guest-ping', undefined, { ...options, limits: SMALL_REPLY });
  }

  /** The agent's version and enabled commands (guest-info). */
  async info(): Promise<QgaInfo> {
    const r = await this.execute<unknown>('guest-info', undefined, {
      limits: { maxString: 256, maxStrings: 256 * 1024, maxStructure: 512 * 1024 },
    });
    if (!isObject(r) || typeof r.version !== 'string' || !Array.isArray(r.supported_commands)) {
      throw malformed('guest-info');
    }
    const commands: string[] = [];
    for (const c of r.supported_commands.slice(0, MAX_COMMANDS)) {
      if (isObject(c) && typeof c.name === 'string' && c.enabled === true)
        commands.push(sanitize(c.name, 128));
    }
    return { version: sanitize(r.version, 64), commands };
  }

  async exec(path: string, args: readonly string[], options: QgaExecOptions = {}): Promise<GuestExecResult> {
    if (typeof path !== 'string' || path.length === 0) {
      throw new VigilError('vmm', 'usage', 'guest exec needs a program path');
    }
    if (args.length > MAX_ARGS || !args.every((a) => typeof a === 'string')) {
      throw new VigilError('vmm', 'usage', `guest exec takes at most ${MAX_ARGS} string arguments`);
    }
    const timeoutMs = positive(options.timeoutMs ?? 30_000, 'timeoutMs');
    const maxOutput = bounded(options.maxOutput ?? DEFAULT_MAX_OUTPUT, MAX_OUTPUT_CAP, 'maxOutput');
    const deadline = Date.now() + timeoutMs;
    const started = await this.execute<unknown>(
      'guest-exec',
      { path, arg: [...args], 'capture-output': true },
      { limits: SMALL_REPLY },
    );
    const pid = isObject(started) ? started.pid : undefined;
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) throw malformed('guest-exec');

    // Keep one byte more than asked of each stream, to tell "exactly maxOutput" from "more".
    const keep = base64Length(maxOutput + 1);
    const limits: ReaderLimits = { maxString: keep, maxStrings: 2 * keep + 4096, maxStructure: 64 * 1024 };
    let delay = 2;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VigilError(
          'vmm',
          'timeout',
          `guest program ${sanitize(path, 256)} (guest pid ${pid}) still ran after ${timeoutMs} ms`,
        );
      }
      // Each poll has the whole request timeout: the deadline is the program's, checked between polls.
      const { value, truncated } = await this.#executeReply('guest-exec-status', { pid }, { limits });
      if (!isObject(value) || typeof value.exited !== 'boolean') throw malformed('guest-exec-status');
      if (value.exited) return execResult(value, maxOutput, truncated);
      await sleep(Math.min(delay, Math.max(1, deadline - Date.now())));
      delay = Math.min(delay * 2, 50);
    }
  }

  async readFile(path: string, options: QgaReadOptions = {}): Promise<Buffer> {
    if (typeof path !== 'string' || path.length === 0) {
      throw new VigilError('vmm', 'usage', 'guest readFile needs a path');
    }
    const maxBytes = bounded(options.maxBytes ?? DEFAULT_MAX_FILE, MAX_FILE_CAP, 'maxBytes');
    const timeoutMs = positive(options.timeoutMs ?? 30_000, 'timeoutMs');
    const deadline = Date.now() + timeoutMs;
    const handle = await this.execute<unknown>(
      'guest-file-open',
      { path, mode: 'r' },
      { limits: SMALL_REPLY },
    );
    if (typeof handle !== 'number' || !Number.isSafeInteger(handle)) throw malformed('guest-file-open');
    const parts: Buffer[] = [];
    let total = 0;
    try {
      // Every read but the last brings at least one byte, and at most maxBytes + 1 arrive: bounded.
      for (;;) {
        // One byte past the bound tells a file of exactly maxBytes from a larger one.
        if (Date.now() >= deadline) {
          throw new VigilError(
            'vmm',
            'timeout',
            `reading guest file ${sanitize(path, 256)} took over ${timeoutMs} ms (${total} bytes so far)`,
          );
        }
        const count = Math.min(READ_CHUNK, maxBytes + 1 - total);
        const keep = base64Length(count);
        const r = await this.#executeReply(
          'guest-file-read',
          { handle, count },
          { limits: { maxString: keep, maxStrings: keep + 4096, maxStructure: 64 * 1024 } },
        );
        const v = r.value;
        if (r.truncated || !isObject(v) || typeof v['buf-b64'] !== 'string' || typeof v.eof !== 'boolean') {
          throw malformed('guest-file-read');
        }
        const data = decodeBase64(v['buf-b64']);
        if (!data || v.count !== data.length || data.length > count) throw malformed('guest-file-read');
        total += data.length;
        if (total > maxBytes) {
          throw new VigilError(
            'vmm',
            'bound',
            `guest file ${sanitize(path, 256)} is larger than ${maxBytes} bytes`,
          );
        }
        if (data.length > 0) parts.push(data);
        if (v.eof || data.length === 0) break;
      }
    } finally {
      await this.execute('guest-file-close', { handle }, { limits: SMALL_REPLY }).catch(() => undefined);
    }
    return Buffer.concat(parts, total);
  }

  /** Drop the connection; requests in flight fail. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#drop(new VigilError('vmm', 'state', `qemu-guest-agent client for ${this.address} is closed`));
  }

  // ---- requests ------------------------------------------------------------------------------------

  async #executeReply(
    command: string,
    args: Json | undefined,
    options: { timeoutMs?: number; limits?: ReaderLimits },
  ): Promise<{ value: unknown; truncated: boolean }> {
    const timeoutMs = positive(options.timeoutMs ?? this.#commandTimeoutMs, 'timeoutMs');
    const message = JSON.stringify(
      args === undefined ? { execute: command } : { execute: command, arguments: args },
    );
    return this.#exclusive(async () => {
      const conn = await this.#ready();
      conn.reader.limits = options.limits ?? DEFAULT_READER_LIMITS;
      let reply: ReaderOutput;
      try {
        reply = await this.#next(
          conn,
          timeoutMs,
          command,
          (o) => o.kind !== 'delimiter',
          () => {
            conn.socket.write(message + '\n');
          },
        );
      } catch (e) {
        // A reply may still come: the next request synchronises first.
        this.#synced = false;
        throw e;
      }
      if (reply.kind === 'oversized') {
        throw new VigilError(
          'vmm',
          'bound',
          `qemu-guest-agent's reply to ${command} exceeds ${conn.reader.limits.maxStructure} bytes of structure`,
        );
      }
      if (reply.kind !== 'line') throw malformed(command);
      let msg: unknown;
      try {
        msg = JSON.parse(reply.text);
      } catch (e) {
        this.#synced = false;
        throw new VigilError('vmm', 'malformed', `qemu-guest-agent's reply to ${command} is not JSON`, {
          cause: e,
        });
      }
      if (!isObject(msg)) {
        this.#synced = false;
        throw malformed(command);
      }
      if (isObject(msg.error)) {
        const cls = typeof msg.error.class === 'string' ? msg.error.class : 'GenericError';
        const desc = typeof msg.error.desc === 'string' ? msg.error.desc : 'no description';
        throw new VigilError(
          'vmm',
          'protocol',
          `qemu-guest-agent ${command}: ${sanitize(cls, 100)}: ${sanitize(desc, 500)}`,
        );
      }
      if (!('return' in msg)) {
        this.#synced = false;
        throw malformed(command);
      }
      return { value: msg.return, truncated: reply.truncated };
    });
  }

  /** Run `fn` after every earlier request has finished: one request in flight. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** An open, synchronised connection. */
  async #ready(): Promise<Connection> {
    if (this.#closed) {
      throw new VigilError('vmm', 'state', `qemu-guest-agent client for ${this.address} is closed`);
    }
    let conn = this.#conn;
    if (!conn) {
      const socket = await openSocket(this.#target, 'qemu-guest-agent', this.#connectTimeoutMs);
      if (this.#closed) {
        socket.destroy();
        throw new VigilError('vmm', 'state', `qemu-guest-agent client for ${this.address} is closed`);
      }
      conn = this.#attach(socket);
      this.#synced = false;
    }
    if (!this.#synced) {
      await this.#sync(conn);
      this.#synced = true;
    }
    return conn;
  }

  #attach(socket: net.Socket): Connection {
    const conn: Connection = { socket, reader: new ReplyReader() };
    this.#conn = conn;
    socket.on('data', (chunk: Buffer) => {
      if (conn.closed) return;
      for (const o of conn.reader.push(chunk)) conn.waiter?.onOutput(o);
    });
    let failure: unknown;
    socket.on('error', (e) => {
      failure ??= e;
    });
    socket.on('close', () => {
      const why = failure === undefined ? 'closed by the other side' : describeSysError(failure);
      this.#lose(conn, new VigilError('vmm', 'io', `qemu-guest-agent socket ${this.#where()} ${why}`));
    });
    return conn;
  }

  /**
   * guest-sync-delimited: a 0xFF first flushes whatever partial request a previous client left in the
   * agent's parser (the agent answers it with a parse error), then every byte up to the agent's own 0xFF
   * and every reply after it that does not carry our id is stale.
   */
  async #sync(conn: Connection): Promise<void> {
    const id = randomInt(1, 2 ** 31 - 1);
    const request = JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } });
    conn.reader.limits = SMALL_REPLY;
    conn.reader.reset();
    let delimited = false;
    await this.#next(
      conn,
      this.#syncTimeoutMs,
      'guest-sync-delimited',
      (o) => {
        if (o.kind === 'delimiter') {
          delimited = true;
          return false;
        }
        if (!delimited || o.kind !== 'line') return false;
        try {
          const msg: unknown = JSON.parse(o.text);
          return isObject(msg) && msg.return === id;
        } catch {
          return false;
        }
      },
      () => conn.socket.write(Buffer.concat([Buffer.from([SYNC_DELIMITER]), Buffer.from(request + '\n')])),
    );
  }

  /** Send with `send`, then wait for the first reader output `accept` takes. */
  #next(
    conn: Connection,
    timeoutMs: number,
    command: string,
    accept: (o: ReaderOutput) => boolean,
    send: () => void,
  ): Promise<ReaderOutput> {
    if (conn.closed) return Promise.reject(conn.closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.waiter = undefined;
        reject(
          new VigilError(
            'vmm',
            'timeout',
            `qemu-guest-agent did not answer ${command} within ${timeoutMs} ms at ${this.#where()}` +
              (command === 'guest-sync-delimited'
                ? ' (is qemu-ga running in the guest? is another client holding the socket?)'
                : ''),
          ),
        );
      }, timeoutMs);
      conn.waiter = {
        onOutput: (o) => {
          if (!accept(o)) return;
          clearTimeout(timer);
          conn.waiter = undefined;
          resolve(o);
        },
        onClose: (e) => {
          clearTimeout(timer);
          conn.waiter = undefined;
          reject(e);
        },
      };
      send();
    });
  }

  #lose(conn: Connection, error: VigilError): void {
    if (conn.closed) return;
    conn.closed = error;
    conn.socket.destroy();
    if (this.#conn === conn) {
      this.#conn = undefined;
      this.#synced = false;
    }
    conn.waiter?.onClose(error);
  }

  #drop(error: VigilError): void {
    if (this.#conn) this.#lose(this.#conn, error);
  }

  #where(): string {
    return describeTarget(this.#target);
  }
}

function execResult(v: Json, maxOutput: number, cut: boolean): GuestExecResult {
  const stream = (key: string): Buffer => {
    const text = v[key];
    if (text === undefined) return Buffer.alloc(0);
    const data = typeof text === 'string' ? decodeBase64(text) : undefined;
    if (!data) throw malformed('guest-exec-status');
    return data;
  };
  const out = stream('out-data');
  const err = stream('err-data');
  let exitCode: number;
  if (typeof v.exitcode === 'number' && Number.isSafeInteger(v.exitcode)) exitCode = v.exitcode;
  else if (typeof v.signal === 'number' && Number.isSafeInteger(v.signal)) exitCode = 128 + v.signal;
  else throw malformed('guest-exec-status');
  const truncated =
    cut ||
    out.length > maxOutput ||
    err.length > maxOutput ||
    v['out-truncated'] === true ||
    v['err-truncated'] === true;
  return {
    exitCode,
    stdout: out.subarray(0, maxOutput),
    stderr: err.subarray(0, maxOutput),
    truncated,
  };
}

function malformed(command: string): VigilError {
  return new VigilError('vmm', 'malformed', `qemu-guest-agent's reply to ${command} has an unexpected shape`);
}

function bounded(n: number, max: number, name: string): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > max) {
    throw new VigilError('vmm', 'usage', `${name} must be an integer from 0 to ${max}, got ${n}`);
  }
  return n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
