// SinkSet: one alert to every sink, each on its own. A sink that throws, rejects or hangs (bounded by
// writeTimeoutMs) neither blocks nor fails the others; its failures are counted and reported, and its health
// flips between 'ok' and 'failing' once per transition so vigil can raise one "sink X failing" alert rather
// than one per failed write. (Route such a health alert to the other sinks: the failing one may not carry it.)

import type { Alert, Sink } from '../../policy/types.js';
import { VigilError } from '../../util/errors.js';
import { formatConfigIssues, sinkConfigSchema, sinkNameOf, type SinkConfig } from './config.js';
import {
  MONITOR_ORIGIN,
  type SinkDeps,
  type SinkReporter,
  type SinkStatus,
  type VigilSink,
} from './types.js';

export interface SinkFailureEvent {
  sink: string;
  error: unknown;
  /** The alert whose write failed; absent for background failures (reconnects, delivery retries). */
  alertId?: string;
  consecutive: number;
  total: number;
}

export type SinkHealth = 'ok' | 'failing';

export interface SinkSetOptions {
  /** Every failure, as it happens. */
  onFailure?(event: SinkFailureEvent): void;
  /** Only transitions: a sink starts failing, or recovers. */
  onHealthChange?(sink: string, health: SinkHealth, error?: unknown): void;
  /** Bound on one sink's write (default 10 s); a write that takes longer counts as failed. */
  writeTimeoutMs?: number;
  /**
   * Writes to one sink still unfinished (timed out but running) beyond which further writes to it fail at
   * once (default 100): a hung sink must not pile up every later alert in memory.
   */
  maxPendingWrites?: number;
}

export interface SinkSetResult {
  delivered: string[];
  failed: { sink: string; error: unknown }[];
}

export interface SinkStats {
  name: string;
  writes: number;
  failures: number;
  consecutiveFailures: number;
  health: SinkHealth;
  lastError?: string;
  status?: SinkStatus;
}

interface Member {
  sink: Sink;
  /** Writes started and not yet settled (including those that timed out). */
  unsettled: number;
  writes: number;
  failures: number;
  consecutive: number;
  health: SinkHealth;
  lastError?: string;
}

const describe = (e: unknown) =>
  e instanceof VigilError ? e.toLine() : e instanceof Error ? e.message : String(e);
const statusOf = (sink: Sink): SinkStatus | undefined =>
  typeof (sink as Partial<VigilSink>).status === 'function' ? (sink as VigilSink).status() : undefined;

export class SinkSet implements Sink {
  readonly name = 'sinks';
  private readonly members = new Map<string, Member>();
  private readonly writeTimeoutMs: number;
  private readonly maxPendingWrites: number;

  constructor(private readonly opts: SinkSetOptions = {}) {
    this.writeTimeoutMs = opts.writeTimeoutMs ?? 10_000;
    this.maxPendingWrites = opts.maxPendingWrites ?? 100;
  }

  /**
   * Parse every config first (so all mistakes are reported before anything is opened), then create the sinks
   * with their background reporters wired to this set. If one cannot be created, those already created close.
   */
  static async fromConfigs(
    configs: unknown[],
    create: (config: SinkConfig, deps: SinkDeps) => Promise<VigilSink>,
    opts: SinkSetOptions = {},
    deps: SinkDeps = {},
    where = 'sinks',
  ): Promise<SinkSet> {
    const problems: string[] = [];
    const parsed: SinkConfig[] = [];
    const names = new Set<string>();
    configs.forEach((c, i) => {
      const r = sinkConfigSchema.safeParse(c);
      if (!r.success) return problems.push(...formatConfigIssues(r.error, `${where}.${i}`));
      const name = sinkNameOf(r.data);
      if (names.has(name))
        problems.push(`${where}.${i}.name: another sink is already named ${JSON.stringify(name)}`);
      names.add(name);
      parsed.push(r.data);
    });
    if (problems.length > 0)
      throw new VigilError(MONITOR_ORIGIN, 'usage', `invalid sink config: ${problems.join('; ')}`);
    const set = new SinkSet(opts);
    try {
      for (const c of parsed) set.add(await create(c, { ...deps, reporter: set.reporterFor(sinkNameOf(c)) }));
    } catch (e) {
      await set.close();
      throw e;
    }
    return set;
  }

