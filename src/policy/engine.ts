// The policy engine (Livewire's): decides which policies can run on this target, runs polling policies in
// sweeps and routes VM events to event policies, turns findings into alerts through the alert lifecycle,
// carries out responses, keeps baselines, and reports on its own health. It knows nothing of Linux: the
// kernel object is an opaque `K` handed through to policies.
//
// Everything a policy does runs one at a time through a single queue (sweeps and events alike): policies
// read a guest that responses may pause or dump, and Livewire's engine is sequential for the same reason.
// A policy cannot crash the engine: what it throws becomes a health alert and the next policy runs.
import { VigilError, isVigilError } from '../util/errors.js';
import { sanitize } from '../util/sanitize.js';
import type { Machine, VmEvent } from '../vmm/types.js';
import { AlertTracker, makeAlert } from './alerts.js';
import {
  MemoryBaselineStore,
  StagedBaseline,
  newBaselineDoc,
  storedIdentity,
  vigilVersion,
  type BaselineDoc,
  type BaselineStore,
  type KernelIdentity,
} from './baseline.js';
import {
  HEALTH_POLICY_ID,
  checkPolicyId,
  isSeverity,
  skipReason,
  systemClock,
  unmetRequirements,
  type Clock,
  type Policy,
  type SweepContext,
} from './policy.js';
import { RESPONSE_MODES, Responder, type ResponseMode } from './responses.js';
import type { Alert, Finding, Requirement, Severity, Sink } from './types.js';

/** Per-policy settings from the config file. */
export interface PolicyConfig {
  enabled?: boolean;
  intervalMs?: number;
  response?: ResponseMode;
  /** Replaces the severity of every finding of this policy. */
  severity?: Severity;
  options?: Record<string, unknown>;
}

export interface EngineConfig {
  policies?: Readonly<Record<string, PolicyConfig>>;
  /** Polling interval for policies that set none (default 10 s). */
  defaultIntervalMs?: number;
  /** A sweep longer than this raises a health alert (default 2 s). */
  sweepBudgetMs?: number;
  /** An async policy still running after this is abandoned and reported (default 60 s). */
  policyTimeoutMs?: number;
  /** Event findings with the same key within this window raise once (default 5 s). */
  eventDedupeMs?: number;
  /** Keys tracked per policy (default 10,000). */
  maxActiveKeys?: number;
  /** Events waiting behind a running sweep; more are dropped and reported (default 1,000). */
  maxPendingEvents?: number;
  dumpDir?: string;
  minDumpIntervalMs?: number;
  maxDumps?: number;
}

/** What the target offers. The 'kernel' requirement is met by a kernel being set, not by this list. */
export interface TargetInfo {
  /** How the target reads in skip reasons: "a live VM", "a memory dump". */
  description: string;
  capabilities: Iterable<Requirement>;
}

export interface EngineOptions<K> {
  vm: string;
  machine: Machine;
  /** Default: derived from the machine (events → live+events, control → live+control, debug → gdb, agent → guest-agent). */
  target?: TargetInfo;
  policies: readonly Policy<K>[];
  config?: EngineConfig;
  kernel?: K;
  kernelIdentity?: KernelIdentity;
  /** Why there is no kernel (e.g. "bootstrap failed: no BTF in memory"), shown in skip reasons. */
  kernelUnavailable?: string;
  /** Default: in memory only. */
  baselines?: BaselineStore;
  onAlert?: (alert: Alert) => void | Promise<void>;
  sinks?: readonly Sink[];
  clock?: Clock;
  /** Run before each sweep, e.g. to move the caches' epoch so the sweep reads fresh guest state. */
  beforeSweep?: () => void | Promise<void>;
  /** Called as each policy's turn in a sweep begins (progress display for long one-shot sweeps). */
  onPolicyStart?: (policy: string, index: number, total: number) => void;
  /** Errors of the background loop that could not become alerts. */
  onError?: (e: unknown) => void;
}

export type PolicyState = 'active' | 'skipped' | 'disabled';

export interface PolicyStatus {
  id: string;
  title: string;
  state: PolicyState;
  /** Why a policy is skipped or disabled. */
  reason?: string;
  modes: ('poll' | 'event')[];
  intervalMs?: number;
  response: ResponseMode;
}

