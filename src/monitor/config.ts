// `vigil watch` configuration: a YAML file (and command-line options on top of it) validated strictly with
// zod. Unknown keys are errors (they are usually typos that would otherwise silently do nothing), and every
// problem names its key with its path, e.g. `targets[1].qmp: required`, all of them on one line.
// docs/config.md is the reference for every key.

import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import type { EngineConfig, PolicyConfig } from '../policy/engine.js';
import { SEVERITIES, type Policy } from '../policy/policy.js';
import { RESPONSE_MODES } from '../policy/responses.js';
import { describeSysError, VigilError } from '../util/errors.js';
import { DEFAULT_DISCOVERY_GLOBS, nameFromSocket } from './discovery.js';
import { sinkConfigSchema, type SinkConfig } from './sinks/config.js';
import { MONITOR_ORIGIN } from './sinks/types.js';

/** A VM name as the operator gives it: used in logs, alerts, metrics labels and baseline file names. */
export const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$/;
/** Largest config file read: a config is a few kilobytes; anything bigger is a mistake. */
export const MAX_CONFIG_BYTES = 1 << 20;

const ms = (min: number) => z.number().int().min(min).max(86_400_000);

const targetSchema = z
  .object({
    name: z.string().regex(VM_NAME, 'letters, digits and ._:@- only, at most 64 characters').optional(),
    qmp: z.string().min(1),
    pid: z.number().int().positive().optional(),
    /** qemu-guest-agent's socket: a path or host:port, 'auto' (found through QMP; the default) or false. */
    qga: z.union([z.string().min(1), z.literal(false)]).optional(),
    /** The VM's GDB stub for watchpoints: an address, 'auto' (what QEMU reports; the default) or false. */
    gdb: z.union([z.string().min(1), z.literal(false)]).optional(),
  })
  .strict();

const policySchema = z
  .object({
    enabled: z.boolean().optional(),
    intervalMs: ms(100).optional(),
    response: z.enum(RESPONSE_MODES as [string, ...string[]]).optional(),
    severity: z.enum(SEVERITIES as [string, ...string[]]).optional(),
    options: z.record(z.unknown()).optional(),
  })
  .strict();

const retrySchema = z.object({ initialMs: ms(10).optional(), maxMs: ms(10).optional() }).strict();

export const watchConfigSchema = z
  .object({
    targets: z.array(targetSchema).max(10_000).optional(),
    discovery: z
      .object({
        globs: z.array(z.string().min(1)).min(1).max(100).optional(),
        intervalMs: ms(500).optional(),
      })
      .strict()
      .optional(),
    policies: z.record(z.string(), policySchema).optional(),
    defaultIntervalMs: ms(100).optional(),
    sweepBudgetMs: ms(1).optional(),
    policyTimeoutMs: ms(100).optional(),
    maxPendingEvents: z.number().int().min(1).max(1_000_000).optional(),
    dumpDir: z.string().min(1).optional(),
    baselineDir: z.string().min(1).optional(),
    sinks: z.array(sinkConfigSchema).max(100).optional(),
    metrics: z
      .object({
        port: z.number().int().min(0).max(65535),
        host: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    retry: z
      .object({ reconnect: retrySchema.optional(), bootstrap: retrySchema.optional() })
      .strict()
      .optional(),
    /** How often the vCPU is asked which kernel it runs (a reboot the events missed). */
    identityCheckMs: ms(100).optional(),
  })
  .strict();

export type RawWatchConfig = z.infer<typeof watchConfigSchema>;

export interface TargetSpec {
  name: string;
  qmp: string;
  pid?: number;
  /**
   * qemu-guest-agent: its chardev socket (a path or host:port); 'auto' (the default) finds it through QMP
   * (QOM and query-chardev); false never uses it.
   */
  qga?: string | false;
  /**
   * GDB stub for write watchpoints: "host:port" or a unix socket path; 'auto' (the default) uses the stub
   * QEMU reports in query-chardev, if any; false never attaches one.
   */
  gdb?: string | false;
  /** Found by a discovery glob rather than configured. */
  discovered?: boolean;
}

export interface RetrySpec {
  initialMs: number;
  maxMs: number;
}

export interface WatchConfig {
  targets: TargetSpec[];
  discovery?: { globs: string[]; intervalMs: number };
  engine: EngineConfig;
  sinks: SinkConfig[];
  metrics?: { port: number; host: string };
  baselineDir?: string;
  retry: { reconnect: RetrySpec; bootstrap: RetrySpec };
  identityCheckMs: number;
}

export const DEFAULTS = {
  discoveryIntervalMs: 10_000,
  reconnect: { initialMs: 500, maxMs: 10_000 },
  bootstrap: { initialMs: 500, maxMs: 3_000 },
  identityCheckMs: 5_000,
} as const;

/** Options of the command line that add to (or override) the file. */
export interface CliWatchOptions {
  qmp?: string[];
  /** GDB stub of the one --qmp VM (an address, 'auto', or false for none). */
  gdb?: string | false;
  /** true: the default globs. */
  discover?: string[] | true;
  metricsPort?: number;
  jsonl?: string;
  webhook?: string;
  spool?: string;
}

type Path = readonly (string | number)[];

/** `targets[1].qmp`: dotted keys, bracketed indices, the way a person reads YAML. */
export function formatPath(path: Path): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? p : `.${p}`;
  }
  return out || '(top level)';
}

