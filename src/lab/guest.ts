// Lab guests: boot a named QEMU guest from the lab image, wait until its console shell answers, run
// commands on it, stop it. Each guest has a state folder (<cache>/run/<name>/) with its sockets, pidfile and
// state.json; its RAM is /dev/shm/vigil-<name>. QEMU is only ever ended by the PID from its own pidfile.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { VigilError, describeSysError } from '../util/errors.js';
import { buildLab } from './build.js';
import { checkFlavour, type KernelFlavour, type Progress } from './kernel.js';
import { withGuestLock } from './lock.js';
import { checkGuestName, guestDir } from './paths.js';
import { requireProgram, run } from './proc.js';
import { expectedPaging, parseMemorySize, qemuArgs, type Accel } from './qemu.js';
import { serialExec, waitForMarker, type ExecResult } from './serial.js';
import { guestNames, isRunning, readState, writeState, type GuestState } from './state.js';

export const DEFAULT_GUEST_NAME = 'vigil-lab';
export const READY_MARKER = 'VIGIL-READY';

export interface BootOptions {
  name?: string;
  /** e.g. 256M (default), 3G. */
  memory?: string;
  accel?: Accel;
  /** QEMU CPU model, default `max` (LA57 under TCG: 5-level paging); `max,la57=off` for 4-level. */
  cpu?: string;
  flavour?: KernelFlavour;
  /** Boot these instead of the lab image (tests, custom kernels); `kernelRelease` then names the kernel. */
  kernel?: string;
  initrd?: string;
  kernelRelease?: string;
  /** Kernel command line, default "console=ttyS0 panic=-1 quiet". */
  append?: string;
  /** Time allowed from starting QEMU to a responsive shell; default 120 s (TCG), 240 s above 1 GiB. */
  readyTimeoutMs?: number;
  progress?: Progress;
  /** Called with QEMU's PID as soon as it is known (tests check that a failed boot leaves no process). */
  onPid?: (pid: number) => void;
}

const DEFAULT_APPEND = 'console=ttyS0 panic=-1 quiet';

