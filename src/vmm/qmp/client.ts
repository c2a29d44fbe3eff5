// A QMP client: QEMU's JSON control protocol over a unix (or TCP) socket. One command in flight is the
// common case, but several may be queued; replies are matched by `id` (QEMU answers in order, the id
// guards against a late reply to a command that already timed out). Events go to listeners and to
// bounded async streams that count what they drop.

import net from 'node:net';
import nodePath from 'node:path';
import { isObject, positive, type Json } from '../json-values.js';
import { VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import type { X86Registers } from '../types.js';
import { BoundedQueue } from './bounded-queue.js';
import { DEFAULT_MAX_LINE_BYTES, LineSplitter } from './line-splitter.js';
import { parseInfoRegisters } from './registers.js';
import { describeTarget, openSocket, parseSocketTarget, type SocketTarget } from './transport.js';
import type {
  CpuInfoFast,
  QmpClientOptions,
  QmpConnectionState,
  QmpEvent,
  QmpGreeting,
  QmpStatus,
  ReconnectPolicy,
  RxFilterInfo,
} from './types.js';

export type {
  QmpClientOptions,
  QmpEvent,
  QmpGreeting,
  QmpStatus,
  RxFilterInfo,
  CpuInfoFast,
} from './types.js';

export interface ExecuteOptions {
  /** Reply timeout for this command (default: the client's commandTimeoutMs). */
  timeoutMs?: number;
}

/** A stream of QMP events; `dropped` counts events lost because the consumer fell behind. */
export type QmpEventStream = BoundedQueue<QmpEvent>;

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout;
}

interface Connection {
  socket: net.Socket;
  splitter: LineSplitter;
  greeting?: { resolve: (g: QmpGreeting) => void; reject: (e: unknown) => void };
}

const DEFAULT_RECONNECT: Required<ReconnectPolicy> = { attempts: 10, initialDelayMs: 100, maxDelayMs: 5000 };
const DUMP_TIMEOUT_MS = 10 * 60 * 1000;

export class QmpClient {
  /** The address as given, e.g. "/run/vm.qmp" or "127.0.0.1:4444". */
  readonly address: string;
  readonly target: SocketTarget;
  readonly #connectTimeoutMs: number;
  readonly #commandTimeoutMs: number;
  readonly #eventBufferSize: number;
  readonly #maxLineBytes: number;
  readonly #autoReconnect: Required<ReconnectPolicy> | undefined;

  #conn: Connection | undefined;
  #state: QmpConnectionState = 'connecting';
  #greeting: QmpGreeting | undefined;
  #pending = new Map<string, Pending>();
  #nextId = 1;
  #streams = new Set<QmpEventStream>();
  #listeners = new Set<(e: QmpEvent) => void>();
  #stateListeners = new Set<(s: QmpConnectionState, error?: VigilError) => void>();
  #closers = new Set<(e: VigilError) => void>();
  #dropped = 0;
  #reconnecting: Promise<void> | undefined;

  private constructor(address: string, options: QmpClientOptions) {
    this.address = address;
    this.target = parseSocketTarget(address);
    this.#connectTimeoutMs = positive(options.connectTimeoutMs ?? 5000, 'connectTimeoutMs');
    this.#commandTimeoutMs = positive(options.commandTimeoutMs ?? 30_000, 'commandTimeoutMs');
    this.#eventBufferSize = positive(options.eventBufferSize ?? 1024, 'eventBufferSize');
    this.#maxLineBytes = positive(options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES, 'maxLineBytes');
    const ar = options.autoReconnect;
    this.#autoReconnect = ar ? { ...DEFAULT_RECONNECT, ...(ar === true ? {} : ar) } : undefined;
  }

  /** Connect, read the greeting and leave capabilities-negotiation mode. */
  static async connect(address: string, options: QmpClientOptions = {}): Promise<QmpClient> {
    const client = new QmpClient(address, options);
    await client.#open();
    client.#setState('connected');
    return client;
  }

  get state(): QmpConnectionState {
    return this.#state;
  }

