// The JSON document the jsonl and webhook sinks emit: an Elastic Common Schema (ECS) alert event, with
// vigil's own alert, unchanged, under `vigil`. docs/alert-schema.md documents every field and why ECS.

import { hostname as osHostname } from 'node:os';
import type { Alert, Severity } from '../../policy/types.js';
import { toJsonSafe } from './json.js';

export const ECS_VERSION = '8.11.0';
/** Bumped when a field of the `vigil` object changes meaning or disappears (adding fields does not bump it). */
export const VIGIL_SCHEMA_VERSION = 1;

/** ECS event.severity: a number per source; vigil's scale rises with severity, 1 (info) to 5 (critical). */
export const SEVERITY_NUMBER: Readonly<Record<Severity, number>> = {
  info: 1,
  low: 2,
  medium: 3,
  high: 4,
  critical: 5,
};

export interface EcsAlert {
  '@timestamp': string;
  message: string;
  ecs: { version: string };
  event: {
    kind: 'alert';
    category: ['intrusion_detection'];
    type: ['info'];
    id: string;
    module: 'vigil';
    dataset: 'vigil.alert';
    severity: number;
  };
  rule: { id: string; name: string; ruleset: 'vigil' };
  threat?: {
    framework: 'MITRE ATT&CK';
    technique: { id: string[]; reference: string[] };
    subtechnique?: { id: string[]; reference: string[] };
  };
  host: { name: string };
  observer: { product: 'vigil'; vendor: 'vigil'; type: 'ids'; hostname: string };
  vigil: {
    schema_version: number;
    id: string;
    time: string;
    vm: string;
    policy: string;
    severity: Severity;
    technique?: string;
    summary: string;
    key: string;
    evidence: unknown;
    response?: unknown;
  };
}

const TECHNIQUE = /^T\d{4}(?:\.\d{3})?$/;

export function attackReference(id: string): string {
  return `https://attack.mitre.org/techniques/${id.replace('.', '/')}/`;
}

/** ECS threat.* for a well-formed ATT&CK id (T1234 or T1234.001); anything else stays in vigil.technique only. */
function threatOf(technique: string | undefined): EcsAlert['threat'] {
  if (!technique || !TECHNIQUE.test(technique)) return undefined;
  const base = technique.slice(0, 5);
  return {
    framework: 'MITRE ATT&CK',
    technique: { id: [base], reference: [attackReference(base)] },
    ...(technique.length > 5 && {
      subtechnique: { id: [technique], reference: [attackReference(technique)] },
    }),
  };
}

/** Map an alert to the ECS document the jsonl and webhook sinks write. */
export function toSchema(alert: Alert, opts: { hostname?: string } = {}): EcsAlert {
  const threat = threatOf(alert.technique);
  return {
    '@timestamp': alert.time,
    message: alert.summary,
    ecs: { version: ECS_VERSION },
    event: {
      kind: 'alert',
      category: ['intrusion_detection'],
      type: ['info'],
      id: alert.id,
      module: 'vigil',
      dataset: 'vigil.alert',
      severity: SEVERITY_NUMBER[alert.severity] ?? 0,
    },
    rule: { id: alert.policy, name: alert.policy, ruleset: 'vigil' },
    ...(threat && { threat }),
    host: { name: alert.vm },
    observer: { product: 'vigil', vendor: 'vigil', type: 'ids', hostname: opts.hostname ?? osHostname() },
    vigil: {
      schema_version: VIGIL_SCHEMA_VERSION,
      id: alert.id,
      time: alert.time,
      vm: alert.vm,
      policy: alert.policy,
      severity: alert.severity,
      ...(alert.technique !== undefined && { technique: alert.technique }),
      summary: alert.summary,
      key: alert.key,
      evidence: toJsonSafe(alert.evidence ?? {}),
      ...(alert.response !== undefined && { response: toJsonSafe(alert.response) }),
    },
  };
}