  add(sink: Sink): void {
    if (this.members.has(sink.name)) {
      throw new VigilError(MONITOR_ORIGIN, 'usage', `two sinks are named ${JSON.stringify(sink.name)}`);
    }
    this.members.set(sink.name, { sink, unsettled: 0, writes: 0, failures: 0, consecutive: 0, health: 'ok' });
  }

  get size(): number {
    return this.members.size;
  }

  /** A reporter for the named sink's background failures and successes. */
  reporterFor(name: string): SinkReporter {
    return {
      failure: (error) => this.recordFailure(name, error, undefined),
      success: () => this.recordSuccess(name),
    };
  }

  /** Fan out; never rejects (failures go to the callbacks). */
  async write(alert: Alert): Promise<void> {
    await this.deliver(alert);
  }

  /** Fan out and say which sinks took the alert; never rejects. Failures also go to the callbacks. */
  async deliver(alert: Alert): Promise<SinkSetResult> {
    const result: SinkSetResult = { delivered: [], failed: [] };
    await Promise.all(
      [...this.members.entries()].map(async ([name, m]) => {
        try {
          await this.bounded(name, m, () => m.sink.write(alert));
          m.writes++;
          result.delivered.push(name);
          this.recordSuccess(name);
        } catch (error) {
          result.failed.push({ sink: name, error });
          this.recordFailure(name, error, alert.id);
        }
      }),
    );
    return result;
  }

  private async bounded(name: string, m: Member, op: () => Promise<void>): Promise<void> {
    if (m.unsettled >= this.maxPendingWrites) {
      throw new VigilError(
        MONITOR_ORIGIN,
        'bound',
        `${name}: ${m.unsettled} earlier writes still unfinished`,
      );
    }
    m.unsettled++;
    // A sink that throws synchronously is as isolated as one that rejects.
    const write = Promise.resolve()
      .then(op)
      .finally(() => m.unsettled--);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        write,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new VigilError(
                  MONITOR_ORIGIN,
                  'timeout',
                  `${name}: write took longer than ${this.writeTimeoutMs} ms`,
                ),
              ),
            this.writeTimeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private recordFailure(name: string, error: unknown, alertId: string | undefined): void {
    const m = this.members.get(name);
    if (!m) return;
    m.failures++;
    m.consecutive++;
    m.lastError = describe(error);
    this.call(() =>
      this.opts.onFailure?.({ sink: name, error, alertId, consecutive: m.consecutive, total: m.failures }),
    );
    if (m.health === 'ok') {
      m.health = 'failing';
      this.call(() => this.opts.onHealthChange?.(name, 'failing', error));
    }
  }

  /**
   * A success clears a failing state only if the sink itself says it is healthy: a queued write to a
   * disconnected syslog stream or a spooled webhook alert succeeds while delivery is still failing.
   */
  private recordSuccess(name: string): void {
    const m = this.members.get(name);
    if (!m) return;
    if (statusOf(m.sink)?.healthy === false) return;
    m.consecutive = 0;
    if (m.health === 'failing') {
      m.health = 'ok';
      this.call(() => this.opts.onHealthChange?.(name, 'ok'));
    }
  }

  /** A throwing callback must not break the fan-out. */
  private call(fn: () => void): void {
    try {
      fn();
    } catch {
      // deliberately ignored: reporting is best effort
    }
  }

  stats(): SinkStats[] {
    return [...this.members.entries()].map(([name, m]) => ({
      name,
      writes: m.writes,
      failures: m.failures,
      consecutiveFailures: m.consecutive,
      health: m.health,
      lastError: m.lastError,
      status: statusOf(m.sink),
    }));
  }

  /** Close every sink (in parallel); a failure to close is reported, not thrown. */
  async close(): Promise<void> {
    await Promise.all(
      [...this.members.entries()].map(async ([name, m]) => {
        try {
          await m.sink.close();
        } catch (error) {
          this.recordFailure(name, error, undefined);
        }
      }),
    );
  }
}