/** A free TCP port on 127.0.0.1 for the GDB stub. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The state of a guest if its QEMU is running; a stale state (QEMU gone) is cleaned up. */
export function guestStatus(name: string = DEFAULT_GUEST_NAME): GuestState | undefined {
  const s = readState(checkGuestName(name));
  if (!s) return undefined;
  if (isRunning(s)) {
    if (existsSync(s.memoryFile)) return s;
    // Its RAM file was removed under it (a tmpfs cleanup, a guest of the same name under another cache
    // root): vigil can no longer read this guest, so it is ended, by its PID, and booted afresh.
    try {
      process.kill(s.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  cleanup(s.name, s.memoryFile);
  return undefined;
}

/** Every running guest (stale states are cleaned up). */
export function listGuests(): GuestState[] {
  const out: GuestState[] = [];
  for (const name of guestNames()) {
    try {
      const s = guestStatus(name);
      if (s) out.push(s);
    } catch {
      // an unreadable state of some other guest must not hide the rest
    }
  }
  return out;
}

function cleanup(name: string, memoryFile?: string): void {
  if (memoryFile) rmSync(memoryFile, { force: true });
  rmSync(guestDir(name), { recursive: true, force: true });
}

async function killPid(pid: number, pidfile: string, timeoutMs = 10_000): Promise<void> {
  const alive = () => {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return cmd.includes(pidfile) && !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  if (!alive()) return;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(pid, sig);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ESRCH') throw e;
    }
  };
  signal('SIGTERM');
  const t0 = Date.now();
  while (alive()) {
    if (Date.now() - t0 > timeoutMs) {
      signal('SIGKILL');
      await sleep(200);
      if (Date.now() - t0 > timeoutMs + 5_000) {
        throw new VigilError('lab', 'timeout', `QEMU pid ${pid} did not exit after SIGKILL`);
      }
    }
    await sleep(50);
  }
}

/** Stop a guest: end its QEMU by PID, wait for it, remove its RAM file, sockets and state. */
export async function stopGuest(name: string = DEFAULT_GUEST_NAME): Promise<boolean> {
  const s = readState(checkGuestName(name));
  if (!s) {
    cleanup(name);
    return false;
  }
  const wasRunning = isRunning(s);
  await killPid(s.pid, s.pidfile);
  cleanup(s.name, s.memoryFile);
  return wasRunning;
}

/** Stop every guest whose name starts with `prefix`; returns the names stopped. */
export async function stopGuests(prefix = ''): Promise<string[]> {
  const stopped: string[] = [];
  for (const name of guestNames()) {
    if (name.startsWith(prefix)) {
      await stopGuest(name);
      stopped.push(name);
    }
  }
  return stopped;
}

function readyTimeout(opts: BootOptions): number {
  return opts.readyTimeoutMs ?? (parseMemorySize(opts.memory ?? '256M') > 1 << 30 ? 240_000 : 120_000);
}

/** Boot a guest and wait until its console shell answers. Fails if a guest of that name runs already. */
export async function bootGuest(opts: BootOptions = {}): Promise<GuestState> {
  const name = checkGuestName(opts.name ?? DEFAULT_GUEST_NAME);
  return withGuestLock(name, readyTimeout(opts) + 60_000, () => bootUnlocked(opts));
}

/** What a differing running guest should do in ensureGuest: be stopped and rebooted, or be kept. */
export type OnDifferent = 'reboot' | 'keep';

/** The first option in which a running guest differs from what is asked, or undefined. */
export function guestDiffers(
  s: GuestState,
  opts: BootOptions,
  image?: { kernel: string; initrd: string },
): string | undefined {
  const want: [string, unknown, unknown][] = [
    ['memory', parseMemorySize(opts.memory ?? '256M'), s.memoryBytes],
    ['accel', opts.accel ?? 'tcg', s.accel],
    ['cpu', opts.cpu ?? 'max', s.cpu],
    ['flavour', opts.flavour ?? 'amd64', s.flavour],
    ['kernel', opts.kernel ?? image?.kernel ?? s.kernel, s.kernel],
    ['initrd', opts.initrd ?? image?.initrd ?? s.initrd, s.initrd],
    ['append', opts.append ?? DEFAULT_APPEND, s.append],
    ['guest agent port', true, s.qga !== undefined],
  ];
  const diff = want.find(([, a, b]) => a !== b);
  return diff ? `${diff[0]} ${String(diff[2])} instead of ${String(diff[1])}` : undefined;
}

/**
 * A running guest of that name, or a freshly booted one: safe to call from parallel processes (one boots,
 * the others wait and reuse). A running guest with other options (memory, cpu, kernel, a rebuilt initramfs…)
 * is rebooted, or kept as it is with `onDifferent: 'keep'`.
 */
export async function ensureGuest(
  opts: BootOptions & { onDifferent?: OnDifferent } = {},
): Promise<{ state: GuestState; reused: boolean }> {
  const name = checkGuestName(opts.name ?? DEFAULT_GUEST_NAME);
  const progress = opts.progress ?? (() => {});
  return withGuestLock(name, readyTimeout(opts) + 60_000, async () => {
    const running = guestStatus(name);
    if (running && running.ready) {
      if (opts.onDifferent === 'keep') return { state: running, reused: true };
      const image =
        opts.kernel && opts.initrd
          ? undefined
          : await buildLab({ flavour: opts.flavour ?? 'amd64', progress });
      const why = guestDiffers(running, opts, image);
      if (!why) return { state: running, reused: true };
      progress(`guest ${name} runs with ${why}: rebooting it`);
    }
    if (running) await stopGuest(name);
    return { state: await bootUnlocked(opts), reused: false };
  });
}

async function bootUnlocked(opts: BootOptions): Promise<GuestState> {
  const name = checkGuestName(opts.name ?? DEFAULT_GUEST_NAME);
  const progress = opts.progress ?? (() => {});
  const accel = opts.accel ?? 'tcg';
  if (accel !== 'tcg' && accel !== 'kvm')
    throw new VigilError('lab', 'usage', `bad accel "${accel}": tcg or kvm`);
  const cpu = opts.cpu ?? 'max';
  const memory = opts.memory ?? '256M';
  const memoryBytes = parseMemorySize(memory);
  const flavour = checkFlavour(opts.flavour ?? 'amd64');
  const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');

  const existing = guestStatus(name);
  if (existing)
    throw new VigilError('lab', 'state', `guest ${name} is already running (pid ${existing.pid})`);

  let kernel = opts.kernel;
  let initrd = opts.initrd;
  let kernelRelease = opts.kernelRelease ?? 'unknown';
  if (!kernel || !initrd) {
    const image = await buildLab({ flavour, progress });
    kernel ??= image.kernel;
    initrd ??= image.initrd;
    kernelRelease = opts.kernelRelease ?? image.release;
  }

  cleanup(name);
  const dir = guestDir(name);
  mkdirSync(dir, { recursive: true });
  const serial = join(dir, 'serial.sock');
  if (Buffer.byteLength(serial) > 100) {
    throw new VigilError(
      'lab',
      'usage',
      `state folder path too long for a unix socket: ${dir} (set VIGIL_CACHE)`,
    );
  }
  const state: GuestState = {
    version: 1,
    name,
    pid: 0,
    dir,
    pidfile: join(dir, 'qemu.pid'),
    qmp: join(dir, 'qmp.sock'),
    serial,
    qga: join(dir, 'qga.sock'),
    gdbPort: await freePort(),
    memoryFile: `/dev/shm/vigil-${name}`,
    memory: `${memoryBytes / (1 << 20)}M`,
    memoryBytes,
    accel,
    cpu,
    flavour,
    kernelRelease,
    kernel,
    initrd,
    append: opts.append ?? DEFAULT_APPEND,
    paging: expectedPaging(accel, cpu),
    startedAt: new Date().toISOString(),
    ready: false,
  };
  rmSync(state.memoryFile, { force: true });

  progress(`booting ${name} (${state.memory}, ${accel}, cpu ${cpu}, kernel ${kernelRelease})…`);
  const t0 = performance.now();
  try {
    await run(qemu, qemuArgs({ ...state, qga: state.qga as string, kernel, initrd }), { timeoutMs: 60_000 });
  } catch (e) {
    // -daemonize: QEMU exits non-zero before forking off the guest when it cannot start it.
    cleanup(name, state.memoryFile);
    throw new VigilError('lab', 'io', `QEMU could not start guest ${name}`, { cause: e });
  }
  const pid = Number(readFileSync(state.pidfile, 'utf8').trim());
  state.pid = pid;
  opts.onPid?.(pid);
  writeState(state);

  const timeoutMs = readyTimeout(opts);
  const deadline = Date.now() + timeoutMs;
  try {
    const dead = () => (isRunning(state) ? undefined : `QEMU (pid ${pid}) exited during boot`);
    await waitForMarker(serial, READY_MARKER, timeoutMs, dead);
    // The marker comes from the shell's start-up file: one round trip proves the shell reads commands.
    const probe = await serialExec(serial, 'echo ok', { timeoutMs: Math.max(1_000, deadline - Date.now()) });
    if (probe.output.trim() !== 'ok') {
      throw new VigilError('lab', 'protocol', `unexpected console answer ${JSON.stringify(probe.output)}`);
    }
  } catch (e) {
    await killPid(pid, state.pidfile).catch(() => undefined);
    cleanup(name, state.memoryFile);
    const why = e instanceof VigilError ? e.message : describeSysError(e);
    throw new VigilError(
      'lab',
      e instanceof VigilError ? e.kind : 'io',
      `guest ${name} did not become ready (QEMU pid ${pid} stopped): ${why}`,
      { cause: e },
    );
  }
  state.ready = true;
  state.bootMs = Math.round(performance.now() - t0);
  writeState(state);
  progress(`ready in ${(state.bootMs / 1000).toFixed(1)} s`);
  return state;
}

/** Run one short shell command on a guest's console. */
export async function execInGuest(
  guest: string | GuestState,
  command: string,
  opts: { timeoutMs?: number } = {},
): Promise<ExecResult> {
  const name = typeof guest === 'string' ? guest : guest.name;
  const s = typeof guest === 'string' ? guestStatus(guest) : isRunning(guest) ? guest : undefined;
  if (!s) throw new VigilError('lab', 'not-found', `guest ${name} is not running (vigil lab up)`);
  if (!s.ready) throw new VigilError('lab', 'state', `guest ${s.name} is still booting`);
  if (!existsSync(s.serial))
    throw new VigilError('lab', 'not-found', `guest ${s.name} has no console socket`);
  return serialExec(s.serial, command, opts);
}
