// What a policy module is (Livewire's "policy modules"), the context a policy runs in, and small helpers
// the engine and policies share. The engine never imports os/: the Linux Kernel object reaches a policy
// through the generic `K` slot of its context, so a policy module written as `Policy<Kernel>` (importing
// os/linux itself) gets the real type while the engine stays Linux-agnostic.
import type { Machine, VmEvent } from '../vmm/types.js';
import { VigilError } from '../util/errors.js';
import type { BaselineAccess } from './baseline.js';
import type { Finding, Requirement, Severity } from './types.js';

/** The policy id health alerts carry: vigil reporting on itself (a failed policy, a truncated walk). */
export const HEALTH_POLICY_ID = 'vigil-health';

/**
 * Policy ids become baseline file keys, alert fields and config keys: keep them short and plain. A
 * leading underscore is reserved for the baseline file's header, `vigil-health` for the engine itself.
 */
const POLICY_ID_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function checkPolicyId(id: string): string {
  if (!POLICY_ID_RE.test(id)) {
    throw new VigilError('policy', 'usage', `bad policy id "${id}": use 1-64 of a-z, 0-9, '.', '_', '-'`);
  }
  if (id === HEALTH_POLICY_ID) throw new VigilError('policy', 'usage', `policy id "${id}" is reserved`);
  return id;
}

export const SEVERITIES: readonly Severity[] = ['info', 'low', 'medium', 'high', 'critical'];
export const isSeverity = (s: unknown): s is Severity => SEVERITIES.includes(s as Severity);

/** Milliseconds and timers, injectable so timing tests are deterministic. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Run `fn` once after `ms` milliseconds; the returned function cancels it. */
  setTimer(fn: () => void, ms: number): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

/**
 * What a policy sees while it runs: one per policy per sweep (or per event). Baseline writes made through
 * `baseline` are staged and only kept when the run completes without throwing.
 */
export interface SweepContext<K = unknown> {
  /** VM name (as the operator named it; not guest-derived). */
  readonly vm: string;
  readonly machine: Machine;
  /**
   * The bootstrapped OS kernel (the os layer's Kernel), or undefined when none was found. Policies that
   * list 'kernel' in `requires` only run when it is present; `requireKernel()` narrows the type.
   */
  readonly kernel: K | undefined;
  requireKernel(): K;
  /** This policy's slice of the VM's baseline. */
  readonly baseline: BaselineAccess;
  /** The per-policy options object from config (already passed through `parseOptions` if defined). */
  readonly options: Readonly<Record<string, unknown>>;
  /** Sweep sequence number (1, 2, …): lets a policy key its own per-sweep caches. */
  readonly sweep: number;
  /** Aborted when the policy overruns its time limit or the engine stops: long async work should check it. */
  readonly signal: AbortSignal;
  now(): number;
  /**
   * Report that the run saw less than everything (a walk hit its bound, looped, or hit unmapped memory;
   * `kind` as in os/linux WalkIssue: 'bound' | 'cycle' | 'unmapped' | 'malformed'). The engine turns
   * notes into health alerts: a truncated walk can be the guest hiding something. A poll with notes
   * does not clear earlier alerts, and a learn with notes is not kept.
   */
  note(kind: string, detail: string): void;
  /**
   * Report that one check of the policy cannot run on this target (what it reads is not there: a dump has
   * no vCPU device state). Not an error and not an alert: `vigil check` lists it with the skipped policies.
   * Optional so that hand-made contexts (tests) need not provide it.
   */
  skip?(check: string, reason: string): void;
}

/** Findings as a policy may return them: a list, sync or async. */
export type Findings = Finding[] | Promise<Finding[]>;

/**
 * A policy module. Polling policies (`poll`) run in sweeps every `defaultIntervalMs`; event policies
 * (`onEvent`) react to the VM events named in `eventNames`. A policy may be both.
 */
