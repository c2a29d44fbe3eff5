// Test support for end-to-end suites: shared lab guests (booted once, reused by every test file and left
// running; scripts/test.mjs shuts them down at the end with down-all), console commands, and ground truth
// about processes from the guest's own /proc.
import { connect } from 'node:net';
import {
  ensureGuest,
  execInGuest,
  stopGuests,
  type BootOptions,
  type ExecResult,
  type GuestState,
} from '../../src/lab/index.js';

/** Every test guest's name starts with this, so that the test runner can stop them all. */
export const TEST_GUEST_PREFIX = 'vigil-test-';

export type SharedGuestOptions = Omit<BootOptions, 'name' | 'progress' | 'onPid'>;

/**
 * The running guest `name` (which must start with "vigil-test-"), booting it if it is not running or runs
 * with other options. Parallel callers share one boot. Tests never stop a shared guest.
 */
export async function sharedGuest(name: string, opts: SharedGuestOptions = {}): Promise<GuestState> {
  if (!name.startsWith(TEST_GUEST_PREFIX)) {
    throw new Error(
      `test guest names start with "${TEST_GUEST_PREFIX}" (got "${name}"), so down-all finds them`,
    );
  }
  const { state } = await ensureGuest({
    ...opts,
    name,
    progress: (line) => process.stderr.write(`[lab ${name}] ${line}\n`),
  });
  return state;
}

/** Run one short shell command on the guest console. */
export function guestExec(guest: GuestState | string, cmd: string, timeoutMs = 60_000): Promise<ExecResult> {
  return execInGuest(guest, cmd, { timeoutMs });
}

/** Run a command that must succeed; returns its output. */
export async function guestRun(guest: GuestState | string, cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await guestExec(guest, cmd, timeoutMs);
  if (r.exitCode !== 0) {
    throw new Error(`guest command "${cmd}" exited with ${r.exitCode}: ${r.output.slice(0, 500)}`);
  }
  return r.output;
}

/** Type a command on the console without waiting for an answer (`reboot -f` gives none). */
export function consoleWrite(g: GuestState, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(g.serial);
    s.once('error', reject);
    s.once('connect', () => s.end(text, () => setTimeout(resolve, 200)));
  });
}

/** Wait until the guest's shell answers again (after a reboot). */
export async function consoleBack(g: GuestState, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await guestExec(g, 'echo ok', 10_000);
      if (r.output.trim() === 'ok') return;
    } catch {
      // still booting
    }
    if (Date.now() > deadline) throw new Error(`guest ${g.name} console did not come back`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface GuestProcess {
  pid: number;
  ppid: number;
  /** Real uid. */
  uid: number;
  /** One-letter state from /proc/PID/stat (R, S, I, Z…). */
  state: string;
  comm: string;
}

/** Parse lab/scripts/vigil-ps output, dropping the line of vigil-ps itself. */
export function parseVigilPs(text: string): GuestProcess[] {
  let self = -1;
  const out: GuestProcess[] = [];
  for (const line of text.split('\n')) {
    const s = /^self (\d+)$/.exec(line);
    if (s) {
      self = Number(s[1]);
      continue;
    }
    const m = /^(\d+) (\d+) (\d+) (\S) (.*)$/.exec(line);
    if (!m) continue;
    const p = { pid: Number(m[1]), ppid: Number(m[2]), uid: Number(m[3]), state: m[4], comm: m[5] };
    if (p.pid !== self) out.push(p);
  }
  if (self < 0) throw new Error('vigil-ps output has no "self" line');
  return out.sort((a, b) => a.pid - b.pid);
}

/** The guest's processes as its own /proc sees them (kernel threads included), sorted by PID. */
export async function groundTruthPs(guest: GuestState | string): Promise<GuestProcess[]> {
  return parseVigilPs(await guestRun(guest, 'vigil-ps'));
}

/** Stop every lab guest whose name starts with `prefix` (default: the test guests). */
export function downAll(prefix = TEST_GUEST_PREFIX): Promise<string[]> {
  return stopGuests(prefix);
}
