// How syslog messages leave: one datagram each (UDP, unix datagram), or a reconnecting stream (TCP, unix
// stream) that holds a bounded queue while it is down. Stream delivery is at-most-once across a broken
// connection: bytes the kernel accepted before a reset are gone, and TCP syslog has no acknowledgement
// (use the webhook sink where every alert must arrive).

import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import { VigilError } from '../../util/errors.js';
import { backoffDelay } from './backoff.js';
import { MONITOR_ORIGIN, type SinkReporter } from './types.js';

export interface SyslogTransport {
  /** Resolves when the message was sent (datagram) or queued (stream); rejects if it was refused. */
  send(frame: Buffer): Promise<void>;
  /** Messages accepted but not yet handed to the kernel. */
  readonly pending: number;
  readonly dropped: number;
  readonly connected: boolean;
  /** Send what is queued (bounded by timeoutMs), then release the socket; rejects if messages were left. */
  close(timeoutMs: number): Promise<void>;
}

const err = (kind: 'io' | 'bound' | 'unsupported' | 'state' | 'timeout', msg: string, cause?: unknown) =>
  new VigilError(MONITOR_ORIGIN, kind, msg, cause === undefined ? undefined : { cause });

// ---------------------------------------------------------------------------------------------- UDP

export class UdpTransport implements SyslogTransport {
  readonly pending = 0;
  readonly dropped = 0;
  readonly connected = true;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly address: string,
    private readonly port: number,
  ) {}

  /** Resolve the host once, so the socket family matches it (udp4 or udp6). */
  static async create(host: string, port: number, reporter: SinkReporter): Promise<UdpTransport> {
    let resolved: { address: string; family: number };
    try {
      resolved = await lookup(host);
    } catch (e) {
      throw err('io', `syslog: cannot resolve ${host}`, e);
    }
    const socket = dgram.createSocket(resolved.family === 6 ? 'udp6' : 'udp4');
    // Asynchronous socket errors (ICMP unreachable on some systems) must not crash vigil.
    socket.on('error', (e) => reporter.failure(e));
    socket.unref();
    return new UdpTransport(socket, resolved.address, port);
  }

  send(frame: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.send(frame, this.port, this.address, (e) =>
        e ? reject(err('io', 'syslog: UDP send failed', e)) : resolve(),
      );
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

// ------------------------------------------------------------------------------------ unix datagram

/** The part of the optional `unix-dgram` package this module uses. */
export interface UnixDgramSocket {
  on(event: 'error', fn: (e: Error) => void): unknown;
  on(event: 'message', fn: (msg: Buffer) => void): unknown;
  once(event: 'writable', fn: () => void): unknown;
  removeListener(event: 'writable', fn: () => void): unknown;
  bind(path: string): void;
  send(buf: Buffer, offset: number, length: number, path: string, cb: (e?: Error) => void): void;
  close(): void;
}
export interface UnixDgramModule {
  createSocket(type: 'unix_dgram', listener?: (msg: Buffer) => void): UnixDgramSocket;
}

/**
 * Node has no AF_UNIX datagram sockets, so /dev/log needs the native `unix-dgram` package. It is optional:
 * loaded when first needed, with an error that says what to do when it is absent.
 */
export function loadUnixDgram(): UnixDgramModule {
  try {
    return createRequire(import.meta.url)('unix-dgram') as UnixDgramModule;
  } catch (e) {
    throw err(
      'unsupported',
      "syslog over a unix datagram socket needs the optional package 'unix-dgram' (npm install unix-dgram); " +
        "or use socketType: 'stream', transport: 'udp' or 'tcp'",
      e,
    );
  }
}

const CONGESTION_RETRIES = 3;
const CONGESTION_WAIT_MS = 1000;

export class UnixDgramTransport implements SyslogTransport {
  readonly pending = 0;
  readonly dropped = 0;
  readonly connected = true;
  private readonly socket: UnixDgramSocket;

  constructor(
    private readonly path: string,
    reporter: SinkReporter,
    mod: UnixDgramModule = loadUnixDgram(),
  ) {
    this.socket = mod.createSocket('unix_dgram');
    this.socket.on('error', (e) => reporter.failure(e));
  }

  private sendOnce(frame: Buffer): Promise<void> {
    return new Promise((resolve, reject) =>
      this.socket.send(frame, 0, frame.length, this.path, (e) => (e ? reject(e) : resolve())),
    );
  }

  /** Wait for the socket to drain after a 'congestion' (EAGAIN), bounded. */
  private writable(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.socket.removeListener('writable', done);
        resolve();
      };
      const timer = setTimeout(done, CONGESTION_WAIT_MS);
      this.socket.once('writable', done);
    });
  }

  async send(frame: Buffer): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.sendOnce(frame);
      } catch (e) {
        if ((e as Error).message !== 'congestion' || attempt >= CONGESTION_RETRIES) {
          throw err('io', `syslog: send to ${this.path} failed`, e);
        }
        await this.writable();
      }
    }
  }

  async close(): Promise<void> {
    this.socket.close();
  }
}

