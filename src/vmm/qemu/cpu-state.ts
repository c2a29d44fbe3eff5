// vCPU state QEMU offers through no register interface, read from a device-state snapshot: QMP `migrate`
// to a unix socket vigil listens on, with the `x-ignore-shared` capability so that guest RAM in a shared
// memory backend is not copied (the stream is then ~0.6 MB: device state, firmware ROMs, the vmdesc). The
// guest stops for the last stage of the migration (QEMU's STOP … RESUME, a few milliseconds) and is
// resumed by vigil with `cont` when it was running before; a completed migration leaves the source in
// `postmigrate`, from which `cont` is allowed.
//
// Guarantees: one snapshot at a time per QMP connection; the capability is put back as it was; the socket
// lives in a private (0700) temporary folder that is removed; the stream is held in memory up to a cap —
// past it (guest RAM not shared) the migration is cancelled. A VM running before is running after, also
// when anything fails midway (QEMU itself resumes the VM on a failed or cancelled migration; vigil
// checks and resumes it otherwise). A paused VM is not snapshotted at all: the migration would leave it
// in `postmigrate`, from which QEMU 7.2 refuses any later migration (the user's own included) until it
// runs again.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VigilError, describeSysError, isVigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import type { QmpClient, QmpEvent } from '../qmp/client.js';
import type { MachineCpuState, SyscallEntryMsrs } from '../types.js';
import {
  parseMigrationStream,
  readUnsignedField,
  sectionsNamed,
  type MigrationStream,
} from './migration-stream.js';

/** The QMP calls a snapshot makes (QmpClient has them). */
export type SnapshotQmp = Pick<QmpClient, 'execute' | 'onEvent'>;

export interface SnapshotOptions {
  /** Most stream bytes held (default 32 MiB). A shared-RAM q35 guest sends ~0.6 MB. */
  maxBytes?: number;
  /** Time allowed for the whole snapshot (default 30 s). */
  timeoutMs?: number;
  /** Where the private socket folder is made (default the system temp folder). */
  tmpDir?: string;
}

export interface SnapshotStats {
  /** Stream size in bytes. */
  bytes: number;
  /** How long the guest was stopped (QEMU's STOP to RESUME timestamps), when both events were seen. */
  pausedMs?: number;
  /** Wall time of the whole snapshot, from the first QMP command to the capability restored. */
  totalMs: number;
}

export interface DeviceStateSnapshot extends SnapshotStats {
  stream: Buffer;
}

const DEFAULT_MAX_BYTES = 32 << 20;
const DEFAULT_TIMEOUT_MS = 30_000;
const CAPABILITY = 'x-ignore-shared';
/** Capabilities that change the stream's format or flow in ways this reader does not follow. */
const UNSUPPORTED_CAPABILITIES = [
  'xbzrle',
  'compress',
  'multifd',
  'postcopy-ram',
  'background-snapshot',
  'mapped-ram',
  'x-colo',
  'rdma-pin-all',
];
/** query-migrate states in which no migration is running. */
const IDLE = new Set(['none', 'completed', 'failed', 'cancelled']);
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

interface MigrationCapability {
  capability: string;
  state: boolean;
}

/** Serialises snapshots per QMP connection: QEMU runs one migration at a time. */
const busy = new WeakMap<object, Promise<unknown>>();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Take one device-state snapshot of the VM behind `qmp`. */
export function snapshotDeviceState(
  qmp: SnapshotQmp,
  options: SnapshotOptions = {},
): Promise<DeviceStateSnapshot> {
  const previous = busy.get(qmp) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(() => snapshot(qmp, options));
  busy.set(
    qmp,
    run.catch(() => undefined),
  );
  return run;
}

async function snapshot(qmp: SnapshotQmp, options: SnapshotOptions): Promise<DeviceStateSnapshot> {
  const t0 = performance.now();
  const r = await migrateToMemory(qmp, options);
  return { ...r, totalMs: Math.round(performance.now() - t0) };
}

