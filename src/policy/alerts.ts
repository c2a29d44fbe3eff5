// Alert lifecycle: which findings become alerts. A polling policy reports the conditions it sees on every
// poll; alerting on each poll would repeat the same alert every few seconds, so a finding key raises once,
// stays quiet while it persists, and raises again only after one complete poll without it. Event findings
// are single occurrences and raise each time, except that a burst of the same key within a short window
// raises once (a guest toggling promiscuous mode in a loop must not flood the sinks).
// All state is bounded: the guest controls how many findings a policy can see.
import { randomUUID } from 'node:crypto';
import { sanitize } from '../util/sanitize.js';
import { isSeverity } from './policy.js';
import type { Alert, Finding, Severity } from './types.js';

export interface TrackerOptions {
  /** Keys remembered per stream (policy); findings beyond it are dropped and counted as overflow. */
  maxActiveKeys?: number;
  /** Event findings with the same key within this many milliseconds raise once. */
  eventDedupeMs?: number;
}

export interface PollOutcome {
  /** Findings that raise an alert now (first seen, or back after clearing). */
  raise: Finding[];
  /** Keys that were active and are gone after this (complete) poll. */
  cleared: string[];
  /** Findings dropped because the stream already tracks `maxActiveKeys` keys. */
  overflow: number;
}

export interface EventOutcome {
  raise: Finding[];
  /** Findings not raised because the same key was raised within the dedupe window. */
  suppressed: number;
}

export const DEFAULT_MAX_ACTIVE_KEYS = 10_000;
export const DEFAULT_EVENT_DEDUPE_MS = 5_000;

/**
 * Per-stream finding state. A stream is usually a policy id; the engine also keeps one health stream per
 * policy and one for itself, so "policy X keeps failing" raises once, like any other persistent condition.
 */
export class AlertTracker {
  readonly maxActiveKeys: number;
  readonly eventDedupeMs: number;
  readonly #active = new Map<string, Set<string>>();
  readonly #lastEvent = new Map<string, Map<string, number>>();

  constructor(options: TrackerOptions = {}) {
    this.maxActiveKeys = Math.max(1, Math.floor(options.maxActiveKeys ?? DEFAULT_MAX_ACTIVE_KEYS));
    this.eventDedupeMs = Math.max(0, options.eventDedupeMs ?? DEFAULT_EVENT_DEDUPE_MS);
  }

  /**
   * One poll's findings. `complete` is false when the poll saw less than everything (a truncated walk):
   * then nothing clears, because a key missing from a partial view may still be there, and an attacker
   * who can truncate walks at will must not be able to make an alert clear and re-raise on demand.
   */
  poll(stream: string, findings: readonly Finding[], complete: boolean): PollOutcome {
    const prev = this.#active.get(stream) ?? new Set<string>();
    const cur = new Set<string>();
    const raise: Finding[] = [];
    let overflow = 0;
    for (const f of findings) {
      if (cur.has(f.key)) continue;
      if (cur.size >= this.maxActiveKeys) {
        overflow++;
        continue;
      }
      cur.add(f.key);
      if (!prev.has(f.key)) raise.push(f);
    }
    const cleared: string[] = [];
    if (complete) {
      for (const k of prev) if (!cur.has(k)) cleared.push(k);
    } else {
      for (const k of prev) {
        if (cur.size >= this.maxActiveKeys) break;
        cur.add(k);
      }
    }
    if (cur.size === 0) this.#active.delete(stream);
    else this.#active.set(stream, cur);
    return { raise, cleared, overflow };
  }

  /** One event's findings at time `now` (milliseconds). */
  event(stream: string, findings: readonly Finding[], now: number): EventOutcome {
    let last = this.#lastEvent.get(stream);
    if (!last) this.#lastEvent.set(stream, (last = new Map()));
    const raise: Finding[] = [];
    let suppressed = 0;
    for (const f of findings) {
      const at = last.get(f.key);
      // The window runs from the raise, not from the latest duplicate: a sustained storm raises once per
      // window instead of going silent for as long as it lasts.
      if (at !== undefined && now - at < this.eventDedupeMs) {
        suppressed++;
        continue;
      }
      last.delete(f.key); // re-insert at the end: the map stays ordered by raise time
      this.#evict(last, now);
      last.set(f.key, now);
      raise.push(f);
    }
    return { raise, suppressed };
  }

  /** Keys currently active in a stream (for status displays and tests). */
  active(stream: string): ReadonlySet<string> {
    return this.#active.get(stream) ?? new Set();
  }

  /** Forget a stream, e.g. after its policy's baseline was reset. */
  forget(stream: string): void {
    this.#active.delete(stream);
    this.#lastEvent.delete(stream);
  }

  #evict(last: Map<string, number>, now: number): void {
    if (last.size < this.maxActiveKeys) return;
    for (const [k, at] of last) {
      if (last.size < this.maxActiveKeys && now - at < this.eventDedupeMs) break;
      last.delete(k);
    }
  }
}

export interface AlertMeta {
  vm: string;
  policy: string;
  /** Milliseconds since the epoch. */
  time: number;
  /** Policy default severity, used when a finding carries none or an invalid one. */
  defaultSeverity: Severity;
  /** Config override: replaces every finding's severity. */
  severityOverride?: Severity;
  /** Policy technique, used when the finding sets none. */
  technique?: string;
}

/**
 * Build the alert for a finding. Summary and key are sanitised again here (policies should already have
 * sanitised guest strings; this is the last point before sinks and terminals, and sanitising is idempotent).
 */
export function makeAlert(f: Finding, meta: AlertMeta): Alert {
  const technique = f.technique ?? meta.technique;
  return {
    id: randomUUID(),
    time: new Date(meta.time).toISOString(),
    vm: meta.vm,
    policy: meta.policy,
    severity: meta.severityOverride ?? (isSeverity(f.severity) ? f.severity : meta.defaultSeverity),
    ...(technique !== undefined ? { technique: sanitize(technique, 64) } : {}),
    summary: sanitize(f.summary, 1000),
    evidence: f.evidence,
    key: sanitize(f.key, 1024),
  };
}
