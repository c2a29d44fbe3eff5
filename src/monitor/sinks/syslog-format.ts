// RFC 5424 syslog messages for alerts, and RFC 6587 framing for stream transports.
//
//   <PRI>1 TIMESTAMP HOSTNAME vigil PROCID MSGID [vigil@32473 id="…" vm="…" policy="…" severity="…" technique="…"] MSG
//
// PRI = facility × 8 + severity; MSGID is the policy id; MSG is the summary (optionally followed by the
// evidence as JSON). Header fields are restricted to printable ASCII by the RFC, so anything else is
// replaced; SD-PARAM values escape '"', '\' and ']' (§6.3.3) after the sanitiser has made control
// characters visible, so a guest cannot forge a second message or a second SD element.

import type { Alert, Severity } from '../../policy/types.js';
import { sanitize } from '../../util/sanitize.js';
import { stringifyJson } from './json.js';

/** Alert severity → syslog severity (RFC 5424 §6.2.1): critical→2 crit … info→6 informational. */
export const SYSLOG_SEVERITY: Readonly<Record<Severity, number>> = {
  critical: 2,
  high: 3,
  medium: 4,
  low: 5,
  info: 6,
};

export const DEFAULT_SD_ID = 'vigil@32473';
const NIL = '-';
const BOM = '\ufeff';
const MAX_PARAM = 256;

export interface SyslogFormat {
  facility: number;
  hostname: string;
  procId: string;
  sdId: string;
  /** Append the evidence as JSON after the summary. */
  evidence: boolean;
  /** Bound on the whole message in bytes (header included, framing excluded). */
  maxBytes: number;
}

/** A header field: PRINTUSASCII (33–126) only, at most `max` characters, NILVALUE when empty. */
export function printUsAscii(s: string, max: number): string {
  const out = s.replace(/[^!-~]/g, '_').slice(0, max);
  return out === '' ? NIL : out;
}

/** An SD-PARAM value: sanitised, clipped, with '"', '\' and ']' backslash-escaped. */
export function escapeParamValue(s: string): string {
  return sanitize(s, MAX_PARAM).replace(/["\\\]]/g, (c) => `\\${c}`);
}

/** RFC 5424 TIMESTAMP from an ISO time: always UTC with millisecond precision, NILVALUE if unparseable. */
export function syslogTimestamp(time: string): string {
  const d = new Date(time);
  return Number.isNaN(d.getTime()) ? NIL : d.toISOString();
}

export function structuredData(alert: Alert, sdId: string): string {
  const params: [string, string | undefined][] = [
    ['id', alert.id],
    ['vm', alert.vm],
    ['policy', alert.policy],
    ['severity', alert.severity],
    ['technique', alert.technique],
  ];
  const body = params
    .filter((p): p is [string, string] => typeof p[1] === 'string')
    .map(([k, v]) => `${k}="${escapeParamValue(v)}"`)
    .join(' ');
  return `[${sdId} ${body}]`;
}

/** Cut a UTF-8 buffer to at most `max` bytes without splitting a character. */
function cutUtf8(buf: Buffer, max: number): Buffer {
  if (buf.length <= max) return buf;
  let n = max;
  while (n > 0 && (buf[n]! & 0xc0) === 0x80) n--;
  return buf.subarray(0, n);
}

/** MSG: plain when ASCII (MSG-ANY); with a BOM when it holds UTF-8 beyond ASCII, as §6.4 requires. */
function msgPart(text: string): string {
  return /^[\x00-\x7f]*$/.test(text) ? text : BOM + text;
}

/** The RFC 5424 message for an alert, bounded by fmt.maxBytes. */
export function formatSyslog(alert: Alert, fmt: SyslogFormat): Buffer {
  const severity = SYSLOG_SEVERITY[alert.severity] ?? 5;
  const header = [
    `<${fmt.facility * 8 + severity}>1`,
    syslogTimestamp(alert.time),
    printUsAscii(fmt.hostname, 255),
    'vigil',
    printUsAscii(fmt.procId, 128),
    printUsAscii(String(alert.policy), 32),
    structuredData(alert, fmt.sdId),
  ].join(' ');
  const summary = sanitize(String(alert.summary), 2048);
  const candidates: string[] = [];
  if (fmt.evidence) {
    const ev = stringifyJson(alert.evidence ?? {});
    candidates.push(`${summary} ${ev}`);
    candidates.push(`${summary} [evidence omitted: ${Buffer.byteLength(ev)} bytes]`);
  } else {
    candidates.push(summary);
  }
  for (const text of candidates) {
    const msg = Buffer.from(`${header} ${msgPart(text)}`, 'utf8');
    if (msg.length <= fmt.maxBytes) return msg;
  }
  // Last resort for an oversized summary: cut it (at a character boundary).
  return cutUtf8(
    Buffer.from(`${header} ${msgPart(candidates[candidates.length - 1]!)}`, 'utf8'),
    fmt.maxBytes,
  );
}

/** RFC 6587 framing for stream transports: octet-counting ("LEN SP MSG") or non-transparent ("MSG LF"). */
export function frameSyslog(msg: Buffer, framing: 'octet-counting' | 'lf' | 'none'): Buffer {
  switch (framing) {
    case 'octet-counting':
      return Buffer.concat([Buffer.from(`${msg.length} `, 'ascii'), msg]);
    case 'lf':
      // Safe: sanitize() and stringifyJson() leave no raw LF inside a message.
      return Buffer.concat([msg, Buffer.from('\n')]);
    case 'none':
      return msg;
  }
}