  /** QEMU's greeting from the latest (re)connection. */
  get greeting(): QmpGreeting {
    if (!this.#greeting) throw new VigilError('vmm', 'state', 'QMP greeting not received yet');
    return this.#greeting;
  }

  /** Events dropped by all streams together because their consumers fell behind. */
  get droppedEvents(): number {
    return this.#dropped;
  }

  // ---- commands ------------------------------------------------------------------------------------

  /** Run a QMP command and return its `return` value. */
  async execute<T = unknown>(command: string, args?: Json, options: ExecuteOptions = {}): Promise<T> {
    if (typeof command !== 'string' || command.length === 0) {
      throw new VigilError('vmm', 'usage', 'QMP command name must be a non-empty string');
    }
    if (this.#reconnecting) await this.#reconnecting;
    if (this.#state === 'closed')
      throw new VigilError('vmm', 'state', `QMP client for ${this.address} is closed`);
    if (this.#state !== 'connected' || !this.#conn) {
      throw new VigilError('vmm', 'io', `QMP connection to ${this.address} is down; call reconnect()`);
    }
    return (await this.#send(this.#conn, command, args, options.timeoutMs ?? this.#commandTimeoutMs)) as T;
  }

  /** Pause all vCPUs. */
  async stop(): Promise<void> {
    await this.execute('stop');
  }

  /** Resume all vCPUs. */
  async cont(): Promise<void> {
    await this.execute('cont');
  }

  async queryStatus(): Promise<QmpStatus> {
    const r = await this.execute<unknown>('query-status');
    if (!isObject(r) || typeof r.status !== 'string' || typeof r.running !== 'boolean') {
      throw new VigilError('vmm', 'malformed', 'query-status returned an unexpected shape');
    }
    return r as unknown as QmpStatus;
  }

  /**
   * Write an ELF core of guest-physical memory to `path` (made absolute: QEMU resolves relative paths
   * against its own working directory). Without `detach` QEMU answers when the file is complete and the
   * VM is paused meanwhile; with `detach` we wait for the DUMP_COMPLETED event instead.
   */
  async dumpGuestMemory(path: string, options: { timeoutMs?: number; detach?: boolean } = {}): Promise<void> {
    const file = nodePath.resolve(path);
    const timeoutMs = options.timeoutMs ?? DUMP_TIMEOUT_MS;
    const args: Json = { paging: false, protocol: `file:${file}` };
    if (!options.detach) {
      await this.execute('dump-guest-memory', args, { timeoutMs });
      return;
    }
    const done = this.waitForEvent('DUMP_COMPLETED', { timeoutMs });
    try {
      await this.execute('dump-guest-memory', { ...args, detach: true }, { timeoutMs });
    } catch (e) {
      done.catch(() => undefined);
      throw e;
    }
    const ev = await done;
    if (typeof ev.data.error === 'string') {
      throw new VigilError('vmm', 'io', `dump-guest-memory to ${file} failed: ${sanitize(ev.data.error)}`);
    }
  }

  /** Run an HMP command line (e.g. "info registers") and return its text output. */
  async humanMonitor(
    commandLine: string,
    options: { cpuIndex?: number; timeoutMs?: number } = {},
  ): Promise<string> {
    const args: Json = { 'command-line': commandLine };
    if (options.cpuIndex !== undefined) args['cpu-index'] = options.cpuIndex;
    const r = await this.execute<unknown>('human-monitor-command', args, options);
    if (typeof r !== 'string')
      throw new VigilError('vmm', 'malformed', 'human-monitor-command returned no text');
    return r;
  }

  /** Registers of every vCPU from HMP `info registers -a`, keyed by CPU index. */
  async infoRegisters(options: { timeoutMs?: number } = {}): Promise<Map<number, X86Registers>> {
    return parseInfoRegisters(await this.humanMonitor('info registers -a', options));
  }

  /**
   * RX filter state of NICs (promiscuous mode, MAC); `name` limits it to one NIC. QEMU raises
   * NIC_RX_FILTER_CHANGED once and stays quiet for that NIC until this query runs again: call it after
   * each such event, or later changes go unannounced.
   */
  async queryRxFilter(name?: string): Promise<RxFilterInfo[]> {
    const r = await this.execute<unknown>('query-rx-filter', name === undefined ? undefined : { name });
    if (!Array.isArray(r) || !r.every((x) => isObject(x) && typeof x.name === 'string')) {
      throw new VigilError('vmm', 'malformed', 'query-rx-filter returned an unexpected shape');
    }
    return r as RxFilterInfo[];
  }

  async qomGet<T = unknown>(path: string, property: string): Promise<T> {
    return this.execute<T>('qom-get', { path, property });
  }

  async queryCpusFast(): Promise<CpuInfoFast[]> {
    const r = await this.execute<unknown>('query-cpus-fast');
    if (!Array.isArray(r) || !r.every((x) => isObject(x) && typeof x['cpu-index'] === 'number')) {
      throw new VigilError('vmm', 'malformed', 'query-cpus-fast returned an unexpected shape');
    }
    return r as CpuInfoFast[];
  }

  // ---- events ---------------------------------------------------------------------------------------

  /**
   * A new stream of the events that arrive from now on. Each stream has its own bounded buffer
   * (default `eventBufferSize`): when full, the oldest event is dropped and counted in `stream.dropped`
   * and `client.droppedEvents`. The stream ends on close(); it fails when the connection is lost for good
   * (with autoReconnect it survives reconnections).
   */
  events(options: { bufferSize?: number } = {}): QmpEventStream {
    if (this.#state === 'closed')
      throw new VigilError('vmm', 'state', `QMP client for ${this.address} is closed`);
    const stream: QmpEventStream = new BoundedQueue<QmpEvent>(options.bufferSize ?? this.#eventBufferSize, {
      onDrop: () => this.#dropped++,
      onClose: () => this.#streams.delete(stream),
    });
    this.#streams.add(stream);
    return stream;
  }

  /** Call `listener` for every event (synchronously, in arrival order). Returns an unsubscribe function. */
  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Called on connection state changes (a drop, a reconnection, close). Returns an unsubscribe function. */
  onState(listener: (state: QmpConnectionState, error?: VigilError) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /** Resolve with the next event named `name` (and matching `filter`), or time out. */
  waitForEvent(
    name: string,
    options: { timeoutMs?: number; filter?: (e: QmpEvent) => boolean } = {},
  ): Promise<QmpEvent> {
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    return new Promise((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        unsubscribe();
        this.#closers.delete(onClose);
      };
      const onClose = (e: VigilError): void => {
        finish();
        reject(e);
      };
      const unsubscribe = this.onEvent((e) => {
        if (e.event !== name || (options.filter && !options.filter(e))) return;
        finish();
        resolve(e);
      });
      const timer = setTimeout(() => {
        finish();
        reject(new VigilError('vmm', 'timeout', `no QMP event ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#closers.add(onClose);
    });
  }

  // ---- connection -----------------------------------------------------------------------------------

  /**
   * Drop the current connection (if any) and connect again, retrying with exponential backoff. Commands
   * in flight fail; events() streams continue once connected.
   */
  async reconnect(policy: ReconnectPolicy = {}): Promise<void> {
    if (this.#state === 'closed')
      throw new VigilError('vmm', 'state', `QMP client for ${this.address} is closed`);
    if (this.#reconnecting) return this.#reconnecting;
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn) {
      conn.socket.destroy();
      this.#rejectPending(
        new VigilError('vmm', 'io', `QMP connection to ${this.address} reset by reconnect()`),
      );
    }
    this.#setState('reconnecting');
    this.#reconnecting = this.#reconnectLoop({ ...DEFAULT_RECONNECT, ...policy }).finally(() => {
      this.#reconnecting = undefined;
    });
    try {
      await this.#reconnecting;
    } catch (e) {
      if ((this.#state as QmpConnectionState) !== 'closed') this.#setState('disconnected', e as VigilError);
      throw e;
    }
  }

  /** Close the connection: commands in flight fail, event streams end. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#setState('closed');
    const err = new VigilError('vmm', 'state', `QMP client for ${this.address} closed`);
    this.#rejectPending(err);
    for (const c of [...this.#closers]) c(err);
    for (const s of [...this.#streams]) s.end();
    const conn = this.#conn;
    this.#conn = undefined;
    if (!conn) return;
    conn.greeting?.reject(err);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        conn.socket.destroy();
        resolve();
      }, 1000);
      conn.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      conn.socket.end();
    });
  }

  async #reconnectLoop(policy: Required<ReconnectPolicy>): Promise<void> {
    let last: unknown;
    let delay = policy.initialDelayMs;
    for (let attempt = 1; attempt <= policy.attempts; attempt++) {
      if (this.#state === 'closed') break;
      try {
        await this.#open();
        this.#setState('connected');
        return;
      } catch (e) {
        last = e;
      }
      if (attempt < policy.attempts) {
        await this.#sleep(delay);
        delay = Math.min(delay * 2, policy.maxDelayMs);
      }
    }
    if (this.#state === 'closed')
      throw new VigilError('vmm', 'state', `QMP client for ${this.address} is closed`);
    throw new VigilError(
      'vmm',
      last instanceof VigilError ? last.kind : 'io',
      `QMP reconnect to ${this.address} failed after ${policy.attempts} attempts`,
      { cause: last },
    );
  }

  /** A backoff pause that close() cuts short. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#closers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#closers.add(done);
    });
  }

  /** Open a socket, read the greeting, negotiate capabilities. Leaves #conn set on success. */
  async #open(): Promise<void> {
    const what = 'QMP';
    const deadline = Date.now() + this.#connectTimeoutMs;
    const socket = await openSocket(this.target, what, this.#connectTimeoutMs);
    if (this.#state === 'closed') {
      socket.destroy();
      throw new VigilError('vmm', 'state', `QMP client for ${this.address} is closed`);
    }
    const conn: Connection = { socket, splitter: new LineSplitter(this.#maxLineBytes) };
    this.#conn = conn;
    let failure: VigilError | undefined;
    socket.on('data', (chunk: Buffer) => this.#onData(conn, chunk));
    socket.on('error', (e) => {
      failure ??= new VigilError('vmm', 'io', `QMP connection to ${this.address} failed`, { cause: e });
    });
    socket.on('close', () => this.#onClosed(conn, failure));
    try {
      const greeting = await new Promise<QmpGreeting>((resolve, reject) => {
        const ms = Math.max(1, deadline - Date.now());
        const timer = setTimeout(() => {
          reject(
            new VigilError(
              'vmm',
              'timeout',
              `no QMP greeting from ${describeTarget(this.target)} within ${this.#connectTimeoutMs} ms ` +
                `(another client connected? QEMU serves one client per QMP socket)`,
            ),
          );
        }, ms);
        conn.greeting = {
          resolve: (g) => {
            clearTimeout(timer);
            resolve(g);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
      });
      conn.greeting = undefined;
      await this.#send(conn, 'qmp_capabilities', undefined, Math.max(1, deadline - Date.now()));
      this.#greeting = greeting;
    } catch (e) {
      conn.greeting = undefined;
      if (this.#conn === conn) this.#conn = undefined;
      socket.destroy();
      throw e;
    }
  }

  #send(conn: Connection, command: string, args: Json | undefined, timeoutMs: number): Promise<unknown> {
    const id = `vigil-${this.#nextId++}`;
    const message = JSON.stringify(
      args === undefined ? { execute: command, id } : { execute: command, arguments: args, id },
    );
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // Keep nothing: a late reply carries this id and is discarded for want of a match.
        this.#pending.delete(id);
        reject(new VigilError('vmm', 'timeout', `QMP ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      conn.socket.write(message + '\n');
    });
  }

  #onData(conn: Connection, chunk: Buffer): void {
    if (this.#conn !== conn) return;
    let lines: string[];
    try {
      lines = conn.splitter.push(chunk);
    } catch (e) {
      this.#abort(conn, e as VigilError);
      return;
    }
    for (const line of lines) {
      if (this.#conn !== conn) return;
      if (line.trim().length === 0) continue;
      let msg: unknown;
      try {
        msg = JSON.parse(line);
      } catch (e) {
        this.#abort(
          conn,
          new VigilError('vmm', 'malformed', `QMP sent a line that is not JSON`, { cause: e }),
        );
        return;
      }
      if (!isObject(msg)) {
        this.#abort(conn, new VigilError('vmm', 'malformed', 'QMP sent JSON that is not an object'));
        return;
      }
      this.#route(conn, msg);
    }
  }

  #route(conn: Connection, msg: Json): void {
    if (conn.greeting) {
      const g = parseGreeting(msg);
      if (g) conn.greeting.resolve(g);
      else {
        conn.greeting.reject(
          new VigilError('vmm', 'protocol', `${describeTarget(this.target)} did not greet like a QMP server`),
        );
      }
      return;
    }
    if (typeof msg.event === 'string') {
      this.#dispatch(toEvent(msg));
      return;
    }
    if (!('return' in msg) && !isObject(msg.error)) return; // a stray greeting or unknown message
    const pending = this.#takePending(msg.id);
    if (!pending) return;
    clearTimeout(pending.timer);
    if (isObject(msg.error)) {
      const cls = typeof msg.error.class === 'string' ? msg.error.class : 'GenericError';
      const desc = typeof msg.error.desc === 'string' ? msg.error.desc : 'no description';
      pending.reject(new VigilError('vmm', 'protocol', `${sanitize(cls, 200)}: ${sanitize(desc)}`));
    } else {
      pending.resolve(msg.return);
    }
  }

  /** The command a reply belongs to: by id, or the oldest when QEMU could not parse the id (JSON errors). */
  #takePending(id: unknown): Pending | undefined {
    let key: string | undefined;
    if (typeof id === 'string') key = this.#pending.has(id) ? id : undefined;
    else if (id === undefined) key = this.#pending.keys().next().value;
    if (key === undefined) return undefined;
    const p = this.#pending.get(key);
    this.#pending.delete(key);
    return p;
  }

  #dispatch(ev: QmpEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(ev);
      } catch (e) {
        process.emitWarning(`QMP event listener threw: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    for (const s of this.#streams) s.push(ev);
  }

  #abort(conn: Connection, error: VigilError): void {
    if (this.#conn !== conn) return;
    conn.greeting?.reject(error);
    this.#onClosed(conn, error);
    conn.socket.destroy();
  }

  #onClosed(conn: Connection, failure: VigilError | undefined): void {
    if (this.#conn !== conn) return;
    this.#conn = undefined;
    const error =
      failure ?? new VigilError('vmm', 'io', `QMP connection to ${this.address} closed by the other side`);
    conn.greeting?.reject(error);
    this.#rejectPending(error);
    if (this.#state !== 'connected') return; // connecting/reconnecting: #open's caller sees the failure
    if (this.#autoReconnect) {
      this.#setState('reconnecting', error);
      this.#reconnecting = this.#reconnectLoop(this.#autoReconnect)
        .catch((e: unknown) => {
          if (this.#state === 'closed') return;
          const err = e instanceof VigilError ? e : new VigilError('vmm', 'io', String(e));
          this.#setState('disconnected', err);
          for (const s of [...this.#streams]) s.fail(err);
        })
        .finally(() => {
          this.#reconnecting = undefined;
        });
      return;
    }
    this.#setState('disconnected', error);
    for (const s of [...this.#streams]) s.fail(error);
  }

  #rejectPending(error: VigilError): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(
        new VigilError(error.origin, error.kind, `QMP ${p.command}: ${error.message}`, {
          cause: error.cause,
        }),
      );
    }
  }

  #setState(state: QmpConnectionState, error?: VigilError): void {
    if (this.#state === state) return;
    this.#state = state;
    for (const l of [...this.#stateListeners]) {
      try {
        l(state, error);
      } catch (e) {
        process.emitWarning(`QMP state listener threw: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
}

function parseGreeting(msg: Json): QmpGreeting | undefined {
  const q = msg.QMP;
  if (!isObject(q) || !isObject(q.version)) return undefined;
  const v = q.version;
  const qemu = isObject(v.qemu) ? v.qemu : {};
  const num = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
  return {
    version: {
      qemu: { major: num(qemu.major), minor: num(qemu.minor), micro: num(qemu.micro) },
      package: typeof v.package === 'string' ? v.package : '',
    },
    capabilities: Array.isArray(q.capabilities)
      ? q.capabilities.filter((c): c is string => typeof c === 'string')
      : [],
  };
}

function toEvent(msg: Json): QmpEvent {
  const ts = msg.timestamp;
  let time = Date.now();
  if (
    isObject(ts) &&
    typeof ts.seconds === 'number' &&
    typeof ts.microseconds === 'number' &&
    ts.seconds >= 0
  ) {
    time = ts.seconds * 1000 + Math.floor(ts.microseconds / 1000);
  }
  return { event: msg.event as string, data: isObject(msg.data) ? msg.data : {}, time };
}