// ---------------------------------------------------------------------------- reconnecting stream

export interface StreamOptions {
  maxQueue: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  connectTimeoutMs: number;
  random?: () => number;
}

/** TCP or unix stream: connects in the background, reconnects with backoff, queues while down. */
export class StreamTransport implements SyslogTransport {
  private readonly queue: Buffer[] = [];
  private socket: net.Socket | undefined;
  private isConnected = false;
  private writing = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private closing = false;
  private idleWaiters: (() => void)[] = [];
  dropped = 0;

  constructor(
    private readonly describe: string,
    private readonly connectFn: () => net.Socket,
    private readonly opts: StreamOptions,
    private readonly reporter: SinkReporter,
  ) {
    this.connect();
  }

  get pending(): number {
    return this.queue.length;
  }

  get connected(): boolean {
    return this.isConnected;
  }

  private connect(): void {
    this.timer = undefined;
    if (this.closing) return;
    const s = this.connectFn();
    this.socket = s;
    let failure: Error | undefined;
    s.setTimeout(this.opts.connectTimeoutMs, () =>
      s.destroy(new Error(`connect timeout (${this.opts.connectTimeoutMs} ms)`)),
    );
    s.once('connect', () => {
      s.setTimeout(0);
      s.setNoDelay(true);
      this.isConnected = true;
      this.attempt = 0;
      this.reporter.success();
      this.pump();
    });
    s.on('data', () => {}); // a syslog receiver has nothing to say; drain whatever it sends
    s.on('error', (e) => (failure = e));
    s.on('close', () => {
      if (this.socket !== s) return;
      const wasConnected = this.isConnected;
      this.socket = undefined;
      this.isConnected = false;
      this.writing = false;
      if (!this.closing) {
        this.reporter.failure(
          err('io', `${this.describe}: ${wasConnected ? 'connection lost' : 'cannot connect'}`, failure),
        );
        this.timer = setTimeout(
          () => this.connect(),
          backoffDelay(
            this.attempt++,
            { baseMs: this.opts.reconnectBaseMs, maxMs: this.opts.reconnectMaxMs },
            this.opts.random,
          ),
        );
        this.timer.unref();
      }
      this.notifyIdle();
    });
  }

  /** Hand queued messages to the socket one at a time; a message leaves the queue once the kernel has it. */
  private pump(): void {
    const s = this.socket;
    if (!s || !this.isConnected || this.writing) return;
    const frame = this.queue[0];
    if (frame === undefined) return this.notifyIdle();
    this.writing = true;
    s.write(frame, (e) => {
      if (this.socket !== s) return;
      this.writing = false;
      if (e) return; // 'close' follows and reconnects; the frame stays queued
      this.queue.shift();
      this.pump();
    });
  }

  private notifyIdle(): void {
    if (this.queue.length > 0 && this.isConnected) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  async send(frame: Buffer): Promise<void> {
    if (this.closing) throw err('state', `${this.describe}: closed`);
    if (this.queue.length >= this.opts.maxQueue) {
      this.dropped++;
      throw err('bound', `${this.describe}: queue full (${this.opts.maxQueue} messages), alert dropped`);
    }
    this.queue.push(frame);
    this.pump();
  }

  async close(timeoutMs: number): Promise<void> {
    this.closing = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.queue.length > 0 && this.socket) {
      // Connected or still connecting: give the queue its chance to drain.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        this.idleWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const s = this.socket;
    if (s) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(
          () => {
            s.destroy();
            resolve();
          },
          Math.min(timeoutMs, 1000),
        );
        s.once('close', () => {
          clearTimeout(t);
          resolve();
        });
        s.end();
      });
    }
    const left = this.queue.length;
    if (left > 0) {
      this.dropped += left;
      this.queue.length = 0;
      throw err('timeout', `${this.describe}: ${left} message(s) not delivered before close`);
    }
  }
}

export function tcpConnector(host: string, port: number): () => net.Socket {
  return () => {
    const s = net.connect({ host, port });
    s.setKeepAlive(true, 30_000);
    return s;
  };
}

export function unixStreamConnector(path: string): () => net.Socket {
  return () => net.connect({ path });
}
