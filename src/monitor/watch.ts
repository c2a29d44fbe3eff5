// The monitor behind `vigil watch`: many VMs at once, each a WatchedTarget with its own engine, all sharing
// one set of sinks, one metrics registry and one baseline store. It turns target transitions into log
// lines, metrics and health alerts, adds and drops discovered VMs, and stops cleanly: loops end, sweeps in
// flight finish, sinks flush, QMP connections close.

import { statSync } from 'node:fs';
import type { Kernel } from '../os/linux/kernel.js';
import { makeAlert } from '../policy/alerts.js';
import { FileBaselineStore, type BaselineStore } from '../policy/baseline.js';
import { Engine, type SweepReport } from '../policy/engine.js';
import { HEALTH_POLICY_ID, type Policy } from '../policy/policy.js';
import type { Alert, Finding } from '../policy/types.js';
import { isVigilError, VigilError } from '../util/errors.js';
import { sanitize } from '../util/sanitize.js';
import { connectQemu } from '../vmm/qemu/machine.js';
import type { TargetSpec, WatchConfig } from './config.js';
import { WATCH_POLICY } from './kernel-watch.js';
import { Discovery, nameFromSocket } from './discovery.js';
import { bootstrapLive } from '../os/linux/live-kernel.js';
import type { LiveMachine } from './live-machine.js';
import {
  createVigilMetrics,
  observeSinks,
  startMetricsServer,
  type HealthReport,
  type MetricsServer,
  type VigilMetrics,
} from './metrics.js';
import { createSinkSet, type SinkDeps, type SinkSet } from './sinks/index.js';
import { MONITOR_ORIGIN } from './sinks/types.js';
import {
  TARGET_STATES,
  WatchedTarget,
  type TargetDeps,
  type TargetHooks,
  type TargetState,
} from './target-manager.js';

/** The VM name health alerts about vigil itself carry (a failing sink is nobody's VM). */
export const SELF_VM = 'vigil';

export interface WatcherOptions {
  config: WatchConfig;
  policies: readonly Policy<Kernel>[];
  /** One line per call, no newline (default: stderr with a newline). */
  log?: (line: string) => void;
  /** Replace how VMs are reached (tests). */
  deps?: Partial<TargetDeps>;
  sinkDeps?: SinkDeps;
  baselines?: BaselineStore;
}

export interface TargetStatus {
  name: string;
  qmp: string;
  state: TargetState;
  since: string;
  discovered: boolean;
  kernel?: string;
}

export const defaultTargetDeps: TargetDeps = {
  connect: (spec) =>
    connectQemu(spec.qmp, {
      name: spec.name,
      reconnect: false,
      ...(spec.pid ? { pid: spec.pid } : {}),
      ...(spec.qga !== undefined ? { agent: spec.qga } : {}),
      // 'auto' attaches the stub QEMU reports, if any (watchpoints for memory-access).
      ...(spec.gdb ? { gdb: spec.gdb } : {}),
    }),
  bootstrap: (memory, vcpus) => bootstrapLive(memory, vcpus),
  socketStamp(path) {
    if (!path.includes('/')) return 'tcp'; // host:port: nothing on disk to watch
    try {
      const st = statSync(path);
      return `${st.dev}:${st.ino}`;
    } catch {
      return undefined;
    }
  },
  now: () => Date.now(),
};

export class Watcher {
  readonly config: WatchConfig;
  readonly metrics: VigilMetrics;
  readonly sinks: SinkSet;
  readonly #targets = new Map<string, WatchedTarget>();
  readonly #policies: readonly Policy<Kernel>[];
  readonly #log: (line: string) => void;
  readonly #deps: TargetDeps;
  readonly #baselines: BaselineStore;
  #server: MetricsServer | undefined;
  #discovery: Discovery | undefined;
  #stopping: Promise<void> | undefined;
  readonly #pending = new Set<Promise<unknown>>();

  private constructor(o: WatcherOptions, sinks: SinkSet, metrics: VigilMetrics) {
    this.config = o.config;
    this.#policies = o.policies;
    this.#log = o.log ?? ((l) => process.stderr.write(l + '\n'));
    this.#deps = { ...defaultTargetDeps, ...o.deps };
    this.#baselines = o.baselines ?? new FileBaselineStore(o.config.baselineDir);
    this.sinks = sinks;
    this.metrics = metrics;
  }

