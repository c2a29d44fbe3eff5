// The policy layer's shared types: what a policy is, what it finds, and the alerts it raises.
// Policies are Livewire's "policy modules": polling ones run in sweeps, event-driven ones react to
// VM events (QMP events, GDB-stub stops).

export type Severity = 'info' | 'low' | 'medium' | 'high' | 'critical';

/** What a policy needs from its target; a policy whose needs are unmet is skipped with a reason. */
export type Requirement =
  | 'kernel' // a bootstrapped Linux kernel (symbols + types)
  | 'live' // a running VM (not a dump)
  | 'events' // a QMP event stream
  | 'control' // pause / resume / dump
  | 'gdb' // the GDB stub (breakpoints, watchpoints)
  | 'guest-agent'; // qemu-guest-agent in the guest

/**
 * One observation of a policy during a sweep. `key` identifies the condition (e.g. "raw-socket:pid=42:
 * inode=1234"): an alert is raised once while a finding with the same key persists, and again after it
 * has cleared and returned.
 */
export interface Finding {
  key: string;
  severity: Severity;
  summary: string;
  /** MITRE ATT&CK technique id where one fits, e.g. "T1040". Defaults to the policy's. */
  technique?: string;
  /** Structured evidence: what was seen (objects, both views, hashes, addresses and symbols). */
  evidence: Record<string, unknown>;
}

export interface AlertResponseRecord {
  action: 'alert' | 'pause' | 'dump';
  ok: boolean;
  detail?: string;
}

/** An alert as delivered to sinks. The field set is documented in docs/alert-schema.md. */
export interface Alert {
  /** Stable unique id (UUID v4); sinks use it to deduplicate re-deliveries. */
  id: string;
  /** ISO 8601 time the alert was raised. */
  time: string;
  /** VM name. */
  vm: string;
  /** Policy id, e.g. "raw-socket". */
  policy: string;
  severity: Severity;
  technique?: string;
  summary: string;
  evidence: Record<string, unknown>;
  /** The finding key that raised it. */
  key: string;
  /** What was done in response. */
  response?: AlertResponseRecord[];
}

/** Where alerts go. `write` must not lose an alert it accepted without an error. */
export interface Sink {
  readonly name: string;
  write(alert: Alert): Promise<void>;
  /** Flush buffered alerts and release resources. */
  close(): Promise<void>;
}
