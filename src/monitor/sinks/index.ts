// Alert sinks: where vigil's alerts go (stdout, a JSON-lines file, syslog, a webhook), built from plain config
// objects, and SinkSet to fan one alert out to all of them.

import { VigilError } from '../../util/errors.js';
import { parseSinkConfig, type SinkConfig } from './config.js';
import { JsonlSink } from './jsonl.js';
import { StdoutSink } from './stdout.js';
import { SyslogSink } from './syslog.js';
import { MONITOR_ORIGIN, type SinkDeps, type VigilSink } from './types.js';
import { WebhookSink } from './webhook.js';
import { SinkSet, type SinkSetOptions } from './set.js';

export * from './config.js';
export * from './types.js';
export { SinkSet } from './set.js';
export type { SinkFailureEvent, SinkHealth, SinkSetOptions, SinkSetResult, SinkStats } from './set.js';
export { toSchema, ECS_VERSION, VIGIL_SCHEMA_VERSION, type EcsAlert } from './schema.js';
export { StdoutSink, formatAlertLine } from './stdout.js';
export { JsonlSink } from './jsonl.js';
export { SyslogSink } from './syslog.js';
export { WebhookSink } from './webhook.js';

/** Build a sink from a plain config object (validated; a VigilError names every bad key). */
export async function createSink(config: unknown, deps: SinkDeps = {}): Promise<VigilSink> {
  return createFromParsed(parseSinkConfig(config), deps);
}

async function createFromParsed(c: SinkConfig, deps: SinkDeps): Promise<VigilSink> {
  switch (c.type) {
    case 'stdout':
      return new StdoutSink(c, deps);
    case 'jsonl':
      return JsonlSink.open(c, deps);
    case 'syslog':
      return SyslogSink.create(c, deps);
    case 'webhook':
      return WebhookSink.open(c, deps);
    default:
      throw new VigilError(
        MONITOR_ORIGIN,
        'unsupported',
        `unknown sink type ${JSON.stringify((c as { type: unknown }).type)}`,
      );
  }
}

/** Build every configured sink into one SinkSet whose health callbacks also see background failures. */
export function createSinkSet(
  configs: unknown[],
  opts: SinkSetOptions = {},
  deps: SinkDeps = {},
): Promise<SinkSet> {
  return SinkSet.fromConfigs(configs, createFromParsed, opts, deps);
}
