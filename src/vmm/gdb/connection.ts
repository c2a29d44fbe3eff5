// The wire side of a GDB remote connection: one request in flight, acknowledgements, retransmission,
// stop replies told apart from command replies, and the run state that decides whether sending is safe.
// GdbClient builds commands on top of it.
//
// QEMU facts this follows (7.2): any byte arriving while the VM runs pauses it and is itself dropped, so
// nothing but the interrupt byte may be sent while the target runs. If the VM was resumed behind our back
// (QMP `cont`), our packet is swallowed: a stop reply arrives and our `+` never does, and we send the
// packet again. Acknowledgement mode is what makes this visible, so it stays on by default.

import net from 'node:net';
import { VigilError } from '../../util/errors.js';
import { FrameReader, encodePacket } from './packet.js';
import { looksLikeStopReply } from './stop-reply.js';

const RETRANSMITS = 3;
/** How long a request may stay unacknowledged after a stop reply before we assume it was swallowed. */
const SWALLOW_GRACE_MS = 200;

export interface ExchangeOptions {
  timeoutMs?: number;
  /** The reply is a stop reply (`?`). */
  expectStop?: boolean;
  /** Resume-type packet (`c`, `s`): no reply until the target stops; resolve on the stub's `+`. */
  ackOnly?: boolean;
}

interface Inflight {
  framed: Buffer;
  label: string;
  expectStop: boolean;
  ackOnly: boolean;
  acked: boolean;
  retransmits: number;
  timer: NodeJS.Timeout;
  grace?: NodeJS.Timeout;
  resolve: (reply: Buffer) => void;
  reject: (e: unknown) => void;
}

export class RspConnection {
  readonly #socket: net.Socket;
  readonly #reader: FrameReader;
  readonly #timeoutMs: number;
  #onStop: (text: string) => void = () => undefined;
  #ackMode = true;
  #running = false;
  #inflight: Inflight | undefined;
  #staleReplies = 0;
  /** Acks owed to the stub: sent with the next request, or on the next turn of the event loop. */
  #acksOwed = '';
  #ackFlush: NodeJS.Immediate | undefined;
  #closed: VigilError | undefined;
  #closeListeners = new Set<(e: VigilError, graceful: boolean) => void>();

