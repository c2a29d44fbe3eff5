// Prometheus metrics: a small registry that renders the text exposition format (version 0.0.4) by hand —
// counters, gauges and histograms with labels — vigil's own metrics, and an HTTP server for /metrics and
// /healthz that binds to loopback unless told otherwise. prom-client would add default process metrics and
// a dependency for the ~200 lines this needs.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { VigilError } from '../util/errors.js';
import { MONITOR_ORIGIN } from './sinks/types.js';
import type { SinkStats } from './sinks/set.js';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export type LabelValues<L extends string> = { [K in L]: string | number };

const usage = (msg: string) => new VigilError(MONITOR_ORIGIN, 'usage', msg);

/** Label value escaping of the text format: backslash, double quote and line feed. */
export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));
}

/** HELP text escaping: backslash and line feed. */
export function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => (c === '\n' ? '\\n' : '\\\\'));
}

/** A sample value as the text format spells it (Go ParseFloat syntax; +Inf, -Inf, NaN). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
}

abstract class Metric<L extends string, S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  protected readonly series = new Map<string, { labels: string; state: S }>();

  constructor(
    opts: MetricOptions<L>,
    private readonly registry: Registry,
  ) {
    if (!METRIC_NAME.test(opts.name)) throw usage(`metric name ${JSON.stringify(opts.name)} is not valid`);
    const labelNames = opts.labelNames ?? [];
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__'))
        throw usage(`${opts.name}: label name ${JSON.stringify(l)} is not valid`);
    }
    if (new Set(labelNames).size !== labelNames.length) throw usage(`${opts.name}: duplicate label names`);
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = labelNames;
  }

  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  protected abstract initial(): S;
  protected abstract renderSeries(labels: string, state: S, out: string[]): void;

  /** The rendered label set (`a="x",b="y"`) for values given by name; exactly the declared labels. */
  private labelKey(values: Partial<LabelValues<L>> | undefined): string {
    const given = values ?? {};
    for (const k of Object.keys(given)) {
      if (!this.labelNames.includes(k as L)) throw usage(`${this.name}: unknown label ${JSON.stringify(k)}`);
    }
    return this.labelNames
      .map((l) => {
        const v = (given as Record<string, string | number | undefined>)[l];
        if (v === undefined) throw usage(`${this.name}: label ${l} missing`);
        return `${l}="${escapeLabelValue(String(v))}"`;
      })
      .join(',');
  }

  /** The state of one series, created on first use; undefined when the series cap is reached. */
  protected get(values: Partial<LabelValues<L>> | undefined): S | undefined {
    const key = this.labelKey(values);
    let s = this.series.get(key);
    if (!s) {
      if (this.series.size >= this.registry.maxSeriesPerMetric) {
        this.registry.droppedSeries++;
        return undefined;
      }
      s = { labels: key, state: this.initial() };
      this.series.set(key, s);
    }
    return s.state;
  }

  /** The state of an existing series, without creating it. */
  protected peek(values: Partial<LabelValues<L>> | undefined): S | undefined {
    return this.series.get(this.labelKey(values))?.state;
  }

  /** Forget one series (a VM that went away). */
  remove(values: LabelValues<L>): void {
    this.series.delete(this.labelKey(values));
  }

  /** Forget every series. */
  reset(): void {
    this.series.clear();
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`);
    // A metric without labels is always present, at zero before its first update.
    if (this.labelNames.length === 0 && this.series.size === 0) this.get(undefined);
    for (const { labels, state } of this.series.values()) this.renderSeries(labels, state, out);
  }
}

const braces = (labels: string) => (labels === '' ? '' : `{${labels}}`);

export class Counter<L extends string = never> extends Metric<L, { value: number }> {
  readonly type = 'counter';
  protected initial() {
    return { value: 0 };
  }
  inc(labels?: LabelValues<L>, by = 1): void {
    if (!(by >= 0) || !Number.isFinite(by)) throw usage(`${this.name}: a counter only goes up (by ${by})`);
    const s = this.get(labels);
    if (s) s.value += by;
  }
  value(labels?: LabelValues<L>): number {
    return this.peek(labels)?.value ?? 0;
  }
  protected renderSeries(labels: string, s: { value: number }, out: string[]): void {
    out.push(`${this.name}${braces(labels)} ${formatValue(s.value)}`);
  }
}

export class Gauge<L extends string = never> extends Metric<L, { value: number }> {
  readonly type = 'gauge';
  protected initial() {
    return { value: 0 };
  }
  set(labels: LabelValues<L> | undefined, value: number): void {
    const s = this.get(labels);
    if (s) s.value = value;
  }
  inc(labels?: LabelValues<L>, by = 1): void {
    const s = this.get(labels);
    if (s) s.value += by;
  }
  dec(labels?: LabelValues<L>, by = 1): void {
    this.inc(labels, -by);
  }
  value(labels?: LabelValues<L>): number {
    return this.peek(labels)?.value ?? 0;
  }
  protected renderSeries(labels: string, s: { value: number }, out: string[]): void {
    out.push(`${this.name}${braces(labels)} ${formatValue(s.value)}`);
  }
}

interface HistogramState {
  counts: number[]; // per bucket, not cumulative
  sum: number;
  count: number;
}

export class Histogram<L extends string = never> extends Metric<L, HistogramState> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(opts: MetricOptions<L> & { buckets: readonly number[] }, registry: Registry) {
    super(opts, registry);
    if (this.labelNames.includes('le' as L))
      throw usage(`${this.name}: a histogram cannot have a label "le"`);
    const b = opts.buckets.filter((x) => x !== Infinity);
    if (b.length === 0 || b.some((x, i) => !Number.isFinite(x) || (i > 0 && x <= b[i - 1]!))) {
      throw usage(`${this.name}: buckets must be finite and strictly increasing`);
    }
    this.buckets = b;
  }

  protected initial(): HistogramState {
    return { counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
  }

  observe(labels: LabelValues<L> | undefined, value: number): void {
    const s = this.get(labels);
    if (!s || Number.isNaN(value)) return;
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  /** Start timing; the returned function observes the elapsed seconds and returns them. */
  startTimer(labels?: LabelValues<L>): () => number {
    const start = process.hrtime.bigint();
    return () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      this.observe(labels, seconds);
      return seconds;
    };
  }

  protected renderSeries(labels: string, s: HistogramState, out: string[]): void {
    const sep = labels === '' ? '' : ',';
    let cumulative = 0;
    this.buckets.forEach((b, i) => {
      cumulative += s.counts[i]!;
      out.push(`${this.name}_bucket{${labels}${sep}le="${formatValue(b)}"} ${cumulative}`);
    });
    out.push(`${this.name}_bucket{${labels}${sep}le="+Inf"} ${s.count}`);
    out.push(`${this.name}_sum${braces(labels)} ${formatValue(s.sum)}`);
    out.push(`${this.name}_count${braces(labels)} ${s.count}`);
  }
}

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export class Registry {
  private readonly metrics = new Map<string, Metric<string, unknown>>();
  private readonly collectors: (() => void)[] = [];
  /** Series refused because a metric reached maxSeriesPerMetric (label values that never stop changing). */
  droppedSeries = 0;

  constructor(readonly maxSeriesPerMetric = 10_000) {}

  private register<M extends Metric<string, unknown>>(m: M): M {
    if (this.metrics.has(m.name)) throw usage(`metric ${m.name} registered twice`);
    this.metrics.set(m.name, m);
    return m;
  }

  counter<L extends string = never>(opts: MetricOptions<L>): Counter<L> {
    return this.register(new Counter<L>(opts, this));
  }

  gauge<L extends string = never>(opts: MetricOptions<L>): Gauge<L> {
    return this.register(new Gauge<L>(opts, this));
  }

  histogram<L extends string = never>(opts: MetricOptions<L> & { buckets: readonly number[] }): Histogram<L> {
    return this.register(new Histogram<L>(opts, this));
  }

  /** Run `fn` before every render, to refresh gauges that are cheaper to read than to track. */
  onCollect(fn: () => void): void {
    this.collectors.push(fn);
  }

  /** The whole registry in the text exposition format. */
  render(): string {
    for (const c of this.collectors) {
      try {
        c();
      } catch {
        // a broken collector must not take /metrics down; its gauges keep their last values
      }
    }
    const out: string[] = [];
    for (const m of this.metrics.values()) m.render(out);
    return out.join('\n') + '\n';
  }
}

// ------------------------------------------------------------------------------ vigil's metrics

/** Sweeps should take milliseconds on a quiet guest; the top buckets catch a struggling one. */
export const SWEEP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export type VigilMetrics = ReturnType<typeof createVigilMetrics>;

export function createVigilMetrics(registry = new Registry()) {
  return {
    registry,
    sweeps: registry.counter<'vm' | 'result'>({
      name: 'vigil_sweeps_total',
      help: 'Policy sweeps run, by VM and result (ok, error, skipped).',
      labelNames: ['vm', 'result'],
    }),
    sweepDuration: registry.histogram<'vm'>({
      name: 'vigil_sweep_duration_seconds',
      help: 'Wall-clock time of one sweep of one VM.',
      labelNames: ['vm'],
      buckets: SWEEP_BUCKETS,
    }),
    alerts: registry.counter<'vm' | 'policy' | 'severity'>({
      name: 'vigil_alerts_total',
      help: 'Alerts raised, by VM, policy and severity.',
      labelNames: ['vm', 'policy', 'severity'],
    }),
    vms: registry.gauge<'state'>({
      name: 'vigil_vms',
      help: 'Monitored VMs by state.',
      labelNames: ['state'],
    }),
    events: registry.counter<'vm' | 'source'>({
      name: 'vigil_events_total',
      help: 'VM events received, by VM and source (qmp, gdb).',
      labelNames: ['vm', 'source'],
    }),
    eventsDropped: registry.counter<'vm'>({
      name: 'vigil_events_dropped_total',
      help: 'VM events dropped because a queue was full.',
      labelNames: ['vm'],
    }),
    walkTruncations: registry.counter<'vm' | 'walker'>({
      name: 'vigil_walk_truncations_total',
      help: 'Kernel structure walks cut short by a bound or a cycle, by VM and walker.',
      labelNames: ['vm', 'walker'],
    }),
    sinkFailures: registry.counter<'sink'>({
      name: 'vigil_sink_failures_total',
      help: 'Failed alert writes and deliveries, by sink.',
      labelNames: ['sink'],
    }),
    sinkUp: registry.gauge<'sink'>({
      name: 'vigil_sink_up',
      help: '1 while a sink delivers, 0 while it is failing.',
      labelNames: ['sink'],
    }),
    sinkPending: registry.gauge<'sink'>({
      name: 'vigil_sink_pending',
      help: 'Alerts accepted by a sink but not delivered yet (queued or spooled).',
      labelNames: ['sink'],
    }),
  };
}

/** Keep the sink gauges and failure counter in step with a SinkSet's stats, refreshed on every scrape. */
export function observeSinks(metrics: VigilMetrics, sinks: { stats(): SinkStats[] }): void {
  const seenFailures = new Map<string, number>();
  metrics.registry.onCollect(() => {
    for (const s of sinks.stats()) {
      metrics.sinkUp.set({ sink: s.name }, s.health === 'ok' ? 1 : 0);
      metrics.sinkPending.set({ sink: s.name }, s.status?.pending ?? 0);
      const before = seenFailures.get(s.name) ?? 0;
      if (s.failures > before) metrics.sinkFailures.inc({ sink: s.name }, s.failures - before);
      seenFailures.set(s.name, s.failures);
    }
  });
}

// ----------------------------------------------------------------------------------- HTTP server

export const DEFAULT_METRICS_PORT = 9477;

export interface HealthReport {
  ok: boolean;
  [detail: string]: unknown;
}

export interface MetricsServerOptions {
  registry: Registry;
  /** Default 9477; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Needed to bind anything but loopback: /metrics names every VM and policy. */
  allowNonLoopback?: boolean;
  /** /healthz: 200 when ok, 503 otherwise, the report as JSON. Default: always ok. */
  health?: () => HealthReport | Promise<HealthReport>;
}

export interface MetricsServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms. */
export function isLoopback(address: string): boolean {
  const a = address.toLowerCase().replace(/^::ffff:/, '');
  if (isIP(a) === 4) return a.startsWith('127.');
  return a === '::1' || a === '0:0:0:0:0:0:0:1';
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? DEFAULT_METRICS_PORT;
  const refuse = (what: string) =>
    new VigilError(
      MONITOR_ORIGIN,
      'denied',
      `metrics server: ${what} is not a loopback address (set allowNonLoopback to expose it)`,
    );
  if (!opts.allowNonLoopback && isIP(host) !== 0 && !isLoopback(host)) throw refuse(host);

  const server = createServer((req, res) => void handle(req, res, opts));
  // Bounded request handling: a slow client cannot hold a connection for ever.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(
        new VigilError(MONITOR_ORIGIN, 'io', `metrics server: cannot listen on ${host}:${port}`, {
          cause: e,
        }),
      ),
    );
    server.listen({ host, port }, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  // A host name (e.g. "localhost") is checked after resolution, by the address actually bound.
  if (!opts.allowNonLoopback && !isLoopback(bound.address)) {
    await closeServer(server);
    throw refuse(`${host} (${bound.address})`);
  }
  const urlHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    url: `http://${urlHost}:${bound.port}`,
    host: bound.address,
    port: bound.port,
    close: () => closeServer(server),
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

async function handle(req: IncomingMessage, res: ServerResponse, opts: MetricsServerOptions): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const reply = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, {
      'content-type': type,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      ...extra,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return reply(405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
  }
  try {
    if (path === '/metrics') return reply(200, CONTENT_TYPE, opts.registry.render());
    if (path === '/healthz') {
      let report: HealthReport;
      try {
        report = opts.health ? await opts.health() : { ok: true };
      } catch (e) {
        report = { ok: false, error: e instanceof Error ? e.message : String(e) };
      }
      return reply(report.ok ? 200 : 503, 'application/json', JSON.stringify(report) + '\n');
    }
    return reply(404, 'text/plain; charset=utf-8', 'not found: try /metrics or /healthz\n');
  } catch (e) {
    if (!res.headersSent)
      reply(500, 'text/plain; charset=utf-8', `error: ${e instanceof Error ? e.message : String(e)}\n`);
    else res.destroy();
  }
}