/** One short message per zod issue, each starting with the key it is about. */
export function formatIssues(error: z.ZodError, prefix: Path = []): string[] {
  const out: string[] = [];
  for (const issue of error.issues) {
    const at = (extra: Path = []) => formatPath([...prefix, ...issue.path, ...extra]);
    switch (issue.code) {
      case 'unrecognized_keys':
        for (const k of issue.keys) out.push(`${at([k])}: unknown key`);
        break;
      case 'invalid_type':
        out.push(
          issue.received === 'undefined'
            ? `${at()}: required`
            : `${at()}: expected ${issue.expected}, got ${issue.received}`,
        );
        break;
      case 'invalid_union_discriminator':
        out.push(`${at()}: must be one of ${issue.options.map((o) => JSON.stringify(o)).join(', ')}`);
        break;
      case 'invalid_enum_value':
        out.push(`${at()}: must be one of ${issue.options.map((o) => JSON.stringify(o)).join(', ')}`);
        break;
      default:
        out.push(`${at()}: ${issue.message.charAt(0).toLowerCase()}${issue.message.slice(1)}`);
    }
  }
  return out;
}

const usage = (msg: string) => new VigilError(MONITOR_ORIGIN, 'usage', msg);

export interface ParseOptions {
  /** The policies vigil has: policy keys and options are checked against them. */
  policies: readonly Policy<unknown>[];
  /** Relative paths in the file are relative to this directory (the file's own). */
  baseDir?: string;
  /** Named in errors, e.g. the file name. */
  source?: string;
}

/** Validate a parsed config document. Throws one usage error listing every problem. */
export function parseWatchConfig(input: unknown, opts: ParseOptions): WatchConfig {
  const where = opts.source ? `${opts.source}: ` : '';
  const doc = input ?? {};
  const badUrls = unparsableWebhookUrls(doc);
  if (badUrls.length > 0) throw usage(`${where}${badUrls.join('; ')}`);
  const r = watchConfigSchema.safeParse(doc);
  if (!r.success) throw usage(`${where}${formatIssues(r.error).join('; ')}`);
  const raw = r.data;
  const problems = checkSemantics(raw, opts.policies);
  if (problems.length > 0) throw usage(`${where}${problems.join('; ')}`);
  const base = opts.baseDir ?? process.cwd();
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const targets = (raw.targets ?? []).map((t) => ({
    name: t.name ?? nameFromSocket(t.qmp),
    qmp: abs(t.qmp),
    ...(t.pid !== undefined ? { pid: t.pid } : {}),
    ...(t.qga !== undefined ? { qga: agentAddress(t.qga, abs) } : {}),
    ...(t.gdb !== undefined ? { gdb: gdbAddress(t.gdb, abs) } : {}),
  }));
  const sinks = (raw.sinks ?? []).map((s): SinkConfig => {
    if (s.type === 'jsonl') return { ...s, path: abs(s.path) };
    if (s.type === 'webhook') return { ...s, spoolDir: abs(s.spoolDir) };
    return s;
  });
  const cfg: WatchConfig = {
    targets,
    engine: engineConfig(raw, opts.policies, abs),
    sinks,
    retry: {
      reconnect: { ...DEFAULTS.reconnect, ...raw.retry?.reconnect },
      bootstrap: { ...DEFAULTS.bootstrap, ...raw.retry?.bootstrap },
    },
    identityCheckMs: raw.identityCheckMs ?? DEFAULTS.identityCheckMs,
  };
  if (raw.discovery) {
    cfg.discovery = {
      globs: (raw.discovery.globs ?? [...DEFAULT_DISCOVERY_GLOBS]).map(abs),
      intervalMs: raw.discovery.intervalMs ?? DEFAULTS.discoveryIntervalMs,
    };
  }
  if (raw.metrics) cfg.metrics = { port: raw.metrics.port, host: raw.metrics.host ?? '127.0.0.1' };
  if (raw.baselineDir) cfg.baselineDir = abs(raw.baselineDir);
  return cfg;
}