export interface PolicyRun {
  policy: string;
  /** 'learned' when this run (re-)learned the baseline; 'busy' when a timed-out run still holds the policy. */
  outcome: 'ok' | 'learned' | 'failed' | 'incomplete' | 'busy';
  durationMs: number;
  findings: number;
  raised: number;
  cleared: string[];
  notes: number;
  error?: string;
  /** Checks of the policy that could not run on this target, with the reason (SweepContext.skip). */
  skipped?: { check: string; reason: string }[];
}

export interface SweepReport {
  sweep: number;
  started: string;
  forced: boolean;
  durationMs: number;
  overBudget: boolean;
  runs: PolicyRun[];
  /** Every alert this sweep raised, health alerts included, in delivery order. */
  alerts: Alert[];
}

export interface PolicyStats {
  runs: number;
  failures: number;
  lastMs: number;
  maxMs: number;
  totalMs: number;
}

interface Slot<K> {
  policy: Policy<K>;
  enabled: boolean;
  intervalMs: number;
  response: ResponseMode;
  severity?: Severity;
  options: Readonly<Record<string, unknown>>;
  nextDue: number;
  /** A timed-out async run has not settled yet: do not start another. */
  inFlight: boolean;
  stats: PolicyStats;
}

interface Notes {
  count: number;
  items: { kind: string; detail: string }[];
}

const MIN_INTERVAL_MS = 100;
const MAX_NOTES_KEPT = 100;
const MAX_SKIPS_KEPT = 20;
/** The loop never sleeps longer than this, so a clock jump or a config change shows up soon. */
const MAX_SLEEP_MS = 60_000;
const ENGINE_STREAM = 'health:engine';

export class Engine<K = unknown> {
  readonly vm: string;
  readonly machine: Machine;
  readonly target: TargetInfo;
  readonly #o: EngineOptions<K>;
  readonly #clock: Clock;
  readonly #slots: Slot<K>[] = [];
  readonly #caps: ReadonlySet<Requirement>;
  readonly #tracker: AlertTracker;
  readonly #responder: Responder;
  readonly #store: BaselineStore;
  readonly #budgetMs: number;
  readonly #timeoutMs: number;
  readonly #maxPendingEvents: number;
  #kernel: K | undefined;
  #identity: KernelIdentity | undefined;
  #kernelUnavailable: string | undefined;
  #doc: BaselineDoc | undefined;
  #docDirty = false;
  #docReadOnly = false;
  /** Engine health conditions that last until fixed (an unreadable baseline file). */
  readonly #sticky = new Map<string, Finding>();
  /** Sinks whose last write failed, with the error. */
  readonly #sinksDown = new Map<string, string>();
  #sweepNo = 0;
  #tail: Promise<unknown> = Promise.resolve();
  #pendingEvents = 0;
  #droppedEvents = 0;
  #looping = false;
  #cancelTimer: (() => void) | undefined;
  #tick: Promise<void> | undefined;