async function migrateToMemory(
  qmp: SnapshotQmp,
  options: SnapshotOptions,
): Promise<Omit<DeviceStateSnapshot, 'totalMs'>> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS);

  const migration = await queryMigrate(qmp);
  if (!IDLE.has(migration)) {
    throw new VigilError('vmm', 'state', `a migration is in progress (status ${sanitize(migration, 40)})`);
  }
  const caps = await qmp.execute<MigrationCapability[]>('query-migrate-capabilities');
  if (!Array.isArray(caps))
    throw new VigilError('vmm', 'malformed', 'query-migrate-capabilities: not a list');
  const on = (name: string) => caps.some((c) => c?.capability === name && c.state === true);
  const blocking = UNSUPPORTED_CAPABILITIES.filter(on);
  if (blocking.length > 0) {
    throw new VigilError(
      'vmm',
      'unsupported',
      `migration capabilities ${blocking.join(', ')} are on: a device-state snapshot would use a stream ` +
        'format vigil does not read',
    );
  }
  if (!caps.some((c) => c?.capability === CAPABILITY)) {
    throw new VigilError('vmm', 'unsupported', `this QEMU has no migration capability ${CAPABILITY}`);
  }
  const hadCapability = on(CAPABILITY);

  let dir: string;
  try {
    dir = mkdtempSync(join(options.tmpDir ?? tmpdir(), 'vigil-state-'));
  } catch (e) {
    throw new VigilError(
      'vmm',
      'io',
      `cannot make a private folder for the snapshot socket: ${describeSysError(e)}`,
    );
  }
  const path = join(dir, 's');
  const events: QmpEvent[] = [];
  const unsubscribe = qmp.onEvent((e) => {
    if ((e.event === 'STOP' || e.event === 'RESUME') && events.length < 64) events.push(e);
  });
  const receiver = new StreamReceiver(maxBytes);
  let wasRunning = false;
  let migrating = false;
  let resumed = false;
  try {
    await receiver.listen(path);
    const run = await queryStatus(qmp);
    if (!run.running) {
      // A completed migration leaves the VM in postmigrate (block devices inactive), and QEMU 7.2 refuses
      // every later migration from there ("Can't migrate the vm that was paused due to previous
      // migration") until it runs again: a paused VM is left exactly as its user left it.
      throw new VigilError(
        'vmm',
        'state',
        `the VM is not running (${sanitize(run.status, 40)}): a device-state snapshot is only taken of a ` +
          'running VM',
      );
    }
    wasRunning = true;
    if (!hadCapability) await setCapability(qmp, true);
    try {
      await qmp.execute('migrate', { uri: `unix:${path}` });
    } catch (e) {
      throw new VigilError(
        'vmm',
        isVigilError(e) && e.kind === 'timeout' ? 'timeout' : 'unsupported',
        'QEMU refused a device-state snapshot (migrate)',
        { cause: e },
      );
    }
    migrating = true;
    const stream = await receiver.done(Math.max(1, deadline - Date.now()));
    const status = await waitForMigration(qmp, deadline);
    migrating = false;
    if (status !== 'completed') {
      throw new VigilError('vmm', 'io', `the device-state snapshot ended with migration status ${status}`);
    }
    await qmp.execute('cont');
    resumed = true;
    return { stream, bytes: stream.length, ...pauseTime(events) };
  } catch (e) {
    if (migrating) await cancel(qmp, deadline);
    throw e instanceof VigilError && receiver.overflowed
      ? new VigilError(
          'vmm',
          'unsupported',
          `the device-state snapshot exceeded ${sizeText(maxBytes)}: it carries guest RAM, which only stays ` +
            'out of it when RAM is a shared memory backend (memory-backend-file or -memfd with share=on)',
          { cause: e },
        )
      : e;
  } finally {
    receiver.close();
    unsubscribe();
    rmSync(dir, { recursive: true, force: true });
    // Whatever happened: a VM that was running must run again, and the capability goes back.
    if (wasRunning && !resumed) await ensureRunning(qmp);
    if (!hadCapability) await setCapability(qmp, false).catch(() => undefined);
  }
}

