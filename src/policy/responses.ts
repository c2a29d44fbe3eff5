// Responses (Livewire's "suspend" and "checkpoint"): what vigil does beyond alerting when a policy fires.
// Each is recorded in the alert's `response` list, including the ones that could not be done (no VM
// control on a dump). Responses only ever pause, resume-by-QEMU and read the VM: vigil never writes
// guest memory.
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describeSysError } from '../util/errors.js';
import type { MachineControl } from '../vmm/types.js';
import { stateRoot, vmFileName } from './baseline.js';
import type { Clock } from './policy.js';
import type { Alert, AlertResponseRecord } from './types.js';

/**
 * - alert: deliver the alert only.
 * - pause: stop the vCPUs so the attacker cannot continue; the VM stays paused for a person to look.
 * - dump: write an ELF core of guest memory, then let the VM run on. QEMU's dump-guest-memory stops the
 *   VM for the duration of the dump and restarts it afterwards, so the image is consistent without a
 *   pause of our own.
 * - dump-and-pause: pause first (nothing runs between the alert and the image), dump, stay paused.
 */
export type ResponseMode = 'alert' | 'pause' | 'dump' | 'dump-and-pause';
export const RESPONSE_MODES: readonly ResponseMode[] = ['alert', 'pause', 'dump', 'dump-and-pause'];

export interface ResponderOptions {
  vm: string;
  /** VM control, or undefined when the target has none (a dump). */
  control?: MachineControl;
  /** Why there is no control, for the record: e.g. "target is a memory dump". */
  noControlReason?: string;
  /** Where dumps go; default <state root>/dumps. */
  dumpDir?: string;
  /**
   * At most one dump per this many milliseconds (default 60 s), and at most `maxDumps` (default 10) per
   * engine: a guest that can trigger alerts at will must not be able to fill the host's disk with images.
   */
  minDumpIntervalMs?: number;
  maxDumps?: number;
  /** Time limits for control commands (defaults 10 s for pause, 10 min for a dump). */
  pauseTimeoutMs?: number;
  dumpTimeoutMs?: number;
  clock: Clock;
}

export class Responder {
  readonly dumpDir: string;
  /** Paths of the dumps written so far. */
  readonly dumps: string[] = [];
  readonly #o: ResponderOptions;
  #lastDumpAt: number | undefined;
  /** Within one batch (a sweep, one event) several alerts share one pause and one dump. */
  #batchPaused = false;
  #batchDump: AlertResponseRecord | undefined;

  constructor(options: ResponderOptions) {
    this.#o = options;
    this.dumpDir = resolve(options.dumpDir ?? join(stateRoot(), 'dumps'));
  }

  /** Start a new batch: the next dump or pause request acts again. */
  beginBatch(): void {
    this.#batchPaused = false;
    this.#batchDump = undefined;
  }

  async respond(alert: Alert, mode: ResponseMode): Promise<AlertResponseRecord[]> {
    const records: AlertResponseRecord[] = [{ action: 'alert', ok: true }];
    if (mode === 'alert') return records;
    const control = this.#o.control;
    if (!control) {
      const why = `no VM control: ${this.#o.noControlReason ?? 'the target offers none'}`;
      if (mode !== 'dump') records.push({ action: 'pause', ok: false, detail: why });
      if (mode !== 'pause') records.push({ action: 'dump', ok: false, detail: why });
      return records;
    }
    if (mode === 'pause' || mode === 'dump-and-pause') records.push(await this.#pause(control));
    if (mode === 'dump' || mode === 'dump-and-pause') records.push(await this.#dump(control, alert));
    return records;
  }

  async #pause(control: MachineControl): Promise<AlertResponseRecord> {
    if (this.#batchPaused) return { action: 'pause', ok: true, detail: 'already paused' };
    const paused = await control.isPaused().catch(() => false);
    if (paused) {
      this.#batchPaused = true;
      return { action: 'pause', ok: true, detail: 'already paused' };
    }
    try {
      await this.#limit(control.pause(), this.#o.pauseTimeoutMs ?? 10_000, 'pause');
      this.#batchPaused = true;
      return { action: 'pause', ok: true, detail: 'paused' };
    } catch (e) {
      return { action: 'pause', ok: false, detail: describeSysError(e) };
    }
  }

  async #dump(control: MachineControl, alert: Alert): Promise<AlertResponseRecord> {
    if (this.#batchDump) {
      const shared = this.#batchDump;
      return { ...shared, detail: `${shared.detail} (shared with an earlier alert of this sweep)` };
    }
    const now = this.#o.clock.now();
    const minGap = this.#o.minDumpIntervalMs ?? 60_000;
    const max = this.#o.maxDumps ?? 10;
    if (this.dumps.length >= max) {
      return { action: 'dump', ok: false, detail: `skipped: already wrote ${max} dumps (the limit)` };
    }
    if (this.#lastDumpAt !== undefined && now - this.#lastDumpAt < minGap) {
      const ago = Math.round((now - this.#lastDumpAt) / 1000);
      return {
        action: 'dump',
        ok: false,
        detail: `skipped: the last dump was ${ago} s ago (at most one per ${Math.round(minGap / 1000)} s)`,
      };
    }
    const stamp = alert.time.replace(/:/g, '');
    const path = join(this.dumpDir, `${vmFileName(this.#o.vm)}-${stamp}-${alert.id}.elf`);
    let record: AlertResponseRecord;
    try {
      // 0700: a dump holds everything in the guest's memory, keys included. QEMU writes the file, so
      // the QEMU user needs write access to this directory.
      await mkdir(this.dumpDir, { recursive: true, mode: 0o700 });
      this.#lastDumpAt = now;
      await this.#limit(control.dump(path), this.#o.dumpTimeoutMs ?? 600_000, 'dump');
      this.dumps.push(path);
      record = { action: 'dump', ok: true, detail: path };
    } catch (e) {
      record = { action: 'dump', ok: false, detail: `${path}: ${describeSysError(e)}` };
    }
    this.#batchDump = record;
    return record;
  }

  /** Bound a control command: a hung QMP socket must not stall the engine for ever. */
  #limit<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const cancel = this.#o.clock.setTimer(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
      p.then(
        (v) => {
          cancel();
          resolve(v);
        },
        (e: unknown) => {
          cancel();
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }
}
