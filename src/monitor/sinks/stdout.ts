// The stdout sink: one line per alert for a person watching a terminal or a journal.
//   2026-11-26T14:00:00.000Z web01 HIGH raw-socket T1040 raw socket opened by nc  pid=42 comm=nc inode=1234
// Every field is sanitised here even though evidence was sanitised upstream: this is where text meets a
// terminal, and a forged newline or escape sequence would let a guest write fake alerts or drive the tty.

import pc from 'picocolors';
import type { Alert, Severity } from '../../policy/types.js';
import { sanitize } from '../../util/sanitize.js';
import { VigilError } from '../../util/errors.js';
import type { StdoutSinkConfig } from './config.js';
import { toJsonSafe } from './json.js';
import { MONITOR_ORIGIN, type SinkDeps, type SinkStatus, type VigilSink } from './types.js';

const MAX_FIELDS = 8;
const MAX_VALUE = 64;
const MAX_EVIDENCE = 240;

type Colors = ReturnType<typeof pc.createColors>;

/** Colour only where a person sees it: a TTY, with NO_COLOR unset or empty (https://no-color.org). */
export function useColor(
  mode: StdoutSinkConfig['color'],
  isTTY: boolean | undefined,
  env: NodeJS.ProcessEnv,
): boolean {
  if (mode === 'always') return true;
  if (mode === 'never') return false;
  return isTTY === true && !env.NO_COLOR;
}

function clip(s: string, max: number): string {
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

/** A value as it appears after `key=`: bare when simple, JSON-quoted when it has spaces or quotes. */
function compactValue(v: unknown): string {
  const safe = toJsonSafe(v);
  let text: string;
  if (typeof safe === 'string') {
    const s = sanitize(safe, MAX_VALUE * 4);
    text = s === '' || /[\s"'=]/.test(s) ? JSON.stringify(s) : s;
  } else {
    text = sanitize(JSON.stringify(safe) ?? 'null', MAX_VALUE * 4);
  }
  return clip(text, MAX_VALUE);
}

/** The first few evidence fields as `key=value`, bounded in count and length. */
export function compactEvidence(evidence: Record<string, unknown>): string {
  const parts: string[] = [];
  let total = 0;
  const entries = Object.entries(evidence ?? {});
  for (const [k, v] of entries) {
    if (parts.length >= MAX_FIELDS || total >= MAX_EVIDENCE) {
      parts.push('…');
      break;
    }
    const key = clip(sanitize(k, 256), 32);
    const part = `${/^[^\s"'=]+$/.test(key) ? key : JSON.stringify(key)}=${compactValue(v)}`;
    parts.push(part);
    total += part.length + 1;
  }
  return parts.join(' ');
}

const SEVERITY_STYLE: Record<Severity, (c: Colors, s: string) => string> = {
  critical: (c, s) => c.bold(c.red(s)),
  high: (c, s) => c.red(s),
  medium: (c, s) => c.yellow(s),
  low: (c, s) => c.cyan(s),
  info: (c, s) => c.dim(s),
};

/** One line (newline included) for an alert. */
export function formatAlertLine(alert: Alert, color: boolean): string {
  const c = pc.createColors(color);
  const sev = String(alert.severity);
  const style = SEVERITY_STYLE[alert.severity as Severity] ?? ((_c: Colors, s: string) => s);
  const fields = [
    c.dim(sanitize(String(alert.time), 64)),
    c.bold(sanitize(String(alert.vm), 128)),
    style(c, sanitize(sev.toUpperCase(), 16)),
    sanitize(String(alert.policy), 128),
  ];
  if (alert.technique) fields.push(c.dim(sanitize(alert.technique, 32)));
  fields.push(sanitize(String(alert.summary), 1024));
  const evidence = compactEvidence(alert.evidence);
  return fields.join(' ') + (evidence ? '  ' + c.dim(evidence) : '') + '\n';
}

export class StdoutSink implements VigilSink {
  readonly name: string;
  private readonly stream: NodeJS.WritableStream;
  private readonly color: boolean;
  private failures = 0;
  private lastError: string | undefined;
  private closed = false;

  constructor(config: StdoutSinkConfig, deps: SinkDeps = {}) {
    this.name = config.name ?? 'stdout';
    const stream = deps.stream ?? process.stdout;
    this.stream = stream;
    this.color = useColor(config.color, stream.isTTY, deps.env ?? process.env);
  }

  write(alert: Alert): Promise<void> {
    if (this.closed)
      return Promise.reject(new VigilError(MONITOR_ORIGIN, 'state', `${this.name}: sink closed`));
    const line = formatAlertLine(alert, this.color);
    return new Promise((resolve, reject) => {
      // The callback reports EPIPE and friends; backpressure is the stream's to buffer (alerts are rare).
      this.stream.write(line, (err) => {
        if (err) {
          this.failures++;
          this.lastError = err.message;
          reject(new VigilError(MONITOR_ORIGIN, 'io', `${this.name}: write failed`, { cause: err }));
        } else {
          this.lastError = undefined;
          resolve();
        }
      });
    });
  }

  status(): SinkStatus {
    return {
      healthy: this.lastError === undefined,
      pending: 0,
      dropped: 0,
      failures: this.failures,
      lastError: this.lastError,
    };
  }

  async close(): Promise<void> {
    // Never end process.stdout: other code still writes to it.
    this.closed = true;
  }
}
