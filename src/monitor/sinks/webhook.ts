// The webhook sink: HTTP(S) POST of each alert's ECS document (schema.ts), at least once.
//
// write() first puts the alert in a disk spool (spool.ts) and resolves once it is durable; delivery happens
// behind it, with retries (exponential backoff with jitter, Retry-After honoured up to retryMaxMs). A spool
// file is deleted only after a 2xx answer, so neither a receiver that is down nor a restart of vigil loses an
// alert: on start every spooled alert is sent again. A receiver may therefore see an alert more than once;
// the body carries its id (event.id, vigil.id) and the headers Idempotency-Key and X-Vigil-Alert-Id repeat it
// so the receiver can deduplicate. An answer that says the body itself is unacceptable (400, 413, 415, 422),
// or maxRetries failed attempts, moves the file to spoolDir/failed/ instead: kept, reported, not resent.

import type { Alert } from '../../policy/types.js';
import { VigilError } from '../../util/errors.js';
import { backoffDelay } from './backoff.js';
import { sinkNameOf, type WebhookSinkConfig } from './config.js';
import { stringifyJson } from './json.js';
import { toSchema } from './schema.js';
import { Spool, spoolKey } from './spool.js';
import {
  MONITOR_ORIGIN,
  silentReporter,
  type SinkDeps,
  type SinkReporter,
  type SinkStatus,
  type VigilSink,
} from './types.js';

export const WEBHOOK_DEFAULTS = {
  retryBaseMs: 1000,
  retryMaxMs: 60_000,
  timeoutMs: 10_000,
  concurrency: 4,
  closeTimeoutMs: 5000,
  maxSpool: 100_000,
} as const;

/** Answers that reject the body itself: sending the same bytes again cannot succeed. */
const PERMANENT = new Set([400, 413, 415, 422]);
const HEADER_SAFE = /^[!-~]{1,256}$/;

interface Entry {
  key: string;
  attempts: number;
  inFlight: boolean;
  timer?: NodeJS.Timeout;
}

/** Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP date; undefined if absent or unparseable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export class WebhookSink implements VigilSink {
  readonly name: string;
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly spool: Spool;
  private readonly opts: Required<
    Pick<
      WebhookSinkConfig,
      'retryBaseMs' | 'retryMaxMs' | 'timeoutMs' | 'concurrency' | 'closeTimeoutMs' | 'maxSpool'
    >
  > & {
    maxRetries: number | undefined;
  };
  private readonly hostname: string | undefined;
  private readonly reporter: SinkReporter;
  private readonly random: () => number;
  private readonly entries = new Map<string, Entry>();
  private readonly ready: string[] = [];
  private readonly inFlight = new Map<string, { done: Promise<void>; abort: AbortController }>();
  private closing = false;
  private failures = 0;
  private dropped = 0;
  private lastError: string | undefined;
  /** Counters for tests and metrics. */
  readonly counts = { delivered: 0, attempts: 0, failed: 0, resent: 0 };

  private constructor(config: WebhookSinkConfig, deps: SinkDeps) {
    const d = WEBHOOK_DEFAULTS;
    this.name = sinkNameOf(config);
    this.url = config.url;
    // Lower-cased so that vigil's own headers replace a user's instead of being merged with them by fetch.
    this.headers = Object.fromEntries(
      Object.entries(config.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
    );
    this.spool = new Spool(config.spoolDir);
    this.opts = {
      retryBaseMs: config.retryBaseMs ?? d.retryBaseMs,
      retryMaxMs: config.retryMaxMs ?? d.retryMaxMs,
      timeoutMs: config.timeoutMs ?? d.timeoutMs,
      concurrency: config.concurrency ?? d.concurrency,
      closeTimeoutMs: config.closeTimeoutMs ?? d.closeTimeoutMs,
      maxSpool: config.maxSpool ?? d.maxSpool,
      maxRetries: config.maxRetries,
    };
    this.hostname = deps.hostname;
    this.reporter = deps.reporter ?? silentReporter;
    this.random = deps.random ?? Math.random;
  }

  /** Open the spool and start resending what a previous run left in it. */
  static async open(config: WebhookSinkConfig, deps: SinkDeps = {}): Promise<WebhookSink> {
    const sink = new WebhookSink(config, deps);
    try {
      await sink.spool.open();
      for (const key of await sink.spool.list()) {
        sink.counts.resent++;
        sink.enqueue(key);
      }
    } catch (e) {
      throw new VigilError(MONITOR_ORIGIN, 'io', `${sink.name}: cannot open spool ${config.spoolDir}`, {
        cause: e,
      });
    }
    sink.pump();
    return sink;
  }

  async write(alert: Alert): Promise<void> {
    if (this.closing) throw new VigilError(MONITOR_ORIGIN, 'state', `${this.name}: sink closed`);
    const key = spoolKey(String(alert.id));
    if (!this.entries.has(key) && this.entries.size >= this.opts.maxSpool) {
      this.dropped++;
      throw new VigilError(
        MONITOR_ORIGIN,
        'bound',
        `${this.name}: spool full (${this.opts.maxSpool} alerts), alert dropped`,
      );
    }
    const body = Buffer.from(stringifyJson(toSchema(alert, { hostname: this.hostname })), 'utf8');
    try {
      await this.spool.put(key, body);
    } catch (e) {
      throw new VigilError(MONITOR_ORIGIN, 'io', `${this.name}: cannot spool alert ${key}`, { cause: e });
    }
    this.enqueue(key);
    this.pump();
  }

  private enqueue(key: string): void {
    if (this.entries.has(key)) return; // already pending: the file was just rewritten with the same alert
    this.entries.set(key, { key, attempts: 0, inFlight: false });
    this.ready.push(key);
  }

  private pump(): void {
    while (!this.closing && this.inFlight.size < this.opts.concurrency && this.ready.length > 0) {
      const key = this.ready.shift()!;
      const entry = this.entries.get(key);
      if (!entry || entry.inFlight) continue;
      const abort = new AbortController();
      entry.inFlight = true;
      const done = this.deliver(entry, abort.signal)
        .catch((e) => this.reporter.failure(e)) // deliver handles its errors; this only guards against bugs
        .finally(() => {
          entry.inFlight = false;
          this.inFlight.delete(key);
          this.pump();
        });
      this.inFlight.set(key, { done, abort });
    }
  }

  private async deliver(entry: Entry, signal: AbortSignal): Promise<void> {
    let body: Buffer | undefined;
    try {
      body = await this.spool.read(entry.key);
    } catch (e) {
      return this.retry(
        entry,
        new VigilError(MONITOR_ORIGIN, 'io', `${this.name}: cannot read spooled ${entry.key}`, { cause: e }),
        undefined,
      );
    }
    if (body === undefined) {
      this.entries.delete(entry.key); // removed by someone else (an operator): nothing to send
      return;
    }
    const id = alertIdOf(body);
    if (id === undefined) {
      // Not a body this sink wrote (damaged, or dropped in by hand): sending it would only be refused.
      return this.moveToFailed(
        entry,
        new VigilError(
          MONITOR_ORIGIN,
          'malformed',
          `${this.name}: spooled ${entry.key} is not an alert document`,
        ),
      );
    }
    const headerId = HEADER_SAFE.test(id) ? id : entry.key;
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    this.counts.attempts++;
    let status: number | undefined;
    let retryAfter: number | undefined;
    try {
      const res = await fetch(this.url, {
        method: 'POST',
        headers: {
          ...this.headers,
          'content-type': 'application/json',
          'user-agent': 'vigil',
          'idempotency-key': headerId,
          'x-vigil-alert-id': headerId,
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.any([signal, timeout]),
      });
      status = res.status;
      retryAfter = parseRetryAfter(res.headers.get('retry-after'));
      await res.body?.cancel().catch(() => {});
    } catch (e) {
      if (signal.aborted) return; // close() gave up on it: it stays in the spool for the next run
      return this.retry(entry, e, undefined);
    }
    if (status >= 200 && status < 300) {
      this.entries.delete(entry.key);
      // If the file cannot be removed, the next start sends the alert again: a duplicate, not a loss.
      await this.spool.remove(entry.key).catch((e) => this.reporter.failure(e));
      this.counts.delivered++;
      this.lastError = undefined;
      this.reporter.success();
      return;
    }
    const problem = new VigilError(
      MONITOR_ORIGIN,
      'protocol',
      `${this.name}: receiver answered HTTP ${status}`,
    );
    if (PERMANENT.has(status)) return this.moveToFailed(entry, problem);
    return this.retry(entry, problem, retryAfter);
  }

  private async retry(entry: Entry, error: unknown, retryAfterMs: number | undefined): Promise<void> {
    entry.attempts++;
    this.noteFailure(error);
    if (this.opts.maxRetries !== undefined && entry.attempts > this.opts.maxRetries) {
      return this.moveToFailed(
        entry,
        new VigilError(MONITOR_ORIGIN, 'bound', `${this.name}: gave up after ${entry.attempts} attempts`, {
          cause: error,
        }),
      );
    }
    if (this.closing) return;
    const backoff = backoffDelay(
      entry.attempts - 1,
      { baseMs: this.opts.retryBaseMs, maxMs: this.opts.retryMaxMs },
      this.random,
    );
    const delay = Math.max(backoff, Math.min(retryAfterMs ?? 0, this.opts.retryMaxMs));
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      this.ready.push(entry.key);
      this.pump();
    }, delay);
    entry.timer.unref(); // the spool keeps the alert; a pending retry must not keep vigil alive
  }

  private async moveToFailed(entry: Entry, error: unknown): Promise<void> {
    this.entries.delete(entry.key);
    this.counts.failed++;
    this.noteFailure(error);
    try {
      await this.spool.fail(entry.key);
    } catch (e) {
      this.reporter.failure(
        new VigilError(MONITOR_ORIGIN, 'io', `${this.name}: cannot move ${entry.key} to failed/`, {
          cause: e,
        }),
      );
    }
  }

  private noteFailure(error: unknown): void {
    this.failures++;
    this.lastError =
      error instanceof VigilError ? error.toLine() : error instanceof Error ? error.message : String(error);
    this.reporter.failure(error);
  }

  status(): SinkStatus {
    return {
      healthy: this.lastError === undefined,
      pending: this.entries.size,
      dropped: this.dropped,
      failures: this.failures,
      lastError: this.lastError,
    };
  }

  /** Wait up to closeTimeoutMs for deliveries in flight; whatever is not delivered by then stays spooled. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const e of this.entries.values()) if (e.timer) clearTimeout(e.timer);
    const all = Promise.allSettled([...this.inFlight.values()].map((f) => f.done));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), this.opts.closeTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      for (const f of this.inFlight.values()) f.abort.abort();
      await all;
    }
  }
}

/** The alert id inside a spooled ECS body (event.id), for the idempotency headers. */
function alertIdOf(body: Buffer): string | undefined {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { event?: { id?: unknown } };
    return typeof doc.event?.id === 'string' ? doc.event.id : undefined;
  } catch {
    return undefined;
  }
}