  /** Open the sinks and the metrics server, then start watching every configured and discovered VM. */
  static async start(o: WatcherOptions): Promise<Watcher> {
    const c = o.config;
    if (c.targets.length === 0 && !c.discovery) {
      throw new VigilError(
        MONITOR_ORIGIN,
        'usage',
        'nothing to watch: give --qmp SOCK, --discover or a config with targets',
      );
    }
    // The sinks exist before the watcher that reports on them: their callback finds it here.
    const late: { sinkHealth?: (name: string, health: 'ok' | 'failing', error: unknown) => void } = {};
    const sinks = await createSinkSet(
      c.sinks.length > 0 ? c.sinks : [{ type: 'stdout' }],
      { onHealthChange: (name, health, error) => late.sinkHealth?.(name, health, error) },
      o.sinkDeps,
    );
    const metrics = createVigilMetrics();
    observeSinks(metrics, sinks);
    const w = new Watcher(o, sinks, metrics);
    late.sinkHealth = (name, health, error) => w.#sinkHealth(name, health, error);
    try {
      if (c.metrics) {
        w.#server = await startMetricsServer({
          registry: metrics.registry,
          port: c.metrics.port,
          host: c.metrics.host,
          health: () => w.health(),
        });
        w.#say(`metrics at ${w.#server.url}/metrics`);
      }
      w.#updateGauge();
      for (const spec of c.targets) w.#add(spec);
      if (c.discovery) {
        w.#discovery = new Discovery({
          globs: c.discovery.globs,
          intervalMs: c.discovery.intervalMs,
          onFound: (p) => w.#found(p),
          onGone: (p) => w.#gone(p),
          onError: (e) => w.#say(`discovery: ${errorLine(e)}`),
        });
        w.#discovery.start();
      }
      const globs = c.discovery ? `, discovering ${c.discovery.globs.join(' ')}` : '';
      w.#say(`watching ${w.#targets.size} VMs with ${o.policies.length} policies${globs}`);
    } catch (e) {
      await w.stop();
      throw e;
    }
    return w;
  }

  get metricsUrl(): string | undefined {
    return this.#server?.url;
  }

  targets(): WatchedTarget[] {
    return [...this.#targets.values()];
  }

  status(): TargetStatus[] {
    return this.targets().map((t) => ({
      name: t.name,
      qmp: t.spec.qmp,
      state: t.state,
      since: new Date(t.since).toISOString(),
      discovered: t.spec.discovered === true,
      ...(t.kernel ? { kernel: t.kernel.release } : {}),
    }));
  }

  health(): HealthReport {
    const vms = Object.fromEntries(this.status().map((s) => [s.name, s.state]));
    const sinks = Object.fromEntries(this.sinks.stats().map((s) => [s.name, s.health]));
    const ok = !Object.values(vms).includes('lost') && !Object.values(sinks).includes('failing');
    return { ok, vms, sinks };
  }

  /** Stop everything; resolves when sweeps in flight finished and the sinks flushed. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#say('stopping');
      this.#discovery?.stop();
      await Promise.allSettled(this.targets().map((t) => t.stop()));
      // Health alerts raised while stopping (a VM lost at the last moment) reach the sinks before they close.
      await Promise.allSettled([...this.#pending]);
      await this.sinks.close();
      await this.#server?.close();
      this.#say('stopped');
    })();
    return this.#stopping;
  }

  // ---- targets -------------------------------------------------------------------------------------------

  #add(given: TargetSpec): WatchedTarget {
    const engineConfig = this.config.engine;
    // The GDB stub serves memory-access's watchpoints only: without that policy, never attach it.
    const spec: TargetSpec = { ...given, gdb: this.#wantsWatchpoints() ? (given.gdb ?? 'auto') : false };
    const target = new WatchedTarget({
      spec,
      makeEngine: (machine: LiveMachine) =>
        new Engine<Kernel>({
          vm: spec.name,
          machine,
          policies: this.#policies,
          config: engineConfig,
          baselines: this.#baselines,
          kernelUnavailable: 'not connected yet',
          sinks: [this.sinks],
          onAlert: (a) => this.#counted(a),
          onError: (e) => this.#say(`${spec.name}: engine: ${errorLine(e)}`),
        }),
      retry: this.config.retry,
      identityCheckMs: this.config.identityCheckMs,
      deps: this.#deps,
      hooks: this.#hooks,
    });
    this.#targets.set(spec.name, target);
    target.start();
    this.#updateGauge();
    return target;
  }

  #wantsWatchpoints(): boolean {
    const enabled = this.config.engine.policies?.[WATCH_POLICY]?.enabled ?? true;
    return enabled && this.#policies.some((p) => p.id === WATCH_POLICY);
  }

  #found(path: string): void {
    if (this.#stopping) return;
    if (this.targets().some((t) => t.spec.qmp === path)) return;
    const base = nameFromSocket(path);
    let name = base;
    for (let i = 2; this.#targets.has(name); i++) name = `${base}-${i}`;
    this.#say(`discovered ${path} as ${name}`);
    this.#add({ name, qmp: path, discovered: true });
  }

  #gone(path: string): void {
    const t = this.targets().find((x) => x.spec.qmp === path && x.spec.discovered);
    if (!t || this.#stopping) return;
    this.#say(`${t.name}: QMP socket ${path} is gone; no longer watched`);
    this.#targets.delete(t.name);
    this.#track(t.stop('its QMP socket is gone').then(() => this.#updateGauge()));
  }

  readonly #hooks: TargetHooks = {
    transition: (t, from, to, reason) => {
      this.#say(`${t.name}: ${from} -> ${to} (${reason})`, false);
      this.#updateGauge();
    },
    note: (t, message) => this.#say(`${t.name}: ${message}`, false),
    health: (t, finding) => this.#track(this.#raiseHealth(t.name, finding)),
    event: (t, ev) => this.metrics.events.inc({ vm: t.name, source: ev.source }),
    sweep: (t, report, kernel) => this.#sweepMetrics(t.name, report, kernel),
    error: (t, e) => this.#say(`${t.name}: internal error: ${errorLine(e)}`),
  };

  #sweepMetrics(vm: string, report: SweepReport, kernel: Kernel): void {
    if (report.runs.length === 0) return;
    const failed = report.runs.some((r) => r.outcome === 'failed');
    this.metrics.sweeps.inc({ vm, result: failed ? 'error' : 'ok' });
    this.metrics.sweepDuration.observe({ vm }, report.durationMs / 1000);
    const byWalker = new Map<string, number>();
    for (const i of kernel.issues.items) byWalker.set(i.walker, (byWalker.get(i.walker) ?? 0) + 1);
    for (const [walker, n] of byWalker) {
      this.metrics.walkTruncations.inc({ vm, walker: sanitize(walker, 64) }, n);
    }
  }

  #updateGauge(): void {
    const counts = new Map<TargetState, number>(TARGET_STATES.map((s) => [s, 0]));
    for (const t of this.#targets.values()) counts.set(t.state, (counts.get(t.state) ?? 0) + 1);
    for (const [state, n] of counts) if (state !== 'stopped') this.metrics.vms.set({ state }, n);
  }

  // ---- alerts ------------------------------------------------------------------------------------------

  /** Every alert an engine delivered: count it; an events-dropped health alert also counts the drops. */
  #counted(a: Alert): void {
    this.metrics.alerts.inc({ vm: a.vm, policy: a.policy, severity: a.severity });
    if (a.policy === HEALTH_POLICY_ID && a.key === 'events-dropped') {
      const n = Number((a.evidence as { dropped?: unknown }).dropped);
      if (Number.isFinite(n) && n > 0) this.metrics.eventsDropped.inc({ vm: a.vm }, n);
    }
  }

  async #raiseHealth(vm: string, f: Finding): Promise<void> {
    const alert = makeAlert(f, {
      vm,
      policy: HEALTH_POLICY_ID,
      time: Date.now(),
      defaultSeverity: f.severity,
    });
    alert.response = [{ action: 'alert', ok: true }];
    this.#counted(alert);
    await this.sinks.write(alert);
  }

  #sinkHealth(name: string, health: 'ok' | 'failing', error: unknown): void {
    this.#say(`sink ${name}: ${health}${error !== undefined ? ` (${errorLine(error)})` : ''}`);
    const finding: Finding =
      health === 'failing'
        ? {
            key: `sink-failing:${name}`,
            severity: 'medium',
            summary: `alert delivery to ${name} is failing: ${errorLine(error)}`,
            evidence: { sink: name, error: errorLine(error) },
          }
        : {
            key: `sink-recovered:${name}`,
            severity: 'info',
            summary: `alert delivery to ${name} works again`,
            evidence: { sink: name },
          };
    // Through the set: the failing sink may not carry it, the others do.
    this.#track(this.#raiseHealth(SELF_VM, finding));
  }

  #track(p: Promise<unknown>): void {
    const tracked = p.catch((e: unknown) => this.#say(`internal error: ${errorLine(e)}`));
    this.#pending.add(tracked);
    void tracked.finally(() => this.#pending.delete(tracked));
  }

  /** Log lines: "<ISO time> watch <message>" about vigil, "<ISO time> vm <name>: <message>" about a VM. */
  #say(message: string, self = true): void {
    this.#log(`${new Date().toISOString()} ${self ? 'watch' : 'vm'} ${message}`);
  }
}

function errorLine(e: unknown): string {
  if (isVigilError(e)) return sanitize(e.toLine(), 500);
  return sanitize(e instanceof Error ? e.message : String(e), 500);
}