const sizeText = (n: number): string => (n >= 1 << 20 ? `${Math.round(n / (1 << 20))} MiB` : `${n} bytes`);

/** How long the guest was stopped, from QEMU's own event timestamps. */
function pauseTime(events: readonly QmpEvent[]): { pausedMs?: number } {
  const stop = events.find((e) => e.event === 'STOP');
  const resume = [...events].reverse().find((e) => e.event === 'RESUME');
  return stop && resume && resume.time >= stop.time ? { pausedMs: resume.time - stop.time } : {};
}

async function queryMigrate(qmp: SnapshotQmp): Promise<string> {
  const r = await qmp.execute<{ status?: unknown }>('query-migrate');
  if (typeof r !== 'object' || r === null)
    throw new VigilError('vmm', 'malformed', 'query-migrate: no object');
  return typeof r.status === 'string' ? r.status : 'none';
}

async function queryStatus(qmp: SnapshotQmp): Promise<{ status: string; running: boolean }> {
  const r = await qmp.execute<{ status?: unknown; running?: unknown }>('query-status');
  if (typeof r !== 'object' || r === null || typeof r.status !== 'string' || typeof r.running !== 'boolean') {
    throw new VigilError('vmm', 'malformed', 'query-status returned an unexpected shape');
  }
  return { status: r.status, running: r.running };
}

async function setCapability(qmp: SnapshotQmp, state: boolean): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: CAPABILITY, state }] });
}

/**
 * Wait until the migration reached a final state and, when completed, the VM its `postmigrate` run state:
 * QEMU marks the migration completed a moment before it changes the run state, and a `cont` in between
 * would race with it.
 */
async function waitForMigration(qmp: SnapshotQmp, deadline: number): Promise<string> {
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    const status = await queryMigrate(qmp);
    if (TERMINAL.has(status)) {
      if (status !== 'completed') return status;
      const run = await queryStatus(qmp);
      if (run.status !== 'finish-migrate') return status;
    }
    if (Date.now() > deadline) {
      throw new VigilError('vmm', 'timeout', `the device-state snapshot did not finish (status ${status})`);
    }
    await sleep(delay);
  }
}

/** Cancel a migration of ours and wait (bounded) until QEMU has let go of it. */
async function cancel(qmp: SnapshotQmp, deadline: number): Promise<void> {
  try {
    await qmp.execute('migrate_cancel');
    const until = Math.max(deadline, Date.now() + 5000);
    for (let delay = 1; Date.now() < until; delay = Math.min(delay * 2, 50)) {
      if (TERMINAL.has(await queryMigrate(qmp))) return;
      await sleep(delay);
    }
  } catch {
    // The connection is gone or QEMU refused: ensureRunning says what it can.
  }
}

/** After a failure: a VM that was running before must be running (QEMU resumes it after failed migrations). */
async function ensureRunning(qmp: SnapshotQmp): Promise<void> {
  try {
    for (let i = 0; i < 50; i++) {
      const s = await queryStatus(qmp);
      if (s.running) return;
      if (s.status === 'postmigrate' || s.status === 'paused') {
        await qmp.execute('cont');
        return;
      }
      // finish-migrate: QEMU is still ending the migration; it resumes the VM itself or leaves postmigrate.
      await sleep(10);
    }
  } catch {
    // Nothing more can be done over a broken connection; the caller's error says what failed.
  }
}

/** The listening end: one connection, its bytes kept up to a cap. */
class StreamReceiver {
  readonly #max: number;
  #server: net.Server | undefined;
  #conn: net.Socket | undefined;
  #chunks: Buffer[] = [];
  #bytes = 0;
  #result: Promise<Buffer> | undefined;
  #settle: { resolve: (b: Buffer) => void; reject: (e: unknown) => void } | undefined;
  overflowed = false;

