// The state file of a running lab guest (<cache>/run/<name>/state.json) and the checks that a recorded
// QEMU process is still ours: a PID alone can be reused, so its command line must name our pidfile.
import { existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VigilError } from '../util/errors.js';
import type { KernelFlavour } from './kernel.js';
import { guestDir, runRoot } from './paths.js';
import type { Accel } from './qemu.js';

export interface GuestState {
  version: 1;
  name: string;
  /** QEMU's PID (from its pidfile). */
  pid: number;
  dir: string;
  pidfile: string;
  qmp: string;
  serial: string;
  /** qemu-guest-agent's socket; absent in the state of a guest booted before the lab had an agent. */
  qga?: string;
  gdbPort: number;
  /** Guest RAM as a file (shared memory backend) and its size. */
  memoryFile: string;
  memory: string;
  memoryBytes: number;
  accel: Accel;
  cpu: string;
  flavour: KernelFlavour;
  kernelRelease: string;
  kernel: string;
  initrd: string;
  append: string;
  /** Paging levels the guest kernel is expected to use (5 when the vCPU offers LA57). */
  paging: 4 | 5;
  startedAt: string;
  /** False while booting; true once the console shell answered. */
  ready: boolean;
  /** Milliseconds from starting QEMU to a responsive shell. */
  bootMs?: number;
}

export const stateFile = (name: string): string => join(guestDir(name), 'state.json');

export function writeState(s: GuestState): void {
  const p = stateFile(s.name);
  writeFileSync(`${p}.tmp`, JSON.stringify(s, null, 2) + '\n');
  renameSync(`${p}.tmp`, p);
}

export function readState(name: string): GuestState | undefined {
  const p = stateFile(name);
  if (!existsSync(p)) return undefined;
  try {
    const s = JSON.parse(readFileSync(p, 'utf8')) as GuestState;
    if (s.version !== 1 || s.name !== name || !Number.isInteger(s.pid)) throw new Error('unexpected content');
    return s;
  } catch (e) {
    throw new VigilError('lab', 'malformed', `guest state ${p} is unreadable (remove it)`, { cause: e });
  }
}

/** Names of all guests with a state folder. */
export function guestNames(): string[] {
  try {
    return readdirSync(runRoot(), { withFileTypes: true })
      .filter((e) => e.isDirectory() && existsSync(join(runRoot(), e.name, 'state.json')))
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
}

/** True when `pid` is alive and is the QEMU started with `pidfile` (not a reused PID). */
export function isOurQemu(pid: number, pidfile: string): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(state)) return false; // a zombie is not running
    return cmdline.includes(pidfile);
  } catch {
    return false;
  }
}

export function isRunning(s: GuestState): boolean {
  return isOurQemu(s.pid, s.pidfile);
}
