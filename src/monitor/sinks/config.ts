// Sink configuration: one zod schema per sink type and the discriminated union over them. The YAML config
// loader reuses these schemas, so they validate strictly (unknown keys are errors, which catches typos) and
// every error names the key it is about. Defaults live with each sink (its *_DEFAULTS), not here, so that the
// parsed config is exactly what the user wrote.

import { z } from 'zod';
import { VigilError } from '../../util/errors.js';
import { MONITOR_ORIGIN } from './types.js';

/** A user-chosen sink name, used in health reports and metrics labels. */
const sinkName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}$/, 'letters, digits and ._:@/- only, at most 64 characters');

const positiveInt = z.number().int().positive();
const ms = z.number().int().min(1).max(86_400_000);

export const stdoutSinkSchema = z
  .object({
    type: z.literal('stdout'),
    name: sinkName.optional(),
    /** 'auto' colours only a TTY with NO_COLOR unset. */
    color: z.enum(['auto', 'always', 'never']).optional(),
  })
  .strict();

export const jsonlSinkSchema = z
  .object({
    type: z.literal('jsonl'),
    name: sinkName.optional(),
    path: z.string().min(1),
    /** Rotate before a write would take the file past this size; unset = never rotate. */
    maxBytes: positiveInt.min(1024).optional(),
    /** Rotated files kept (path.1 … path.keep); 0 = discard on rotation. */
    keep: z.number().int().min(0).max(1000).optional(),
    /** fdatasync after every line (default true). */
    fsync: z.boolean().optional(),
  })
  .strict();

/** RFC 5424 §6.2.1 facility codes; 13–15 are named after their RFC descriptions (log audit, log alert, clock). */
export const SYSLOG_FACILITIES = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  ntp: 12,
  audit: 13,
  alert: 14,
  clock: 15,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
} as const;
export type SyslogFacilityName = keyof typeof SYSLOG_FACILITIES;

const facilityNames = Object.keys(SYSLOG_FACILITIES) as [SyslogFacilityName, ...SyslogFacilityName[]];