  constructor(socket: net.Socket, options: { timeoutMs: number; maxPacketBytes: number; name: string }) {
    this.#socket = socket;
    this.#reader = new FrameReader(options.maxPacketBytes);
    this.#timeoutMs = options.timeoutMs;
    let failure: unknown;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (e) => (failure ??= e));
    socket.on('close', () =>
      this.fail(
        new VigilError(
          'vmm',
          'io',
          `GDB stub connection ${options.name} closed`,
          failure ? { cause: failure } : {},
        ),
      ),
    );
  }

  /** True after a resume packet until a stop reply arrives. */
  get running(): boolean {
    return this.#running;
  }

  get closed(): VigilError | undefined {
    return this.#closed;
  }

  /** Stop acknowledging (after the stub accepted QStartNoAckMode). */
  disableAcks(): void {
    this.#ackMode = false;
  }

  /** Receives every stop reply, asynchronous ones and the answer to `?` alike (one listener). */
  onStopReply(listener: (text: string) => void): void {
    this.#onStop = listener;
  }

  onClose(listener: (e: VigilError, graceful: boolean) => void): void {
    this.#closeListeners.add(listener);
  }

  /** Send one packet and resolve with the reply payload (decoded bytes). */
  exchange(payload: string, options: ExchangeOptions = {}): Promise<Buffer> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (this.#running) {
      return Promise.reject(
        new VigilError(
          'vmm',
          'state',
          'target is running: interrupt() or waitForStop() before sending commands',
        ),
      );
    }
    if (this.#inflight)
      return Promise.reject(new VigilError('vmm', 'state', 'GDB request already in flight'));
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const label = payload.length > 40 ? payload.slice(0, 40) + '…' : payload;
    return new Promise<Buffer>((resolve, reject) => {
      const inflight: Inflight = {
        framed: encodePacket(payload),
        label,
        expectStop: options.expectStop ?? false,
        ackOnly: options.ackOnly ?? false,
        acked: false,
        retransmits: 0,
        timer: setTimeout(() => {
          if (this.#inflight !== inflight) return;
          this.#clearInflight();
          // Replies carry no id: if this one still comes, it must not be taken for the next request's.
          if (!inflight.expectStop && !inflight.ackOnly) this.#staleReplies++;
          reject(
            new VigilError('vmm', 'timeout', `GDB stub gave no reply to "${label}" within ${timeoutMs} ms`),
          );
        }, timeoutMs),
        resolve,
        reject,
      };
      this.#inflight = inflight;
      if (inflight.ackOnly) this.#running = true; // before the write: the stop may follow in the same chunk
      this.#write(inflight.framed);
      if (inflight.ackOnly && !this.#ackMode) {
        this.#clearInflight();
        resolve(Buffer.alloc(0));
      }
    });
  }

  /** The interrupt byte: the only thing that may be sent while the target runs. */
  interrupt(): void {
    if (!this.#closed) this.#socket.write(Buffer.from([0x03]));
  }

  /** Fail everything pending and mark the connection closed (once). */
  fail(error: VigilError, graceful = false): void {
    if (this.#closed) return;
    this.#closed = error;
    const f = this.#inflight;
    this.#clearInflight();
    f?.reject(error);
    for (const l of [...this.#closeListeners]) l(error, graceful);
  }

  /** Close our side and wait (at most a second) for the socket to go. */
  async end(error: VigilError): Promise<void> {
    this.fail(error, true);
    const socket = this.#socket;
    await new Promise<void>((resolve) => {
      if (socket.destroyed) return resolve();
      const timer = setTimeout(() => {
        socket.destroy();
        resolve();
      }, 1000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.end();
    });
  }

  /** One write per request: owed acks ride along (half the segments, measurably faster with QEMU). */
  #write(data: Buffer): void {
    if (this.#acksOwed.length > 0) {
      const acks = Buffer.from(this.#acksOwed, 'latin1');
      this.#acksOwed = '';
      if (this.#ackFlush) clearImmediate(this.#ackFlush);
      this.#ackFlush = undefined;
      this.#socket.write(Buffer.concat([acks, data]));
    } else {
      this.#socket.write(data);
    }
  }

  #owe(ack: '+' | '-'): void {
    this.#acksOwed += ack;
    this.#ackFlush ??= setImmediate(() => {
      this.#ackFlush = undefined;
      if (this.#acksOwed.length > 0 && !this.#socket.destroyed) this.#socket.write(this.#acksOwed);
      this.#acksOwed = '';
    });
  }

  #clearInflight(): void {
    const f = this.#inflight;
    if (!f) return;
    clearTimeout(f.timer);
    if (f.grace) clearTimeout(f.grace);
    this.#inflight = undefined;
  }

  #onData(chunk: Buffer): void {
    let frames;
    try {
      frames = this.#reader.push(chunk);
    } catch (e) {
      this.fail(e as VigilError);
      this.#socket.destroy();
      return;
    }
    for (const frame of frames) {
      const f = this.#inflight;
      if (frame.type === 'ack') {
        if (!f || f.acked) continue;
        f.acked = true;
        if (f.grace) clearTimeout(f.grace);
        if (f.ackOnly) {
          this.#clearInflight();
          f.resolve(Buffer.alloc(0));
        }
        continue;
      }
      if (frame.type === 'nack') {
        if (!f || !this.#ackMode) continue;
        if (++f.retransmits > RETRANSMITS) {
          this.#clearInflight();
          f.reject(new VigilError('vmm', 'protocol', `GDB stub rejected "${f.label}" ${RETRANSMITS} times`));
        } else {
          this.#socket.write(f.framed);
        }
        continue;
      }
      if (frame.type === 'notification') continue; // non-stop mode only; never negotiated
      if (this.#ackMode) this.#owe(frame.checksumOk ? '+' : '-');
      if (!frame.checksumOk) continue; // the stub resends it
      this.#onPacket(frame.payload);
    }
  }

  #onPacket(payload: Buffer): void {
    const f = this.#inflight;
    const text = payload.toString('latin1');
    const stop = looksLikeStopReply(text);
    if (stop && !(f && f.expectStop)) {
      if (f && this.#ackMode && !f.acked && !f.grace) {
        // The target may have been running (resumed behind our back) and swallowed our packet.
        f.grace = setTimeout(() => {
          f.grace = undefined;
          if (this.#inflight === f && !f.acked && !this.#closed) this.#socket.write(f.framed);
        }, SWALLOW_GRACE_MS);
      }
      this.#running = false;
      this.#onStop(text);
      return;
    }
    if (this.#staleReplies > 0) {
      this.#staleReplies--;
      return;
    }
    if (!f || f.ackOnly) return; // nothing asked for it
    this.#clearInflight();
    if (stop) {
      this.#running = false;
      this.#onStop(text);
    }
    f.resolve(payload);
  }
}

/**
 * A connection given up during the handshake must not simply be closed: if the stub was busy with
 * another debugger, our connection waits in the listen backlog, and QEMU accepts it when the other one
 * leaves, pauses the VM for the "new debugger" and, finding the socket closed, leaves it paused for good.
 * So keep the socket (unref'd: it never holds the process open) until the stub answers, then detach.
 * `detach` is the packet to send at once when the stub already answered our qSupported.
 */
export function reapAbandoned(socket: net.Socket, detach: string | undefined): void {
  socket.removeAllListeners('data');
  socket.removeAllListeners('close');
  socket.removeAllListeners('error');
  socket.on('error', () => socket.destroy());
  socket.unref();
  const reader = new FrameReader(1 << 20);
  let sent = false;
  const send = (packet: string): void => {
    sent = true;
    socket.write(encodePacket(packet));
    // Whatever the reply, the stub has resumed the VM or never will: do not linger.
    setTimeout(() => socket.destroy(), 5000).unref();
  };
  socket.on('data', (chunk: Buffer) => {
    let frames;
    try {
      frames = reader.push(chunk);
    } catch {
      socket.destroy();
      return;
    }
    for (const f of frames) {
      if (f.type !== 'packet') continue;
      socket.write('+');
      if (looksLikeStopReply(f.payload.toString('latin1'))) continue;
      // A command reply: the detach's (we are done) or our queued qSupported's, which offered
      // multiprocess, so the detach names the process.
      if (sent) socket.destroy();
      else send('D;1');
    }
  });
  if (detach) send(detach);
}
