// QEMU's GDB stub as a Machine's `debug`: a GdbClient plus the QMP view of the run state, so that vigil can
// set watchpoints on a VM it does not own without ever leaving it stopped, and without resuming a VM that
// someone else paused.
//
// QEMU facts this follows (7.2, checked on the lab guest):
// - `-gdb tcp:HOST:PORT` (or `-s`) creates a chardev labelled "gdb"; `query-chardev` shows its address as
//   "disconnected:tcp:127.0.0.1:1234,server=on" while free and "tcp:…,server=on <-> PEER" while a debugger
//   is attached. The stub serves one client at a time: a second one waits in the listen backlog.
// - Attaching pauses the VM (QMP STOP, status "paused"); `D` resumes it whatever its state before.
// - A watchpoint or breakpoint hit stops the VM with status "debug"; a QMP `stop` sends the debugger a
//   stop reply (T02) and status "paused"; a QMP `cont` resumes the VM without telling the debugger, which
//   then believes it stopped: the next packet it sends stops the VM again (the stub swallows it; the
//   client resends it). So whether the VM runs is asked of QMP, never assumed from the client.
// - Operations that need the VM stopped run one at a time (`whileStopped`), so a hit handled in the
//   background and a disarm or a detach never interleave their packets.

import { AsyncLocalStorage } from 'node:async_hooks';
import { VigilError, isVigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import { GdbClient, type Breakpoint, type GdbClientOptions, type StopReply } from '../gdb/client.js';
import type { QmpStatus } from '../qmp/types.js';
import type { DebugHandle, MachineDebug, X86Registers } from '../types.js';

/** Where the stub listens, as `query-chardev` reports it. */
export interface GdbChardev {
  /** "host:port" or a unix socket path, as GdbClient.connect takes it. */
  address: string;
  /** A debugger is attached right now (QEMU serves one). */
  busy: boolean;
  /** The chardev's filename as QEMU printed it (sanitised). */
  filename: string;
}

const CHARDEV = /^(?:disconnected:)?(tcp|unix):(.*?)(,server=on)?(?:,[a-z-]+=[^,\s]*)*(?: <-> (.*))?$/;

/** The stub address from a "gdb" chardev's filename; undefined for forms vigil cannot use (telnet, fd). */
export function parseGdbChardev(filename: string): GdbChardev | undefined {
  const m = CHARDEV.exec(filename);
  if (!m || m[3] === undefined) return undefined; // not a listening socket: nothing to connect to
  const busy = m[4] !== undefined;
  const shown = sanitize(filename, 200);
  if (m[1] === 'unix') return m[2] ? { address: `unix:${m[2]}`, busy, filename: shown } : undefined;
  const colon = m[2].lastIndexOf(':');
  if (colon < 0) return undefined;
  let host = m[2].slice(0, colon);
  const port = m[2].slice(colon + 1);
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return undefined;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  // A stub listening on every address is reached on loopback.
  if (host === '' || host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  return { address: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`, busy, filename: shown };
}

/** What discovery needs of QMP. */
export interface ChardevQmp {
  execute<T = unknown>(command: string): Promise<T>;
}

/** The GDB stub QEMU was started with (`-gdb` / `-s`), from `query-chardev`; undefined when it has none. */
export async function findGdbStub(qmp: ChardevQmp): Promise<GdbChardev | undefined> {
  const list = await qmp.execute<unknown>('query-chardev');
  if (!Array.isArray(list)) return undefined;
  for (const c of list.slice(0, 1024) as { label?: unknown; filename?: unknown }[]) {
    if (c && c.label === 'gdb' && typeof c.filename === 'string') return parseGdbChardev(c.filename);
  }
  return undefined;
}

/** What the stub session needs of QMP. */
export interface StubQmp extends ChardevQmp {
  queryStatus(): Promise<QmpStatus>;
  stop(): Promise<void>;
}

/** What the stub session needs of a GDB client (GdbClient has it; tests pass a fake). */
export interface StubClient {
  readonly address: string;
  readonly running: boolean;
  readonly connected: boolean;
  continue(): Promise<void>;
  interrupt(options?: { timeoutMs?: number }): Promise<StopReply>;
  insertBreakpoint(type: Breakpoint['type'], address: bigint, kind?: number): Promise<Breakpoint>;
  onStop(listener: (s: StopReply) => void): () => void;
  readX86Registers(options?: { thread?: string }): Promise<X86Registers>;
  readMemory(address: bigint, length: number, options?: { thread?: string }): Promise<Buffer>;
  close(): Promise<void>;
}

export interface AttachOptions extends GdbClientOptions {
  /** Connect with this instead of GdbClient.connect (tests). */
  connect?(address: string, options: GdbClientOptions): Promise<StubClient>;
}

export class QemuGdbStub implements MachineDebug {
  readonly #client: StubClient;
  readonly #qmp: StubQmp;
  readonly #unit = new AsyncLocalStorage<true>();
  #lock: Promise<unknown> = Promise.resolve();
  #closing: Promise<void> | undefined;
  /**
   * The VM is kept stopped at a hit on purpose (a pause response): it stays stopped when vigil detaches.
   * Cleared by continue().
   */
  held = false;

  constructor(client: StubClient, qmp: StubQmp) {
    this.#client = client;
    this.#qmp = qmp;
  }

  /**
   * Attach to the stub at `address` ("auto": the one `query-chardev` names). Attaching pauses the VM: it is
   * continued at once if it was running. Fails with a VigilError saying why (no stub, another debugger).
   */
  static async attach(qmp: StubQmp, address: string, options: AttachOptions = {}): Promise<QemuGdbStub> {
    const found = await findGdbStub(qmp).catch(() => undefined);
    if (address === 'auto') {
      if (!found) {
        throw new VigilError(
          'vmm',
          'not-found',
          'QEMU has no GDB stub (start it with -gdb tcp:127.0.0.1:PORT)',
        );
      }
      address = found.address;
    }
    if (found?.busy && sameAddress(found.address, address)) {
      throw new VigilError(
        'vmm',
        'state',
        `GDB stub at ${address} is in use by another debugger (${found.filename}); it serves one at a time`,
      );
    }
    const before = await qmp.queryStatus();
    const { connect: connectWith, ...clientOptions } = options;
    const client = await (connectWith ?? GdbClient.connect)(address, clientOptions);
    try {
      if (before.running && !client.running) await client.continue();
    } catch (e) {
      await client.close().catch(() => undefined);
      throw e;
    }
    return new QemuGdbStub(client, qmp);
  }

  get address(): string {
    return this.#client.address;
  }

  get connected(): boolean {
    return this.#client.connected;
  }

  /** The client's view: true after a continue until a stop reply. A QMP `cont` does not set it. */
  get running(): boolean {
    return this.#client.running;
  }

  /**
   * Run `fn` with the VM stopped, one such run at a time: interrupt it if it runs, continue it afterwards
   * if it ran before. Whether it ran is QMP's word (the client cannot know of a QMP `cont`). Nested calls
   * (from within `fn`) run at once.
   */
  whileStopped<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#unit.getStore()) return fn(); // the enclosing run keeps the VM stopped
    return this.#exclusive(async () => {
      const c = this.#client;
      const wasRunning = c.running || (await this.#vmRunning());
      if (c.running) await c.interrupt();
      // Resumed behind the client's back: its next packet stops the VM (swallowed, then resent).
      try {
        return await fn();
      } finally {
        if (wasRunning && c.connected && !c.running) await c.continue();
      }
    });
  }

  /** Continue the VM (nothing when the client already has it running). */
  continue(): Promise<void> {
    return this.#exclusive(async () => {
      this.held = false;
      if (!this.#client.running) await this.#client.continue();
    });
  }

  onStop(listener: (s: StopReply) => void): () => void {
    return this.#client.onStop(listener);
  }

  /** Registers of one vCPU ("p01.01" from a stop reply); the VM must be stopped (whileStopped). */
  registers(thread?: string): Promise<X86Registers> {
    return this.#client.readX86Registers(thread !== undefined ? { thread } : {});
  }

  /** Virtual memory through one vCPU's page tables; the VM must be stopped (whileStopped). */
  readMemory(va: bigint, length: number, thread?: string): Promise<Buffer> {
    return this.#client.readMemory(va, length, thread !== undefined ? { thread } : {});
  }

  /** MachineDebug: a write, read or access watchpoint; the VM keeps its run state. */
  watch(va: bigint, len: number, kind: 'w' | 'r' | 'rw'): Promise<DebugHandle> {
    const type = kind === 'w' ? 'write' : kind === 'r' ? 'read' : 'access';
    return this.whileStopped(() => this.#client.insertBreakpoint(type, va, len)).then((bp) =>
      this.#handle(bp),
    );
  }

  /** MachineDebug: a software breakpoint; the VM keeps its run state. */
  breakpoint(va: bigint): Promise<DebugHandle> {
    return this.whileStopped(() => this.#client.insertBreakpoint('software', va, 1)).then((bp) =>
      this.#handle(bp),
    );
  }

  /**
   * Remove every breakpoint and detach (QEMU resumes the VM). A VM that was paused — by a person, by a
   * pause response, or held at a hit for one — is paused again right after, through QMP.
   */
  close(): Promise<void> {
    this.#closing ??= this.#exclusive(async () => {
      if (!this.#client.connected) return;
      const st = await this.#qmp.queryStatus().catch(() => undefined);
      // "debug" is a hit of ours being handled (let it run) unless it is held for a pause response.
      const keepPaused = st !== undefined && !st.running && (st.status !== 'debug' || this.held);
      await this.#client.close();
      if (keepPaused) await this.#qmp.stop().catch(() => undefined);
    });
    return this.#closing;
  }

  #handle(bp: Breakpoint): DebugHandle {
    return { remove: () => this.whileStopped(() => bp.remove()) };
  }

  async #vmRunning(): Promise<boolean> {
    try {
      return (await this.#qmp.queryStatus()).running;
    } catch (e) {
      if (!isVigilError(e)) throw e;
      return this.#client.running; // QMP is down: the client's view is all there is
    }
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#unit.getStore()) return fn();
    const run = this.#lock.then(() => this.#unit.run(true, fn));
    this.#lock = run.catch(() => undefined);
    return run;
  }
}

function sameAddress(a: string, b: string): boolean {
  const norm = (s: string) => s.replace(/^unix:/, '').replace(/^localhost:/, '127.0.0.1:');
  return norm(a) === norm(b);
}

/** Attach the stub for connectQemu: never fails the connection, says why there is none instead. */
export async function attachGdbStub(
  qmp: StubQmp,
  address: string,
  options: AttachOptions = {},
): Promise<{ stub?: QemuGdbStub; problem?: string }> {
  try {
    return { stub: await QemuGdbStub.attach(qmp, address, options) };
  } catch (e) {
    const why = isVigilError(e) ? e.message : e instanceof Error ? e.message : String(e);
    return { problem: sanitize(why, 300) };
  }
}