export interface Policy<K = unknown> {
  /** Short id: config key, alert `policy` field, baseline key, e.g. "raw-socket". */
  readonly id: string;
  readonly title: string;
  /** One or two sentences for `vigil policies`: what it detects and how. */
  readonly description: string;
  /** MITRE ATT&CK technique id where one fits, e.g. "T1014" (rootkit). */
  readonly technique?: string;
  /** Severity of findings that do not set their own, before any config override. */
  readonly severity: Severity;
  /** What the target must offer; unmet needs skip the policy with a stated reason. */
  readonly requires: readonly Requirement[];
  /** Polling interval when config does not set one. */
  readonly defaultIntervalMs?: number;
  poll?(ctx: SweepContext<K>): Findings;
  onEvent?(ev: VmEvent, ctx: SweepContext<K>): Findings;
  /** Event names this policy wants (e.g. "NIC_RX_FILTER_CHANGED"); absent means every event. */
  readonly eventNames?: readonly string[];
  /**
   * Record a baseline of the clean system. Called before the first poll when the policy has no baseline
   * yet, and again (on an emptied baseline) when the kernel identity changed (a reboot: new KASLR slide).
   * Its writes are kept only if it neither throws nor notes a truncated walk.
   */
  learn?(ctx: SweepContext<K>, baseline: BaselineAccess): void | Promise<void>;
  /** Validate and normalise the config options (e.g. with a zod schema's `parse`); throw to reject them. */
  parseOptions?(raw: Readonly<Record<string, unknown>>): Record<string, unknown>;
}

/** Identity helper that lets TypeScript infer `K` for a policy literal. */
export const definePolicy = <K = unknown>(p: Policy<K>): Policy<K> => p;

/** How each requirement reads in a skip reason: "needs a live VM; target is a dump". */
export const REQUIREMENT_TEXT: Readonly<Record<Requirement, string>> = {
  kernel: 'a Linux kernel found in memory',
  live: 'a live VM',
  events: 'a QMP event stream',
  control: 'VM control (pause, resume, dump)',
  gdb: 'the GDB stub',
  'guest-agent': 'qemu-guest-agent',
};

export function unmetRequirements(
  requires: readonly Requirement[],
  met: ReadonlySet<Requirement>,
): Requirement[] {
  return [...new Set(requires)].filter((r) => !met.has(r));
}

/**
 * The sentence that says why a policy is skipped. The kernel gets its own clause because its absence has
 * a cause (bootstrap failed: no BTF…) rather than a target kind.
 */
export function skipReason(
  unmet: readonly Requirement[],
  targetDescription: string,
  kernelReason?: string,
): string {
  const parts: string[] = [];
  const others = unmet.filter((r) => r !== 'kernel');
  if (others.length > 0) {
    parts.push(`needs ${joinAnd(others.map((r) => REQUIREMENT_TEXT[r]))}; target is ${targetDescription}`);
  }
  if (unmet.includes('kernel')) {
    parts.push(`needs ${REQUIREMENT_TEXT.kernel}: ${kernelReason ?? 'none was loaded'}`);
  }
  return parts.join('; ');
}

function joinAnd(items: string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

/** A number option with a default; throws a usage error naming the policy when it has the wrong type. */
export function numberOption(ctx: SweepContext<unknown>, name: string, fallback: number): number {
  const v = ctx.options[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new VigilError('policy', 'usage', `option "${name}" must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A boolean option with a default; throws a usage error naming the option when it has the wrong type. */
export function booleanOption(ctx: SweepContext<unknown>, name: string, fallback: boolean): boolean {
  const v = ctx.options[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') {
    throw new VigilError(
      'policy',
      'usage',
      `option "${name}" must be true or false, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** A string-list option with a default (e.g. allowed process names). */
export function stringListOption(
  ctx: SweepContext<unknown>,
  name: string,
  fallback: readonly string[],
): string[] {
  const v = ctx.options[name];
  if (v === undefined) return [...fallback];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new VigilError('policy', 'usage', `option "${name}" must be a list of strings`);
  }
  return [...v];
}