  constructor(options: EngineOptions<K>) {
    this.#o = options;
    this.vm = options.vm;
    this.machine = options.machine;
    this.#clock = options.clock ?? systemClock;
    this.target = options.target ?? describeTarget(options.machine);
    this.#caps = new Set([...this.target.capabilities].filter((c) => c !== 'kernel'));
    this.#kernel = options.kernel;
    this.#identity = options.kernelIdentity;
    this.#kernelUnavailable = options.kernelUnavailable;
    this.#store = options.baselines ?? new MemoryBaselineStore();
    const c = options.config ?? {};
    this.#budgetMs = positive(c.sweepBudgetMs, 2_000, 'sweepBudgetMs');
    this.#timeoutMs = positive(c.policyTimeoutMs, 60_000, 'policyTimeoutMs');
    this.#maxPendingEvents = positive(c.maxPendingEvents, 1_000, 'maxPendingEvents');
    this.#tracker = new AlertTracker({ maxActiveKeys: c.maxActiveKeys, eventDedupeMs: c.eventDedupeMs });
    const control = this.#caps.has('control') ? options.machine.control : undefined;
    this.#responder = new Responder({
      vm: options.vm,
      control,
      noControlReason: `target is ${this.target.description}`,
      dumpDir: c.dumpDir,
      minDumpIntervalMs: c.minDumpIntervalMs,
      maxDumps: c.maxDumps,
      clock: this.#clock,
    });
    this.#buildSlots(options.policies, c);
  }

  #buildSlots(policies: readonly Policy<K>[], c: EngineConfig): void {
    const known = new Set<string>();
    for (const p of policies) {
      checkPolicyId(p.id);
      if (known.has(p.id)) throw new VigilError('policy', 'usage', `two policies have the id "${p.id}"`);
      known.add(p.id);
    }
    for (const id of Object.keys(c.policies ?? {})) {
      if (!known.has(id)) {
        throw new VigilError(
          'policy',
          'usage',
          `config names unknown policy "${id}" (known: ${[...known].join(', ')})`,
        );
      }
    }
    const defaultInterval = positive(c.defaultIntervalMs, 10_000, 'defaultIntervalMs');
    const now = this.#clock.now();
    for (const p of policies) {
      const pc = c.policies?.[p.id] ?? {};
      const where = `config of policy "${p.id}"`;
      if (pc.response !== undefined && !RESPONSE_MODES.includes(pc.response)) {
        throw new VigilError(
          'policy',
          'usage',
          `${where}: response must be one of ${RESPONSE_MODES.join(', ')}`,
        );
      }
      if (pc.severity !== undefined && !isSeverity(pc.severity)) {
        throw new VigilError('policy', 'usage', `${where}: unknown severity "${String(pc.severity)}"`);
      }
      const intervalMs = pc.intervalMs ?? p.defaultIntervalMs ?? defaultInterval;
      if (!Number.isFinite(intervalMs) || intervalMs < MIN_INTERVAL_MS) {
        throw new VigilError('policy', 'usage', `${where}: intervalMs must be at least ${MIN_INTERVAL_MS}`);
      }
      let options: Readonly<Record<string, unknown>> = pc.options ?? {};
      if (p.parseOptions) {
        try {
          options = p.parseOptions(options);
        } catch (e) {
          throw new VigilError('policy', 'usage', `${where}: bad options: ${errorText(e)}`, { cause: e });
        }
      }
      this.#slots.push({
        policy: p,
        enabled: pc.enabled ?? true,
        intervalMs,
        response: pc.response ?? 'alert',
        ...(pc.severity !== undefined ? { severity: pc.severity } : {}),
        options: Object.freeze({ ...options }),
        nextDue: now,
        inFlight: false,
        stats: { runs: 0, failures: 0, lastMs: 0, maxMs: 0, totalMs: 0 },
      });
    }
  }

  /** Replace the kernel, e.g. after a re-bootstrap following a reboot. Changes which policies are active. */
  setKernel(kernel: K | undefined, identity?: KernelIdentity, unavailableReason?: string): void {
    this.#kernel = kernel;
    this.#identity = identity;
    this.#kernelUnavailable = unavailableReason;
  }

  /** Every policy, whether it runs here, and if not, why. */
  status(): PolicyStatus[] {
    return this.#slots.map((s) => {
      const { state, reason } = this.#state(s);
      const p = s.policy;
      const modes: PolicyStatus['modes'] = [];
      if (p.poll) modes.push('poll');
      if (p.onEvent) modes.push('event');
      return {
        id: p.id,
        title: p.title,
        state,
        ...(reason !== undefined ? { reason } : {}),
        modes,
        ...(p.poll ? { intervalMs: s.intervalMs } : {}),
        response: s.response,
      };
    });
  }

  /** Run time of each policy so far. */
  stats(): Record<string, PolicyStats> {
    return Object.fromEntries(this.#slots.map((s) => [s.policy.id, { ...s.stats }]));
  }

  #state(s: Slot<K>): { state: PolicyState; reason?: string } {
    const p = s.policy;
    if (!s.enabled) return { state: 'disabled', reason: 'disabled in config' };
    if (!p.poll && !p.onEvent) return { state: 'skipped', reason: 'has neither poll nor onEvent' };
    const met = new Set(this.#caps);
    if (this.#kernel !== undefined) met.add('kernel');
    const unmet = unmetRequirements(p.requires, met);
    if (unmet.length > 0) {
      let reason = skipReason(unmet, this.target.description, this.#kernelUnavailable);
      // The VM has an agent port vigil could not use: say why (another client holds it, no answer…).
      if (unmet.includes('guest-agent') && this.machine.agentProblem) {
        reason += ` (${sanitize(this.machine.agentProblem)})`;
      }
      return { state: 'skipped', reason };
    }
    if (!p.poll && !this.#caps.has('events') && !this.#caps.has('gdb')) {
      return { state: 'skipped', reason: `reacts to VM events only; target is ${this.target.description}` };
    }
    return { state: 'active' };
  }

  #active(): Slot<K>[] {
    return this.#slots.filter((s) => this.#state(s).state === 'active');
  }

  /** Run every due polling policy once (all of them with `force`). Never throws for a policy's fault. */
  sweep(options: { force?: boolean } = {}): Promise<SweepReport> {
    return this.#serial(() => this.#sweep(options.force ?? false));
  }

  /** `vigil check`: every applicable polling policy once; the alerts raised (health alerts included). */
  async runOnce(): Promise<Alert[]> {
    return (await this.sweep({ force: true })).alerts;
  }

  /**
   * Route a VM event to the event policies that want it. Events queue behind a running sweep; beyond
   * `maxPendingEvents` they are dropped and the drop is reported (a guest can cause event storms).
   */
  handleEvent(ev: VmEvent): Promise<Alert[]> {
    if (this.#pendingEvents >= this.#maxPendingEvents) {
      this.#droppedEvents++;
      return Promise.resolve([]);
    }
    this.#pendingEvents++;
    return this.#serial(() => {
      this.#pendingEvents--;
      return this.#event(ev);
    });
  }

  /** Sweep on a timer until stop(): the next sweep is scheduled after the previous ends, so none overlap. */
  start(): void {
    if (this.#looping) return;
    this.#looping = true;
    this.#arm(0);
  }

  /** Stop the loop; resolves once the sweep (and queued events) in progress have finished. */
  async stop(): Promise<void> {
    this.#looping = false;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    await this.#tick;
    await this.idle();
  }

  get running(): boolean {
    return this.#looping;
  }

  /** Resolves when nothing is running or queued. */
  async idle(): Promise<void> {
    let tail: Promise<unknown>;
    do {
      tail = this.#tail;
      await tail;
    } while (tail !== this.#tail);
  }

  /** Forget one policy's baseline, or all of them (which also recovers from an unreadable baseline file). */
  resetBaseline(policy?: string): Promise<void> {
    return this.#serial(async () => {
      if (policy === undefined) {
        await this.#store.reset(this.vm);
        this.#doc = newBaselineDoc(this.vm, this.#iso());
        this.#docReadOnly = false;
        this.#docDirty = false;
        this.#sticky.delete('baseline-unreadable');
        return;
      }
      await this.#loadBaseline();
      if (this.#docReadOnly) {
        throw new VigilError(
          'policy',
          'state',
          'the baseline file is unreadable: reset all baselines to replace it',
        );
      }
      if (this.#doc!.policies.delete(policy)) {
        this.#doc!.header.updated = this.#iso();
        await this.#store.save(this.vm, this.#doc!);
      }
    });
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  #arm(delayMs: number): void {
    this.#cancelTimer = this.#clock.setTimer(() => {
      this.#cancelTimer = undefined;
      this.#tick = this.#loopOnce();
    }, delayMs);
  }

  async #loopOnce(): Promise<void> {
    if (!this.#looping) return;
    try {
      await this.sweep();
    } catch (e) {
      this.#o.onError?.(e);
    }
    if (!this.#looping) return;
    const now = this.#clock.now();
    const due = this.#active()
      .filter((s) => s.policy.poll)
      .map((s) => s.nextDue - now);
    // Events-only engines need no timer: handleEvent drives them.
    if (due.length > 0) this.#arm(Math.min(MAX_SLEEP_MS, Math.max(10, Math.min(...due))));
  }

  async #sweep(force: boolean): Promise<SweepReport> {
    const n = ++this.#sweepNo;
    const t0 = this.#clock.now();
    const report: SweepReport = {
      sweep: n,
      started: new Date(t0).toISOString(),
      forced: force,
      durationMs: 0,
      overBudget: false,
      runs: [],
      alerts: [],
    };
    const engineHealth: Finding[] = [];
    this.#responder.beginBatch();
    if (this.#o.beforeSweep) {
      try {
        await this.#o.beforeSweep();
      } catch (e) {
        engineHealth.push(
          health('before-sweep-failed', 'medium', `preparing the sweep failed: ${errorText(e)}`, {}),
        );
      }
    }
    await this.#loadBaseline();
    const active = [...this.#active()];
    for (const [i, s] of active.entries()) {
      const p = s.policy;
      const due = force || this.#clock.now() >= s.nextDue;
      this.#o.onPolicyStart?.(p.id, i, active.length);
      if (p.poll && due) {
        await this.#runPoll(s, n, report);
      } else if (!p.poll && p.learn && this.#needsLearn(s)) {
        await this.#runPoll(s, n, report);
      }
    }
    engineHealth.push(...(await this.#saveBaseline()));
    const duration = this.#clock.now() - t0;
    if (duration > this.#budgetMs) {
      report.overBudget = true;
      const slowest = [...report.runs]
        .sort((a, b) => b.durationMs - a.durationMs)
        .slice(0, 5)
        .map((r) => ({ policy: r.policy, ms: r.durationMs }));
      engineHealth.push(
        health('sweep-budget', 'low', `sweep took ${duration} ms, over the budget of ${this.#budgetMs} ms`, {
          durationMs: duration,
          budgetMs: this.#budgetMs,
          slowest,
        }),
      );
    }
    for (const [name, msg] of this.#sinksDown) {
      engineHealth.push(
        health(`sink-failed:${name}`, 'medium', `alert delivery to ${name} failed: ${msg}`, {}),
      );
    }
    engineHealth.push(...this.#sticky.values());
    const outcome = this.#tracker.poll(ENGINE_STREAM, engineHealth, true);
    await this.#emitHealth(outcome.raise, report.alerts);
    report.durationMs = duration;
    return report;
  }

  #needsLearn(s: Slot<K>): boolean {
    const b = new StagedBaseline(this.#doc!, s.policy.id, this.#identity);
    return !b.exists || b.identityChanged;
  }

  /** One policy's turn in a sweep: learn if needed, poll, track, respond, deliver. */
  async #runPoll(s: Slot<K>, n: number, report: SweepReport): Promise<void> {
    const p = s.policy;
    const start = this.#clock.now();
    const run: PolicyRun = {
      policy: p.id,
      outcome: 'ok',
      durationMs: 0,
      findings: 0,
      raised: 0,
      cleared: [],
      notes: 0,
    };
    report.runs.push(run);
    const healthFindings: Finding[] = [];
    if (s.inFlight) {
      run.outcome = 'busy';
      s.nextDue = start + s.intervalMs;
      // Keep the timeout alert active (not cleared) while the abandoned run still holds the policy.
      healthFindings.push(failedFinding(p.id, `still running after ${this.#timeoutMs} ms`, 'timeout'));
      this.#tracker.poll(`health:${p.id}`, healthFindings, true);
      return;
    }
    const notes: Notes = { count: 0, items: [] };
    const abort = new LazyAbort();
    const staged = new StagedBaseline(this.#doc!, p.id, this.#identity);
    const ctx = this.#context(s, staged, notes, abort, n, (check, reason) => {
      const list = (run.skipped ??= []);
      if (list.length < MAX_SKIPS_KEPT && !list.some((x) => x.check === check)) list.push({ check, reason });
    });
    const alerts: Alert[] = [];
    try {
      if (p.learn && (!staged.exists || staged.identityChanged)) {
        const relearn = staged.exists;
        const previous = this.#doc!.policies.get(p.id)?.identity;
        if (relearn) staged.clear();
        await this.#bounded(s, abort, () => p.learn!(ctx, staged));
        if (notes.count > 0) {
          // Learning from a partial view would bake the gap into the baseline: try again next sweep.
          run.outcome = 'incomplete';
        } else {
          staged.commit(this.#iso(), true);
          this.#docDirty = true;
          run.outcome = 'learned';
          if (relearn) {
            const f = health(
              `baseline-relearned:${p.id}`,
              'info',
              `kernel changed${this.#identity?.release ? ` (now ${this.#identity.release})` : ''}: baseline of ${p.id} re-learned`,
              {
                policy: p.id,
                previous: previous ?? null,
                current: this.#identity ? storedIdentity(this.#identity) : null,
              },
            );
            const ev = this.#tracker.event('health:events', [f], this.#clock.now());
            await this.#emitHealth(ev.raise, alerts);
          }
        }
      }
      if (p.poll && run.outcome !== 'incomplete') {
        const findings = checkFindings(await this.#bounded(s, abort, () => p.poll!(ctx)), p.id);
        if (staged.dirty) this.#docDirty = staged.commit(this.#iso()) || this.#docDirty;
        const out = this.#tracker.poll(p.id, findings, notes.count === 0);
        run.findings = findings.length;
        run.cleared = out.cleared;
        run.raised = out.raise.length;
        if (out.overflow > 0) {
          const max = this.#tracker.maxActiveKeys;
          healthFindings.push(
            health(
              `overflow:${p.id}`,
              'medium',
              `policy ${p.id} reported more than ${max} distinct findings; ${out.overflow} were dropped`,
              { policy: p.id, limit: max, dropped: out.overflow },
            ),
          );
        }
        await this.#emitPolicyAlerts(s, out.raise, alerts);
      }
    } catch (e) {
      run.outcome = 'failed';
      run.error = sanitize(errorText(e), 500);
      s.stats.failures++;
      healthFindings.push(failedFinding(p.id, run.error, isVigilError(e) ? e.kind : undefined));
    }
    run.notes = notes.count;
    healthFindings.push(...notesFindings(p.id, notes));
    const hOut = this.#tracker.poll(`health:${p.id}`, healthFindings, true);
    await this.#emitHealth(hOut.raise, alerts);
    const end = this.#clock.now();
    run.durationMs = end - start;
    s.nextDue = start + s.intervalMs;
    s.stats.runs++;
    s.stats.lastMs = run.durationMs;
    s.stats.totalMs += run.durationMs;
    s.stats.maxMs = Math.max(s.stats.maxMs, run.durationMs);
    report.alerts.push(...alerts);
  }

  async #event(ev: VmEvent): Promise<Alert[]> {
    const alerts: Alert[] = [];
    this.#responder.beginBatch();
    await this.#loadBaseline();
    const now = () => this.#clock.now();
    if (this.#droppedEvents > 0) {
      const f = health(
        'events-dropped',
        'medium',
        `${this.#droppedEvents} VM events were dropped: too many queued`,
        {
          dropped: this.#droppedEvents,
        },
      );
      this.#droppedEvents = 0;
      await this.#emitHealth(this.#tracker.event('health:events', [f], now()).raise, alerts);
    }
    for (const s of this.#active()) {
      const p = s.policy;
      if (!p.onEvent || (p.eventNames && !p.eventNames.includes(ev.name)) || s.inFlight) continue;
      const notes: Notes = { count: 0, items: [] };
      const abort = new LazyAbort();
      const staged = new StagedBaseline(this.#doc!, p.id, this.#identity);
      const ctx = this.#context(s, staged, notes, abort, this.#sweepNo);
      const healthFindings: Finding[] = [];
      const start = now();
      try {
        const findings = checkFindings(await this.#bounded(s, abort, () => p.onEvent!(ev, ctx)), p.id);
        if (staged.dirty) this.#docDirty = staged.commit(this.#iso()) || this.#docDirty;
        await this.#emitPolicyAlerts(s, this.#tracker.event(p.id, findings, now()).raise, alerts);
      } catch (e) {
        s.stats.failures++;
        const msg = sanitize(errorText(e), 500);
        healthFindings.push(failedFinding(p.id, `on event ${sanitize(ev.name, 64)}: ${msg}`, undefined));
      }
      healthFindings.push(...notesFindings(p.id, notes));
      await this.#emitHealth(this.#tracker.event(`health:${p.id}`, healthFindings, now()).raise, alerts);
      const ms = now() - start;
      s.stats.runs++;
      s.stats.lastMs = ms;
      s.stats.totalMs += ms;
      s.stats.maxMs = Math.max(s.stats.maxMs, ms);
    }
    // Event-only engines have no sweeps to save for them; a failed save is retried by the next one.
    await this.#saveBaseline();
    return alerts;
  }

  #context(
    s: Slot<K>,
    staged: StagedBaseline,
    notes: Notes,
    abort: LazyAbort,
    n: number,
    onSkip?: (check: string, reason: string) => void,
  ): SweepContext<K> {
    const kernel = this.#kernel;
    const clock = this.#clock;
    return {
      vm: this.vm,
      machine: this.machine,
      kernel,
      requireKernel: () => {
        if (kernel === undefined)
          throw new VigilError('policy', 'state', 'no kernel: bootstrap did not succeed');
        return kernel;
      },
      baseline: staged,
      options: s.options,
      sweep: n,
      get signal() {
        return abort.signal;
      },
      now: () => clock.now(),
      note: (kind, detail) => {
        notes.count++;
        if (notes.items.length < MAX_NOTES_KEPT) {
          notes.items.push({ kind: sanitize(String(kind), 32), detail: sanitize(String(detail), 500) });
        }
      },
      skip: (check, reason) => onSkip?.(sanitize(String(check), 64), sanitize(String(reason), 500)),
    };
  }

  /**
   * Run a policy step with the policy time limit. Only asynchronous work can be limited: a synchronous
   * policy holds the thread until it returns, so its own walk bounds are what bound it. A timed-out run
   * is abandoned (its signal aborted) and the policy stays busy until the promise settles.
   */
  #bounded<T>(s: Slot<K>, abort: LazyAbort, fn: () => T | Promise<T>): Promise<T> {
    const result = fn();
    if (!(result instanceof Promise)) return Promise.resolve(result);
    return new Promise<T>((resolve, reject) => {
      let timedOut = false;
      const cancel = this.#clock.setTimer(() => {
        timedOut = true;
        s.inFlight = true;
        const err = new VigilError('policy', 'timeout', `timed out after ${this.#timeoutMs} ms`);
        abort.abort(err);
        reject(err);
      }, this.#timeoutMs);
      result.then(
        (v) => {
          cancel();
          if (timedOut) s.inFlight = false;
          else resolve(v);
        },
        (e: unknown) => {
          cancel();
          if (timedOut) s.inFlight = false;
          else reject(e);
        },
      );
    });
  }

  async #emitPolicyAlerts(s: Slot<K>, raise: readonly Finding[], out: Alert[]): Promise<void> {
    const p = s.policy;
    for (const f of raise) {
      const alert = makeAlert(f, {
        vm: this.vm,
        policy: p.id,
        time: this.#clock.now(),
        defaultSeverity: p.severity,
        ...(s.severity !== undefined ? { severityOverride: s.severity } : {}),
        ...(p.technique !== undefined ? { technique: p.technique } : {}),
      });
      alert.response = await this.#responder.respond(alert, s.response);
      out.push(alert);
      await this.#deliver(alert);
    }
  }

  async #emitHealth(raise: readonly Finding[], out: Alert[]): Promise<void> {
    for (const f of raise) {
      const alert = makeAlert(f, {
        vm: this.vm,
        policy: HEALTH_POLICY_ID,
        time: this.#clock.now(),
        defaultSeverity: f.severity,
      });
      alert.response = [{ action: 'alert', ok: true }];
      out.push(alert);
      await this.#deliver(alert);
    }
  }

  /**
   * Hand an alert to the callback and every sink. A failing sink is reported, never fatal; it counts as
   * down until a write to it succeeds again, so the health alert neither repeats nor clears on a quiet sweep.
   */
  async #deliver(alert: Alert): Promise<void> {
    if (this.#o.onAlert) {
      try {
        await this.#o.onAlert(alert);
        this.#sinksDown.delete('onAlert');
      } catch (e) {
        this.#sinksDown.set('onAlert', sanitize(errorText(e), 300));
      }
    }
    const sinks = this.#o.sinks ?? [];
    const results = await Promise.allSettled(sinks.map((s) => s.write(alert)));
    results.forEach((r, i) => {
      const name = sinks[i]!.name;
      if (r.status === 'rejected') this.#sinksDown.set(name, sanitize(errorText(r.reason), 300));
      else this.#sinksDown.delete(name);
    });
  }

  async #loadBaseline(): Promise<void> {
    if (this.#doc) return;
    try {
      this.#doc = (await this.#store.load(this.vm)) ?? newBaselineDoc(this.vm, this.#iso());
    } catch (e) {
      // Keep running on an empty in-memory baseline but never overwrite the file: a person may want it.
      this.#doc = newBaselineDoc(this.vm, this.#iso());
      this.#docReadOnly = true;
      this.#sticky.set(
        'baseline-unreadable',
        health('baseline-unreadable', 'medium', `baselines not loaded (${errorText(e)}); not saving them`, {
          store: this.#store.description,
        }),
      );
    }
  }

  async #saveBaseline(): Promise<Finding[]> {
    if (!this.#docDirty || this.#docReadOnly || !this.#doc) return [];
    const doc = this.#doc;
    doc.header.updated = this.#iso();
    doc.header.vigil = vigilVersion();
    if (this.#identity) doc.header.kernel = storedIdentity(this.#identity);
    try {
      await this.#store.save(this.vm, doc);
      this.#docDirty = false;
      return [];
    } catch (e) {
      return [health('baseline-save-failed', 'medium', `saving baselines failed: ${errorText(e)}`, {})];
    }
  }

  #iso(): string {
    return new Date(this.#clock.now()).toISOString();
  }
}