/** SD-ID "name@PEN": PRINTUSASCII without '=', ' ', ']', '"', at most 32 characters (RFC 5424 §6.3.2). */
const sdId = z
  .string()
  .regex(/^[!#-<>-\\^-~]{1,32}$/, 'RFC 5424 SD-ID: printable ASCII except = ] " and space, 1–32 chars');

export const syslogSinkSchema = z
  .object({
    type: z.literal('syslog'),
    name: sinkName.optional(),
    transport: z.enum(['udp', 'tcp', 'unix']),
    host: z.string().min(1).max(255).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    /** unix only: the socket path (default /dev/log). */
    path: z.string().min(1).optional(),
    /** unix only: datagram (/dev/log, the default) or stream socket. */
    socketType: z.enum(['dgram', 'stream']).optional(),
    /** Stream framing (RFC 6587): tcp defaults to octet-counting, a unix stream socket to lf. */
    framing: z.enum(['octet-counting', 'lf']).optional(),
    facility: z.union([z.enum(facilityNames), z.number().int().min(0).max(23)]).optional(),
    /** HOSTNAME field (default this host's name). */
    hostname: z
      .string()
      .regex(/^[!-~]{1,255}$/, 'printable ASCII without spaces, 1–255 chars')
      .optional(),
    sdId: sdId.optional(),
    /** Append the evidence as JSON after the summary. */
    evidence: z.boolean().optional(),
    maxMessageBytes: z.number().int().min(480).max(1_048_576).optional(),
    /** Stream transports: messages held while disconnected; more are refused (and counted as dropped). */
    maxQueue: z.number().int().min(1).max(1_000_000).optional(),
    reconnectBaseMs: ms.optional(),
    reconnectMaxMs: ms.optional(),
    connectTimeoutMs: ms.optional(),
    closeTimeoutMs: ms.optional(),
  })
  .strict();

const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, 'an HTTP header name (RFC 9110 token)');
const headerValue = z.string().regex(/^[^\r\n\0]*$/, 'no CR, LF or NUL');

function parseUrl(u: string): URL | undefined {
  try {
    return new URL(u);
  } catch {
    return undefined;
  }
}

export const webhookSinkSchema = z
  .object({
    type: z.literal('webhook'),
    name: sinkName.optional(),
    url: z
      .string()
      .url()
      // zod runs every refinement even after .url() failed, so each one parses defensively.
      .refine((u) => /^https?:$/.test(parseUrl(u)?.protocol ?? 'http:'), 'http: or https: only')
      .refine((u) => {
        const p = parseUrl(u);
        return !p || (p.username === '' && p.password === '');
      }, 'no credentials in the URL: put them in headers (e.g. Authorization)'),
    headers: z.record(headerName, headerValue).optional(),
    /** Directory of pending alerts, one file each; created if missing. */
    spoolDir: z.string().min(1),
    /** Failed attempts after which an alert moves to spoolDir/failed/; unset = retry for ever. */
    maxRetries: z.number().int().min(0).max(1_000_000).optional(),
    retryBaseMs: ms.optional(),
    retryMaxMs: ms.optional(),
    /** One request's time limit. */
    timeoutMs: ms.optional(),
    /** Deliveries in flight at once. */
    concurrency: z.number().int().min(1).max(64).optional(),
    /** How long close() waits for deliveries in flight; the rest stays spooled. */
    closeTimeoutMs: ms.optional(),
    /** Spooled alerts allowed; further writes are refused (and counted as dropped). */
    maxSpool: z.number().int().min(1).max(10_000_000).optional(),
  })
  .strict();

/** The union without cross-field checks (a plain discriminated union, composable by the YAML loader). */
export const sinkConfigBaseSchema = z.discriminatedUnion('type', [
  stdoutSinkSchema,
  jsonlSinkSchema,
  syslogSinkSchema,
  webhookSinkSchema,
]);

/** Any sink's config, with the checks that span keys (which keys go with which syslog transport). */
export const sinkConfigSchema = sinkConfigBaseSchema.superRefine((c, ctx) => {
  if (c.type !== 'syslog') return;
  const misplaced = (key: keyof typeof c, only: string) => {
    if (c[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `only for ${only}` });
  };
  if (c.transport === 'unix') {
    misplaced('host', 'transport udp or tcp');
    misplaced('port', 'transport udp or tcp');
    if (c.socketType !== 'stream') misplaced('framing', 'transport tcp or a unix stream socket');
  } else {
    misplaced('path', 'transport unix');
    misplaced('socketType', 'transport unix');
    if (c.transport === 'udp') {
      misplaced('framing', 'transport tcp or a unix stream socket');
      misplaced('maxQueue', 'stream transports (tcp, unix stream)');
    }
  }
  if (
    c.reconnectBaseMs !== undefined &&
    c.reconnectMaxMs !== undefined &&
    c.reconnectBaseMs > c.reconnectMaxMs
  ) {
    ctx.addIssue({ code: 'custom', path: ['reconnectBaseMs'], message: 'must not exceed reconnectMaxMs' });
  }
});

export type StdoutSinkConfig = z.infer<typeof stdoutSinkSchema>;
export type JsonlSinkConfig = z.infer<typeof jsonlSinkSchema>;
export type SyslogSinkConfig = z.infer<typeof syslogSinkSchema>;
export type WebhookSinkConfig = z.infer<typeof webhookSinkSchema>;
export type SinkConfig = z.infer<typeof sinkConfigBaseSchema>;

/** One line per problem, each starting with the dotted key it is about: "sinks.0.maxBytes: Expected number…". */
export function formatConfigIssues(error: z.ZodError, where = ''): string[] {
  const at = (path: (string | number)[]) => [where, ...path].filter((p) => p !== '').join('.') || '(root)';
  return error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((k) => `${at([...issue.path, k])}: unknown key`).join('; ');
    }
    if (issue.code === 'invalid_union_discriminator') {
      return `${at(issue.path)}: must be one of ${issue.options.map((o) => JSON.stringify(o)).join(', ')}`;
    }
    return `${at(issue.path)}: ${issue.message}`;
  });
}

/** Validate one sink config; a VigilError (usage) names every bad key. */
export function parseSinkConfig(input: unknown, where = 'sink'): SinkConfig {
  const r = sinkConfigSchema.safeParse(input);
  if (!r.success) {
    throw new VigilError(
      MONITOR_ORIGIN,
      'usage',
      `invalid sink config: ${formatConfigIssues(r.error, where).join('; ')}`,
    );
  }
  return r.data;
}

/** The name a sink reports under: its configured name, or one derived from where it sends (never secrets). */
export function sinkNameOf(c: SinkConfig): string {
  if (c.name) return c.name;
  switch (c.type) {
    case 'stdout':
      return 'stdout';
    case 'jsonl':
      return `jsonl:${c.path}`;
    case 'syslog':
      return c.transport === 'unix'
        ? `syslog:unix:${c.path ?? '/dev/log'}`
        : `syslog:${c.transport}:${c.host ?? '127.0.0.1'}:${c.port ?? 514}`;
    case 'webhook':
      // Only the host: webhook URLs often carry a secret in their path or query.
      return `webhook:${new URL(c.url).host}`;
  }
}