  constructor(maxBytes: number) {
    this.#max = maxBytes;
    this.#result = new Promise<Buffer>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.#result.catch(() => undefined);
  }

  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: false }, (conn) => this.#accept(conn));
      this.#server = server;
      server.once('error', (e) =>
        reject(new VigilError('vmm', 'io', `cannot listen on ${path}: ${describeSysError(e)}`, { cause: e })),
      );
      server.listen(path, () => {
        server.removeAllListeners('error');
        server.on('error', (e) =>
          this.#fail(new VigilError('vmm', 'io', 'snapshot socket failed', { cause: e })),
        );
        resolve();
      });
    });
  }

  #accept(conn: net.Socket): void {
    // QEMU connects once; nobody else can reach a socket in a 0700 folder, but a second peer is refused.
    if (this.#conn) {
      conn.destroy();
      return;
    }
    this.#conn = conn;
    this.#server?.close();
    conn.on('data', (chunk: Buffer) => {
      this.#bytes += chunk.length;
      if (this.#bytes > this.#max) {
        this.overflowed = true;
        conn.destroy();
        this.#fail(new VigilError('vmm', 'bound', `device-state stream over ${this.#max} bytes`));
        return;
      }
      this.#chunks.push(chunk);
    });
    conn.on('end', () => this.#settle?.resolve(Buffer.concat(this.#chunks, this.#bytes)));
    conn.on('error', (e) => this.#fail(new VigilError('vmm', 'io', 'snapshot stream failed', { cause: e })));
    conn.on('close', () => this.#fail(new VigilError('vmm', 'io', 'snapshot stream closed before its end')));
  }

  #fail(e: VigilError): void {
    this.#settle?.reject(e);
  }

  /** The whole stream, once QEMU closed its end. */
  async done(timeoutMs: number): Promise<Buffer> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new VigilError('vmm', 'timeout', `no complete device-state stream within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.#result!, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.#conn?.destroy();
    this.#server?.close();
    this.#chunks = [];
  }
}

// ---- x86 vCPU registers from the `cpu` sections ---------------------------------------------------------

/** MSR_LSTAR, MSR_CSTAR, MSR_STAR and SYSENTER_EIP of every vCPU (vmstate `cpu`, target/i386/machine.c). */
export function x86SyscallMsrs(stream: MigrationStream): SyscallEntryMsrs[] {
  const cpus = sectionsNamed(stream, 'cpu').sort((a, b) => a.instanceId - b.instanceId);
  if (cpus.length === 0)
    throw new VigilError('vmm', 'not-found', 'the device state holds no vCPU (no cpu section)');
  return cpus.map((cpu) => {
    const lstar = readUnsignedField(stream, cpu, 'env.lstar');
    if (lstar === undefined) {
      throw new VigilError('vmm', 'unsupported', 'the vCPU state has no env.lstar: not a 64-bit x86 guest');
    }
    const out: SyscallEntryMsrs = { vcpu: cpu.instanceId, lstar };
    const cstar = readUnsignedField(stream, cpu, 'env.cstar');
    const star = readUnsignedField(stream, cpu, 'env.star');
    const sysenterEip = readUnsignedField(stream, cpu, 'env.sysenter_eip');
    if (cstar !== undefined) out.cstar = cstar;
    if (star !== undefined) out.star = star;
    if (sysenterEip !== undefined) out.sysenterEip = sysenterEip;
    return out;
  });
}

/** MachineCpuState for a QEMU VM: each call takes a fresh snapshot. */
export class QemuCpuState implements MachineCpuState {
  readonly #qmp: SnapshotQmp;
  readonly #options: SnapshotOptions;
  /** Size and times of the latest snapshot, for logs and benchmarks. */
  last: SnapshotStats | undefined;

  constructor(qmp: SnapshotQmp, options: SnapshotOptions = {}) {
    this.#qmp = qmp;
    this.#options = options;
  }

  async syscallEntryMsrs(): Promise<readonly SyscallEntryMsrs[]> {
    const t0 = performance.now();
    const snap = await snapshotDeviceState(this.#qmp, this.#options);
    const msrs = x86SyscallMsrs(parseMigrationStream(snap.stream));
    this.last = {
      bytes: snap.bytes,
      totalMs: Math.round(performance.now() - t0),
      ...(snap.pausedMs !== undefined ? { pausedMs: snap.pausedMs } : {}),
    };
    return msrs;
  }
}