/**
 * An AbortController made only when someone asks for the signal or aborts: creating one costs ~10 µs,
 * more than a quiet policy's whole turn, and most policies never look at it.
 */
class LazyAbort {
  #controller: AbortController | undefined;

  get signal(): AbortSignal {
    return (this.#controller ??= new AbortController()).signal;
  }

  abort(reason: unknown): void {
    (this.#controller ??= new AbortController()).abort(reason);
  }
}

/** Capabilities a machine offers by its shape: a dump is a Machine without events or control. */
export function describeTarget(m: Machine): TargetInfo {
  const caps: Requirement[] = [];
  if (m.events || m.control) caps.push('live');
  if (m.events) caps.push('events');
  if (m.control) caps.push('control');
  if (m.debug) caps.push('gdb');
  if (m.agent) caps.push('guest-agent');
  return { description: caps.includes('live') ? 'a live VM' : 'a memory dump', capabilities: caps };
}

function positive(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0)
    throw new VigilError('policy', 'usage', `${name} must be a positive number`);
  return v;
}

function errorText(e: unknown): string {
  if (isVigilError(e)) return e.toLine();
  return e instanceof Error ? e.message : String(e);
}

const health = (
  key: string,
  severity: Severity,
  summary: string,
  evidence: Record<string, unknown>,
): Finding => ({
  key,
  severity,
  summary,
  evidence,
});

function failedFinding(policy: string, error: string, kind: string | undefined): Finding {
  // Keyed by policy only: the message may vary from run to run, and a policy failing every sweep is one
  // condition. A failing policy may be the guest defeating it (a corrupted structure), hence 'medium'.
  return health(`failed:${policy}`, 'medium', `policy ${policy} failed: ${error}`, {
    policy,
    error,
    ...(kind !== undefined ? { kind } : {}),
  });
}

function notesFindings(policy: string, notes: Notes): Finding[] {
  const byKind = new Map<string, { kind: string; detail: string }[]>();
  for (const n of notes.items) byKind.set(n.kind, [...(byKind.get(n.kind) ?? []), n]);
  return [...byKind].map(([kind, items]) =>
    health(
      `truncated:${policy}:${kind}`,
      'medium',
      `policy ${policy} saw a partial view (${kind}): ${items[0]!.detail}`,
      { policy, kind, notes: notes.count, details: items.slice(0, 20).map((i) => i.detail) },
    ),
  );
}

/** Policies are code we ship, but a bug must become a health alert, not a crash in a sink. */
function checkFindings(raw: unknown, policy: string): Finding[] {
  if (!Array.isArray(raw)) throw new VigilError('policy', 'malformed', `${policy} returned no findings list`);
  for (const f of raw as unknown[]) {
    const o = f as Partial<Finding> | null;
    if (typeof o !== 'object' || o === null || typeof o.key !== 'string' || o.key.length === 0) {
      throw new VigilError('policy', 'malformed', `${policy} returned a finding without a key`);
    }
    if (typeof o.summary !== 'string') {
      throw new VigilError(
        'policy',
        'malformed',
        `${policy} returned finding "${sanitize(o.key, 80)}" without a summary`,
      );
    }
    if (typeof o.evidence !== 'object' || o.evidence === null) {
      throw new VigilError(
        'policy',
        'malformed',
        `${policy} returned finding "${sanitize(o.key, 80)}" without evidence`,
      );
    }
  }
  return raw as Finding[];
}
