// A GDB remote serial protocol client for QEMU's gdbstub (and other all-stop stubs): vCPUs as threads,
// registers numbered from the stub's target description, memory, breakpoints and watchpoints, run
// control. The protocol is one request, one reply, with no ids: requests are serialised here, and a
// multi-packet operation (select a vCPU, then read) runs as one unit so nothing interleaves. The wire
// (acks, retransmission, stop replies, swallowed packets) is in connection.ts.
//
// QEMU facts the design follows (checked against 7.2):
// - Attaching pauses the VM and the stub sends an unsolicited stop reply ("T02thread:01;").
// - `D` (detach) resumes the VM; closing the socket without it leaves the VM paused, so close() detaches.
// - `p` answers only after the target description was read on this connection; we always read it.
// - `m` accepts at most PacketSize/2 bytes per request (E22 beyond); reads are chunked accordingly.
// - Replies are small and frequent: TCP_NODELAY is essential (Nagle + delayed ACK cap it at ~23/s).

import { VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import type { DebugHandle, X86Registers } from '../types.js';
import { BoundedQueue } from '../qmp/bounded-queue.js';
import { describeTarget, openSocket, parseSocketTarget, type SocketTarget } from '../qmp/transport.js';
import { RspConnection, reapAbandoned, type ExchangeOptions } from './connection.js';
import { fromHex, isErrorReply, leToBigInt, toHex } from './packet.js';
import { parseStopReply, type StopReply } from './stop-reply.js';
import { RegisterMap, loadTargetDescription } from './target-description.js';

export type { StopReply } from './stop-reply.js';

export interface GdbClientOptions {
  /** Connect and negotiate (qSupported, target description) within this time (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Default reply timeout per request (default 10000 ms). */
  commandTimeoutMs?: number;
  /** Capacity of each stops() stream (default 64). */
  stopBufferSize?: number;
  /** Largest packet accepted from the stub (default 4 MiB). */
  maxPacketBytes?: number;
  /** Ask for QStartNoAckMode when the stub offers it (default false: acks detect swallowed packets). */
  noAckMode?: boolean;
  /** Largest single `m` request in bytes (default: what PacketSize allows). */
  maxReadChunk?: number;
}

/** Z-packet types: 0 software breakpoint, 1 hardware breakpoint, 2 write, 3 read, 4 access watchpoint. */
export type BreakpointType = 'software' | 'hardware' | 'write' | 'read' | 'access';

export interface Breakpoint extends DebugHandle {
  readonly type: BreakpointType;
  readonly address: bigint;
  /** Breakpoint kind (instruction length, 1 on x86) or watched length in bytes. */
  readonly kind: number;
}

export interface ThreadOptions {
  /** vCPU thread id from threads(); default: the stub's current one (the vCPU that stopped last). */
  thread?: string;
}

export interface MemoryOptions extends ThreadOptions {
  /** Guest-physical instead of virtual addresses (QEMU's PhyMemMode extension). */
  physical?: boolean;
  timeoutMs?: number;
}

const Z_CODE: Record<BreakpointType, number> = { software: 0, hardware: 1, write: 2, read: 3, access: 4 };
const MAX_U64 = (1n << 64n) - 1n;
const MAX_READ = 256 * 1024 * 1024;
const MAX_THREADS = 4096;
const THREAD_ID = /^(?:p(-?[0-9a-fA-F]+)\.)?(-?[0-9a-fA-F]+)$/;

export class GdbClient {
  readonly address: string;
  readonly target: SocketTarget;
  readonly #commandTimeoutMs: number;
  readonly #stopBufferSize: number;
  readonly #maxReadChunkOption: number | undefined;

  readonly #conn: RspConnection;
  #chain: Promise<unknown> = Promise.resolve();
  #detached = false;

  #features = new Map<string, string | boolean>();
  #packetSize = 4096;
  #registers: RegisterMap | undefined;
  #qemuFeatures = new Set<string>();
  #physMode: boolean | undefined;

  #lastStop: StopReply | undefined;
  #stopWaiters = new Set<{ resolve: (s: StopReply) => void; reject: (e: unknown) => void }>();
  #streams = new Set<BoundedQueue<StopReply>>();
  #listeners = new Set<(s: StopReply) => void>();
  #selectedG: string | undefined;
  #breakpoints = new Map<string, Breakpoint>();

  private constructor(address: string, conn: RspConnection, options: GdbClientOptions) {
    this.address = address;
    this.target = parseSocketTarget(address);
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 10_000;
    this.#stopBufferSize = options.stopBufferSize ?? 64;
    this.#maxReadChunkOption = options.maxReadChunk;
    this.#conn = conn;
    conn.onStopReply((text) => this.#handleStop(text));
    conn.onClose((error, graceful) => {
      for (const w of [...this.#stopWaiters]) w.reject(error);
      this.#stopWaiters.clear();
      for (const q of [...this.#streams]) {
        if (graceful) q.end();
        else q.fail(error);
      }
    });
  }

  /**
   * Connect to a stub ("host:port", or a unix socket path), negotiate features and read the target
   * description. QEMU pauses the VM on attach; detach() or close() resumes it.
   */
  static async connect(address: string, options: GdbClientOptions = {}): Promise<GdbClient> {
    const target = parseSocketTarget(address);
    const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    const deadline = Date.now() + connectTimeoutMs;
    const socket = await openSocket(target, 'GDB stub', connectTimeoutMs);
    socket.setNoDelay(true);
    const conn = new RspConnection(socket, {
      timeoutMs: options.commandTimeoutMs ?? 10_000,
      maxPacketBytes: options.maxPacketBytes ?? 4 * 1024 * 1024,
      name: address,
    });
    const client = new GdbClient(address, conn, options);
    try {
      await client.#handshake(() => Math.max(1, deadline - Date.now()), options.noAckMode ?? false);
    } catch (e) {
      if (e instanceof VigilError && e.kind === 'timeout') {
        reapAbandoned(socket, client.#features.size > 0 ? client.#detachPacket() : undefined);
        throw new VigilError(
          'vmm',
          'timeout',
          `GDB stub at ${describeTarget(target)} did not answer within ${connectTimeoutMs} ms ` +
            `(another debugger attached? QEMU's stub serves one client at a time)`,
          { cause: e },
        );
      }
      // The stub answered and has paused the VM: detach (or at least continue) before giving up.
      await client.close().catch(() => socket.destroy());
      throw e;
    }
    return client;
  }

  async #handshake(remaining: () => number, noAck: boolean): Promise<void> {
    // Always offer multiprocess: QEMU keeps the mode of an earlier client in a global, so only
    // negotiating it ourselves makes thread ids ("p01.02") and detach ("D;1") predictable.
    const sup = await this.#exchange('qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+', {
      timeoutMs: remaining(),
    });
    for (const item of sup.split(';')) {
      if (item.length === 0) continue;
      const eq = item.indexOf('=');
      if (eq > 0) this.#features.set(item.slice(0, eq), item.slice(eq + 1));
      else if (item.endsWith('+')) this.#features.set(item.slice(0, -1), true);
      else if (item.endsWith('-') || item.endsWith('?')) this.#features.set(item.slice(0, -1), false);
    }
    const ps = this.#features.get('PacketSize');
    if (typeof ps === 'string' && /^[0-9a-fA-F]{1,8}$/.test(ps)) {
      this.#packetSize = Math.max(64, Math.min(parseInt(ps, 16), 1 << 24));
    }
    if (noAck && this.#features.get('QStartNoAckMode') === true) {
      if ((await this.#exchange('QStartNoAckMode', { timeoutMs: remaining() })) === 'OK') {
        this.#conn.disableAcks();
      }
    }
    if (this.#features.get('qXfer:features:read') === true) {
      const description = await loadTargetDescription((annex) =>
        this.#readXfer('features', annex, remaining()),
      );
      this.#registers = new RegisterMap(description);
    }
    const q = await this.#exchange('qqemu.Supported', { timeoutMs: remaining() });
    if (!isErrorReply(q)) for (const f of q.split(';')) if (f) this.#qemuFeatures.add(f);
  }

  async #readXfer(object: string, annex: string, timeoutMs: number): Promise<string> {
    if (!/^[\w.-]{1,200}$/.test(annex)) {
      throw new VigilError('vmm', 'malformed', `GDB stub names an unusable annex "${sanitize(annex, 60)}"`);
    }
    const chunk = Math.max(16, this.#packetSize - 16);
    const parts: Buffer[] = [];
    let size = 0;
    for (;;) {
      const reply = await this.#conn.exchange(
        `qXfer:${object}:read:${annex}:${size.toString(16)},${chunk.toString(16)}`,
        { timeoutMs },
      );
      const head = reply.length > 0 ? String.fromCharCode(reply[0]) : '';
      if (head !== 'm' && head !== 'l') {
        throw new VigilError(
          'vmm',
          'protocol',
          `GDB stub refused qXfer:${object}:read:${annex}: "${sanitize(reply.toString('latin1'), 40)}"`,
        );
      }
      parts.push(reply.subarray(1));
      size += reply.length - 1;
      if (size > 1024 * 1024) throw new VigilError('vmm', 'bound', `qXfer ${annex} is over 1 MiB`);
      // Decode once at the end: a chunk boundary may split a UTF-8 character.
      if (head === 'l') return Buffer.concat(parts, size).toString('utf8');
      if (reply.length === 1) throw new VigilError('vmm', 'protocol', `qXfer ${annex}: empty "m" reply`);
    }
  }

  // ---- state ----------------------------------------------------------------------------------------

  /** Features from qSupported, e.g. PacketSize → "1000", "qXfer:features:read" → true. */
  get features(): ReadonlyMap<string, string | boolean> {
    return this.#features;
  }

  get packetSize(): number {
    return this.#packetSize;
  }

  /** Register numbering from the target description (undefined when the stub offers none). */
  get registerMap(): RegisterMap | undefined {
    return this.#registers;
  }

  /** QEMU extensions from qqemu.Supported (e.g. "PhyMemMode"). */
  get qemuFeatures(): ReadonlySet<string> {
    return this.#qemuFeatures;
  }

  /** True after continue() until a stop reply arrives. */
  get running(): boolean {
    return this.#conn.running;
  }

  get lastStop(): StopReply | undefined {
    return this.#lastStop;
  }

  get connected(): boolean {
    return this.#conn.closed === undefined;
  }

  /** Breakpoints and watchpoints this client inserted and has not removed. */
  get breakpoints(): readonly Breakpoint[] {
    return [...this.#breakpoints.values()];
  }

  // ---- generic request ------------------------------------------------------------------------------

  /**
   * Send one packet and return the reply text (latin1). For commands this class does not wrap. Set
   * `expectStop` when the reply is a stop reply (`?`, which is recognised by itself).
   */
  request(payload: string, options: { timeoutMs?: number; expectStop?: boolean } = {}): Promise<string> {
    const expectStop = options.expectStop ?? payload === '?';
    return this.#serial(() => this.#exchange(payload, { ...options, expectStop }));
  }

  // ---- threads (vCPUs) ------------------------------------------------------------------------------

  /** Thread ids, one per vCPU (QEMU: vCPU index + 1, in hex: "01", "02", …). */
  threads(): Promise<string[]> {
    return this.#serial(async () => {
      const ids: string[] = [];
      for (let reply = await this.#exchange('qfThreadInfo'); ; reply = await this.#exchange('qsThreadInfo')) {
        if (reply === 'l') return ids;
        if (!reply.startsWith('m')) throw this.#replyError('qfThreadInfo', reply);
        for (const id of reply.slice(1).split(',')) {
          if (!THREAD_ID.test(id))
            throw new VigilError('vmm', 'malformed', `bad thread id "${sanitize(id, 40)}"`);
          ids.push(id);
        }
        if (ids.length > MAX_THREADS)
          throw new VigilError('vmm', 'bound', `more than ${MAX_THREADS} threads`);
      }
    });
  }

  /** The stub's description of a thread (QEMU: "CPU#0 [running]"), sanitised. */
  threadInfo(thread: string): Promise<string> {
    return this.#serial(async () => {
      const reply = await this.#exchange(`qThreadExtraInfo,${thread}`);
      if (isErrorReply(reply) || reply === '') throw this.#replyError('qThreadExtraInfo', reply);
      return sanitize(fromHex(reply, 'thread info').toString('latin1'), 200);
    });
  }

  // ---- registers ------------------------------------------------------------------------------------

  /** All registers the `g` packet carries, by name (unavailable ones are absent). */
  readRegisters(options: ThreadOptions = {}): Promise<Map<string, bigint>> {
    return this.#serial(async () => {
      await this.#selectThread(options.thread);
      const out = new Map<string, bigint>();
      for (const [name, raw] of await this.#readG()) if (raw) out.set(name, leToBigInt(raw));
      return out;
    });
  }

  /** One register by name (from the target description) or number, with `p`. */
  readRegister(register: string | number, options: ThreadOptions = {}): Promise<bigint> {
    return this.#serial(async () => {
      await this.#selectThread(options.thread);
      return this.#readP(register);
    });
  }

  /** The x86-64 registers vigil uses, in one `g` round trip (plus `p` for any the reply lacks). */
  readX86Registers(options: ThreadOptions = {}): Promise<X86Registers> {
    return this.#serial(async () => {
      await this.#selectThread(options.thread);
      const g = await this.#readG();
      const value = async (...names: string[]): Promise<bigint | undefined> => {
        for (const n of names) {
          const raw = g.get(n);
          if (raw) return leToBigInt(raw);
        }
        for (const n of names) {
          if (this.#registers?.byName(n)) return this.#readP(n);
        }
        return undefined;
      };
      const regs: Partial<Record<keyof X86Registers, bigint>> = {};
      for (const [field, names] of X86_NAMES) {
        const v = await value(...names);
        if (v !== undefined) regs[field] = v;
      }
      for (const field of ['rip', 'rsp', 'cr0', 'cr3', 'cr4', 'efer'] as const) {
        if (regs[field] === undefined) {
          throw new VigilError(
            'vmm',
            'unsupported',
            `GDB stub at ${this.address} does not offer register ${field}`,
          );
        }
      }
      return regs as X86Registers;
    });
  }

  async #readG(): Promise<Map<string, Buffer | undefined>> {
    const reply = await this.#exchange('g');
    if (isErrorReply(reply) || reply.length === 0) throw this.#replyError('g', reply);
    const unavailable = new Set<number>();
    const hex = reply.replace(/xx/gi, (_m, off: number) => {
      unavailable.add(off / 2);
      return '00';
    });
    const data = fromHex(hex, 'g reply');
    if (!this.#registers) throw new VigilError('vmm', 'unsupported', 'GDB stub gave no target description');
    return this.#registers.splitG(data, unavailable);
  }

  async #readP(register: string | number): Promise<bigint> {
    const info =
      typeof register === 'number' ? this.#registers?.byNumber(register) : this.#registers?.byName(register);
    if (!info) {
      throw new VigilError(
        'vmm',
        'not-found',
        `GDB stub at ${this.address} has no register ${String(register)}`,
      );
    }
    const reply = await this.#exchange(`p${info.regnum.toString(16)}`);
    if (isErrorReply(reply) || reply.length === 0) throw this.#replyError(`p (${info.name})`, reply);
    if (/^x+$/i.test(reply))
      throw new VigilError('vmm', 'unsupported', `register ${info.name} is unavailable`);
    return leToBigInt(fromHex(reply, `register ${info.name}`));
  }

  // ---- memory ---------------------------------------------------------------------------------------

  /**
   * Read `length` bytes at `address` (virtual, through the selected vCPU's page tables, unless
   * `physical`). Large reads are split into PacketSize/2 requests. Throws VigilError('vmm', 'unmapped')
   * naming the first address the stub could not read.
   */
  async readMemory(address: bigint, length: number, options: MemoryOptions = {}): Promise<Buffer> {
    checkRange(address, length, MAX_READ);
    return this.#serial(async () => {
      await this.#selectThread(options.thread);
      await this.#memoryMode(options.physical ?? false);
      const out = Buffer.allocUnsafe(length);
      const chunk = this.maxReadChunk;
      let done = 0;
      while (done < length) {
        const at = address + BigInt(done);
        const want = Math.min(chunk, length - done);
        const reply = await this.#exchange(`m${at.toString(16)},${want.toString(16)}`, options);
        if (isErrorReply(reply) || reply.length === 0) {
          throw new VigilError(
            'vmm',
            'unmapped',
            `GDB stub cannot read ${options.physical ? 'physical' : 'virtual'} 0x${at.toString(16)} ` +
              `(${done} of ${length} bytes read): ${reply || 'empty reply'}`,
          );
        }
        const got = fromHex(reply, 'memory');
        if (got.length > want)
          throw new VigilError('vmm', 'protocol', `GDB stub sent ${got.length} bytes for ${want}`);
        got.copy(out, done);
        done += got.length;
      }
      return out;
    });
  }

  /** Largest `m` request this client sends. */
  get maxReadChunk(): number {
    return Math.max(1, Math.min(this.#maxReadChunkOption ?? Infinity, Math.floor(this.#packetSize / 2)));
  }

  /** Write guest memory with `M`. vigil calls this only from an explicit, configured response. */
  async writeMemory(address: bigint, data: Buffer, options: MemoryOptions = {}): Promise<void> {
    checkRange(address, data.length, MAX_READ);
    return this.#serial(async () => {
      await this.#selectThread(options.thread);
      await this.#memoryMode(options.physical ?? false);
      const chunk = Math.max(1, Math.floor((this.#packetSize - 40) / 2));
      for (let done = 0; done < data.length; done += chunk) {
        const part = data.subarray(done, done + chunk);
        const at = address + BigInt(done);
        const reply = await this.#exchange(
          `M${at.toString(16)},${part.length.toString(16)}:${toHex(part)}`,
          options,
        );
        if (reply !== 'OK') throw this.#replyError(`M at 0x${at.toString(16)}`, reply);
      }
    });
  }

  async #memoryMode(physical: boolean): Promise<void> {
    if (!this.#qemuFeatures.has('PhyMemMode')) {
      if (physical)
        throw new VigilError('vmm', 'unsupported', `GDB stub at ${this.address} has no physical memory mode`);
      return;
    }
    // QEMU keeps this mode in a global that outlives connections: ask rather than assume.
    if (this.#physMode === undefined) this.#physMode = (await this.#exchange('qqemu.PhyMemMode')) === '1';
    if (this.#physMode === physical) return;
    const reply = await this.#exchange(`Qqemu.PhyMemMode:${physical ? 1 : 0}`);
    if (reply !== 'OK') throw this.#replyError('Qqemu.PhyMemMode', reply);
    this.#physMode = physical;
  }

  // ---- breakpoints and watchpoints ------------------------------------------------------------------

  /** Insert a breakpoint (Z0/Z1) or watchpoint (Z2 write, Z3 read, Z4 access). */
  async insertBreakpoint(type: BreakpointType, address: bigint, kind = 1): Promise<Breakpoint> {
    checkRange(address, 1, 1);
    if (!Number.isInteger(kind) || kind < 1 || kind > 1 << 20) {
      throw new VigilError('vmm', 'usage', `breakpoint kind/length must be a positive integer, got ${kind}`);
    }
    return this.#serial(async () => {
      const key = `${Z_CODE[type]},${address.toString(16)},${kind.toString(16)}`;
      const existing = this.#breakpoints.get(key);
      if (existing) return existing;
      const reply = await this.#exchange(`Z${key}`);
      if (reply === '') {
        throw new VigilError(
          'vmm',
          'unsupported',
          `GDB stub at ${this.address} does not support ${type} breakpoints (Z${Z_CODE[type]})`,
        );
      }
      if (reply !== 'OK') throw this.#replyError(`Z${Z_CODE[type]} at 0x${address.toString(16)}`, reply);
      const bp: Breakpoint = {
        type,
        address,
        kind,
        remove: () => this.removeBreakpoint(type, address, kind),
      };
      this.#breakpoints.set(key, bp);
      return bp;
    });
  }

  removeBreakpoint(type: BreakpointType, address: bigint, kind = 1): Promise<void> {
    return this.#serial(async () => {
      const key = `${Z_CODE[type]},${address.toString(16)},${kind.toString(16)}`;
      const reply = await this.#exchange(`z${key}`);
      this.#breakpoints.delete(key);
      if (reply !== 'OK') throw this.#replyError(`z${Z_CODE[type]} at 0x${address.toString(16)}`, reply);
    });
  }

  /** MachineDebug shape: an execution breakpoint at a virtual address. */
  breakpoint(va: bigint, options: { hardware?: boolean } = {}): Promise<Breakpoint> {
    return this.insertBreakpoint(options.hardware ? 'hardware' : 'software', va, 1);
  }

  /** MachineDebug shape: a data watchpoint of `len` bytes. */
  watch(va: bigint, len: number, kind: 'w' | 'r' | 'rw'): Promise<Breakpoint> {
    return this.insertBreakpoint(kind === 'w' ? 'write' : kind === 'r' ? 'read' : 'access', va, len);
  }

  // ---- execution control ----------------------------------------------------------------------------

  /**
   * `?`: why the target last stopped. QEMU takes `?` for a fresh debugger and drops breakpoints, but
   * (7.2) only on the current vCPU, after which `z` fails for the others: so our breakpoints are
   * removed before `?` and inserted again after it.
   */
  haltReason(): Promise<StopReply> {
    return this.#serial(async () => {
      const kept = [...this.#breakpoints.keys()];
      for (const key of kept) {
        const reply = await this.#exchange(`z${key}`);
        if (reply !== 'OK') throw this.#replyError(`z${key}`, reply);
      }
      const reply = await this.#exchange('?', { expectStop: true });
      for (const key of kept) {
        const again = await this.#exchange(`Z${key}`);
        if (again !== 'OK') {
          this.#breakpoints.delete(key);
          throw this.#replyError(`Z${key} after ?`, again);
        }
      }
      const stop = parseStopReply(reply);
      this.#lastStop = stop;
      return stop;
    });
  }

  /** Resume all vCPUs (`c`); returns once the stub took the packet. The stop arrives later. */
  continue(): Promise<void> {
    return this.#serial(async () => {
      await this.#exchange('c', { ackOnly: true });
    });
  }

  /** Single-step one vCPU (`vCont;s:thread`, or `s`) and return the stop. */
  step(options: ThreadOptions & { timeoutMs?: number } = {}): Promise<StopReply> {
    return this.#serial(async () => {
      const packet = options.thread ? `vCont;s:${options.thread}` : 's';
      // Wait for the stop before sending: it may arrive in the same chunk as the `+`.
      const stop = this.#nextStop(options.timeoutMs ?? this.#commandTimeoutMs);
      try {
        await this.#exchange(packet, { ackOnly: true });
      } catch (e) {
        stop.cancel();
        throw e;
      }
      return stop.promise;
    });
  }

  /**
   * Stop a running target (the 0x03 byte) and return the stop reply; if it is not running, return the
   * last stop at once.
   */
  async interrupt(options: { timeoutMs?: number } = {}): Promise<StopReply> {
    this.#checkOpen();
    if (!this.#conn.running) return this.#lastStop ?? this.haltReason();
    const stop = this.#nextStop(options.timeoutMs ?? this.#commandTimeoutMs);
    this.#conn.interrupt();
    return stop.promise;
  }

  /** The stop that ends the current run (at once if the target is already stopped). */
  waitForStop(options: { timeoutMs?: number } = {}): Promise<StopReply> {
    this.#checkOpen();
    if (!this.#conn.running && this.#lastStop) return Promise.resolve(this.#lastStop);
    return this.#nextStop(options.timeoutMs ?? this.#commandTimeoutMs).promise;
  }

  /**
   * Run `fn` with the target stopped: interrupt it if it runs, and continue afterwards if it was running.
   * For reading state of a VM that should keep running.
   */
  async whileStopped<T>(fn: () => Promise<T>, options: { timeoutMs?: number } = {}): Promise<T> {
    const wasRunning = this.#conn.running;
    if (wasRunning) await this.interrupt(options);
    try {
      return await fn();
    } finally {
      if (wasRunning && this.connected && !this.#conn.running) await this.continue();
    }
  }

  /** A new stream of stop replies (bounded, oldest dropped and counted). Ends on close, fails on a drop. */
  stops(options: { bufferSize?: number } = {}): BoundedQueue<StopReply> {
    this.#checkOpen();
    const q: BoundedQueue<StopReply> = new BoundedQueue<StopReply>(
      options.bufferSize ?? this.#stopBufferSize,
      {
        onClose: () => this.#streams.delete(q),
      },
    );
    this.#streams.add(q);
    return q;
  }

  /** Call `listener` for every stop reply. Returns an unsubscribe function. */
  onStop(listener: (s: StopReply) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  // ---- detach and close -----------------------------------------------------------------------------

  /**
   * Remove our breakpoints, restore virtual memory mode, send `D` (QEMU resumes the VM) and close.
   * A running target is interrupted first, since a packet sent while it runs would be swallowed.
   */
  async detach(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#checkOpen();
    if (this.#conn.running) await this.interrupt(options);
    await this.#serial(async () => {
      for (const bp of [...this.#breakpoints.values()]) {
        const key = `${Z_CODE[bp.type]},${bp.address.toString(16)},${bp.kind.toString(16)}`;
        await this.#exchange(`z${key}`, options).catch(() => undefined);
        this.#breakpoints.delete(key);
      }
      if (this.#physMode) await this.#exchange('Qqemu.PhyMemMode:0', options).catch(() => undefined);
      let reply = await this.#exchange(this.#detachPacket(), options);
      const pid = /^p([0-9a-fA-F]+)\./.exec(this.#lastStop?.thread ?? '');
      if (reply !== 'OK' && pid) reply = await this.#exchange(`D;${pid[1]}`, options);
      if (reply !== 'OK') throw this.#replyError('D', reply);
      this.#detached = true;
    });
    await this.#end();
  }

  /**
   * Detach if still attached, then close. Idempotent. If the stub refuses to detach, the target is
   * continued before the socket closes: QEMU would otherwise leave the VM paused.
   */
  async close(): Promise<void> {
    if (this.#conn.closed) return;
    if (!this.#detached) {
      try {
        await this.detach({ timeoutMs: 2000 });
        return;
      } catch {
        if (!this.#conn.closed && !this.#conn.running) await this.continue().catch(() => undefined);
      }
    }
    await this.#end();
  }

  /** `D`, or `D;pid` in multiprocess mode (QEMU answers a bare `D` with E22 there). */
  #detachPacket(): string {
    if (this.#features.get('multiprocess') !== true) return 'D';
    const pid = /^p([0-9a-fA-F]+)\./.exec(this.#lastStop?.thread ?? this.#selectedG ?? '');
    return `D;${pid ? pid[1] : '1'}`;
  }

  #end(): Promise<void> {
    return this.#conn.end(new VigilError('vmm', 'state', `GDB client for ${this.address} closed`));
  }

  // ---- wire -----------------------------------------------------------------------------------------

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn, fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  async #selectThread(thread: string | undefined): Promise<void> {
    if (thread === undefined || thread === this.#selectedG) return;
    if (!THREAD_ID.test(thread))
      throw new VigilError('vmm', 'usage', `bad thread id "${sanitize(thread, 40)}"`);
    const reply = await this.#exchange(`Hg${thread}`);
    if (reply !== 'OK') throw this.#replyError(`Hg${thread}`, reply);
    this.#selectedG = thread;
  }

  async #exchange(payload: string, options: ExchangeOptions = {}): Promise<string> {
    return (await this.#conn.exchange(payload, options)).toString('latin1');
  }

  #handleStop(text: string): void {
    let stop: StopReply;
    try {
      stop = parseStopReply(text);
    } catch (e) {
      process.emitWarning(
        `GDB stub sent a malformed stop reply: ${e instanceof Error ? e.message : String(e)}`,
      );
      return;
    }
    this.#lastStop = stop;
    this.#selectedG = undefined; // QEMU makes the stopping vCPU current
    const waiters = [...this.#stopWaiters];
    this.#stopWaiters.clear();
    for (const w of waiters) w.resolve(stop);
    for (const l of [...this.#listeners]) {
      try {
        l(stop);
      } catch (e) {
        process.emitWarning(`GDB stop listener threw: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    for (const s of this.#streams) s.push(stop);
  }

  #nextStop(timeoutMs: number): { promise: Promise<StopReply>; cancel: () => void } {
    let cancel = (): void => undefined;
    const promise = new Promise<StopReply>((resolve, reject) => {
      const waiter = {
        resolve: (s: StopReply) => {
          clearTimeout(timer);
          resolve(s);
        },
        reject: (e: unknown) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.#stopWaiters.delete(waiter);
        reject(new VigilError('vmm', 'timeout', `target did not stop within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#stopWaiters.add(waiter);
      cancel = () => {
        clearTimeout(timer);
        this.#stopWaiters.delete(waiter);
      };
    });
    return { promise, cancel };
  }

  #checkOpen(): void {
    const closed = this.#conn.closed;
    if (closed) throw closed;
  }

  #replyError(what: string, reply: string): VigilError {
    if (reply === '')
      return new VigilError('vmm', 'unsupported', `GDB stub at ${this.address} does not support ${what}`);
    return new VigilError('vmm', 'protocol', `GDB stub rejected ${what}: ${sanitize(reply, 80)}`);
  }
}

/**
 * Split a thread id ("02", or "p01.02" in multiprocess mode) into numbers. QEMU numbers threads
 * vCPU index + 1, so vCPU n is the thread whose `tid` is n + 1.
 */
export function parseThreadId(id: string): { pid?: number; tid: number } {
  const m = THREAD_ID.exec(id);
  if (!m) throw new VigilError('vmm', 'malformed', `bad thread id "${sanitize(id, 40)}"`);
  const tid = parseInt(m[2], 16);
  return m[1] === undefined ? { tid } : { pid: parseInt(m[1], 16), tid };
}

/** X86Registers fields and the target-description names that carry them (64-bit name first). */
const X86_NAMES: [keyof X86Registers, string[]][] = [
  ['rax', ['rax', 'eax']],
  ['rbx', ['rbx', 'ebx']],
  ['rcx', ['rcx', 'ecx']],
  ['rdx', ['rdx', 'edx']],
  ['rsi', ['rsi', 'esi']],
  ['rdi', ['rdi', 'edi']],
  ['rbp', ['rbp', 'ebp']],
  ['rsp', ['rsp', 'esp']],
  ['rip', ['rip', 'eip']],
  ['eflags', ['eflags']],
  ['cs', ['cs']],
  ['fsBase', ['fs_base']],
  ['gsBase', ['gs_base']],
  ['kernelGsBase', ['k_gs_base']],
  ['cr0', ['cr0']],
  ['cr2', ['cr2']],
  ['cr3', ['cr3']],
  ['cr4', ['cr4']],
  ['efer', ['efer']],
];

function checkRange(address: bigint, length: number, max: number): void {
  if (typeof address !== 'bigint' || address < 0n || address > MAX_U64) {
    throw new VigilError('vmm', 'usage', `address ${String(address)} is not an unsigned 64-bit value`);
  }
  if (!Number.isInteger(length) || length < 0 || length > max) {
    throw new VigilError('vmm', 'bound', `length ${length} is outside 0..${max}`);
  }
  if (address + BigInt(length) - 1n > MAX_U64) {
    throw new VigilError(
      'vmm',
      'usage',
      `range at 0x${address.toString(16)} of ${length} bytes wraps around`,
    );
  }
}