/** A GDB stub address with a relative unix socket path made absolute; host:port, 'auto' and false as they are. */
function gdbAddress(v: string | false, abs: (p: string) => string): string | false {
  if (v === false || v === 'auto') return v;
  if (v.startsWith('unix:')) return `unix:${abs(v.slice(5))}`;
  return v.includes('/') ? abs(v) : v;
}

/** An agent socket with a relative path made absolute; host:port, 'auto' and false as they are. */
function agentAddress(v: string | false, abs: (p: string) => string): string | false {
  if (v === false || v === 'auto') return v;
  if (v.startsWith('unix:')) return abs(v.slice(5));
  return /^(tcp:)?[^/]+:\d+$/.test(v) ? v : abs(v);
}

/**
 * The webhook sink schema's refinements call `new URL()` even after its own URL check failed, which throws
 * a TypeError out of zod: catch those URLs first so that they get a proper message.
 */
function unparsableWebhookUrls(doc: unknown): string[] {
  const sinks = (doc as { sinks?: unknown }).sinks;
  if (!Array.isArray(sinks)) return [];
  const out: string[] = [];
  sinks.forEach((s: unknown, i) => {
    const o = s as { type?: unknown; url?: unknown } | null;
    if (
      o &&
      typeof o === 'object' &&
      o.type === 'webhook' &&
      typeof o.url === 'string' &&
      !URL.canParse(o.url)
    ) {
      out.push(`${formatPath(['sinks', i, 'url'])}: invalid url`);
    }
  });
  return out;
}

/** Checks zod cannot express on its own: policy names and options, duplicate targets, retry bounds. */
function checkSemantics(raw: RawWatchConfig, policies: readonly Policy<unknown>[]): string[] {
  const problems: string[] = [];
  const known = new Map(policies.map((p) => [p.id, p]));
  for (const [id, pc] of Object.entries(raw.policies ?? {})) {
    if (id === '*') continue;
    const p = known.get(id);
    if (!p) {
      const list = [...known.keys()].join(', ') || 'none';
      problems.push(`${formatPath(['policies', id])}: unknown policy (known: ${list})`);
      continue;
    }
    if (pc.options !== undefined && p.parseOptions) {
      try {
        p.parseOptions(pc.options);
      } catch (e) {
        const msg = e instanceof VigilError ? e.message : e instanceof Error ? e.message : String(e);
        problems.push(`${formatPath(['policies', id, 'options'])}: ${msg}`);
      }
    }
  }
  if (raw.policies?.['*']?.options !== undefined) {
    problems.push(`${formatPath(['policies', '*', 'options'])}: options belong to one policy`);
  }
  const names = new Map<string, number>();
  const sockets = new Map<string, number>();
  (raw.targets ?? []).forEach((t, i) => {
    const name = t.name ?? nameFromSocket(t.qmp);
    const prevName = names.get(name);
    if (prevName !== undefined) {
      problems.push(`${formatPath(['targets', i, 'name'])}: targets[${prevName}] is already named "${name}"`);
    }
    names.set(name, i);
    const prevSock = sockets.get(t.qmp);
    if (prevSock !== undefined) {
      problems.push(`${formatPath(['targets', i, 'qmp'])}: targets[${prevSock}] already watches this socket`);
    }
    sockets.set(t.qmp, i);
  });
  for (const k of ['reconnect', 'bootstrap'] as const) {
    const r = raw.retry?.[k];
    const initial = r?.initialMs ?? DEFAULTS[k].initialMs;
    const max = r?.maxMs ?? DEFAULTS[k].maxMs;
    if (initial > max)
      problems.push(`${formatPath(['retry', k, 'initialMs'])}: must not exceed maxMs (${max})`);
  }
  return problems;
}

/** The engine's config: `policies['*']` applied under each policy's own settings. */
function engineConfig(
  raw: RawWatchConfig,
  policies: readonly Policy<unknown>[],
  abs: (p: string) => string,
): EngineConfig {
  const all = raw.policies?.['*'] ?? {};
  const per: Record<string, PolicyConfig> = {};
  for (const p of policies) {
    const own = raw.policies?.[p.id];
    if (Object.keys(all).length === 0 && !own) continue;
    per[p.id] = { ...all, ...own } as PolicyConfig;
  }
  const e: EngineConfig = { policies: per };
  if (raw.defaultIntervalMs !== undefined) e.defaultIntervalMs = raw.defaultIntervalMs;
  if (raw.sweepBudgetMs !== undefined) e.sweepBudgetMs = raw.sweepBudgetMs;
  if (raw.policyTimeoutMs !== undefined) e.policyTimeoutMs = raw.policyTimeoutMs;
  if (raw.maxPendingEvents !== undefined) e.maxPendingEvents = raw.maxPendingEvents;
  if (raw.dumpDir !== undefined) e.dumpDir = abs(raw.dumpDir);
  return e;
}

/** Parse YAML text; a syntax error names its line and column. */
export function parseYaml(text: string, source: string): unknown {
  // uniqueKeys (the default) makes a repeated key an error; maxAliasCount bounds alias expansion.
  const doc = parseDocument(text, { uniqueKeys: true });
  const err = doc.errors[0];
  if (err) {
    const pos = err.linePos?.[0];
    const at = pos ? `line ${pos.line}, column ${pos.col}: ` : '';
    const msg = err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw usage(`${source}: ${at}${msg}`);
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw usage(`${source}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  if (value !== null && value !== undefined && (typeof value !== 'object' || Array.isArray(value))) {
    throw usage(`${source}: the top level must be a mapping of keys (targets:, sinks:, …)`);
  }
  return value;
}

/** Read and validate a config file. */
export function loadWatchConfig(path: string, opts: Omit<ParseOptions, 'baseDir' | 'source'>): WatchConfig {
  let text: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw usage(`config ${path}: not a regular file`);
    if (st.size > MAX_CONFIG_BYTES) throw usage(`config ${path}: larger than ${MAX_CONFIG_BYTES} bytes`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof VigilError) throw e;
    throw usage(`config ${path}: cannot read it (${describeSysError(e)})`);
  }
  const source = `config ${path}`;
  return parseWatchConfig(parseYaml(text, source), {
    ...opts,
    baseDir: dirname(resolve(path)),
    source,
  });
}

/** Add the command line's targets, sinks and settings to a config (or to an empty one). */
export function applyCliOptions(cfg: WatchConfig, cli: CliWatchOptions): WatchConfig {
  const out: WatchConfig = { ...cfg, targets: [...cfg.targets], sinks: [...cfg.sinks] };
  // An address names one VM's stub; false and 'auto' may apply to every --qmp VM.
  if (typeof cli.gdb === 'string' && cli.gdb !== 'auto' && (cli.qmp ?? []).length !== 1) {
    throw usage(
      '--gdb belongs to one VM: give exactly one --qmp with it (or set gdb: per target in the config)',
    );
  }
  const gdb = cli.gdb === undefined ? undefined : gdbAddress(cli.gdb, (p) => resolve(p));
  for (const q of cli.qmp ?? []) {
    const qmp = resolve(q);
    const known = out.targets.findIndex((t) => t.qmp === qmp);
    if (known >= 0) {
      if (gdb !== undefined) out.targets[known] = { ...out.targets[known]!, gdb };
      continue;
    }
    let name = nameFromSocket(qmp);
    for (let i = 2; out.targets.some((t) => t.name === name); i++) name = `${nameFromSocket(qmp)}-${i}`;
    out.targets.push({ name, qmp, ...(gdb !== undefined ? { gdb } : {}) });
  }
  // --no-gdb: no stub for any configured VM either.
  if (gdb === false) out.targets = out.targets.map((t) => ({ ...t, gdb: false }));
  if (cli.discover) {
    const globs = cli.discover === true ? [...DEFAULT_DISCOVERY_GLOBS] : cli.discover.map((g) => resolve(g));
    out.discovery = {
      globs: [...new Set([...(cfg.discovery?.globs ?? []), ...globs])],
      intervalMs: cfg.discovery?.intervalMs ?? DEFAULTS.discoveryIntervalMs,
    };
  }
  if (cli.metricsPort !== undefined) {
    if (!Number.isInteger(cli.metricsPort) || cli.metricsPort < 0 || cli.metricsPort > 65535) {
      throw usage(`--metrics-port: expected a port number 0-65535`);
    }
    out.metrics = { host: cfg.metrics?.host ?? '127.0.0.1', port: cli.metricsPort };
  }
  if (cli.jsonl) out.sinks.push({ type: 'jsonl', path: resolve(cli.jsonl) });
  if (cli.webhook !== undefined || cli.spool !== undefined) {
    if (!cli.webhook || !cli.spool)
      throw usage('--webhook URL needs --spool DIR (and --spool needs --webhook)');
    if (!URL.canParse(cli.webhook)) throw usage(`--webhook: invalid url`);
    const r = sinkConfigSchema.safeParse({ type: 'webhook', url: cli.webhook, spoolDir: resolve(cli.spool) });
    if (!r.success) throw usage(`--webhook: ${formatIssues(r.error).join('; ')}`);
    out.sinks.push(r.data);
  }
  return out;
}

/** An empty config: what the command line builds on when there is no file. */
export function emptyWatchConfig(): WatchConfig {
  return parseWatchConfig({}, { policies: [] });
}
