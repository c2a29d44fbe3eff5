// What the monitor's sinks add to the policy layer's `Sink`: a status for health reporting and a way to
// report failures that happen in the background (a TCP syslog reconnecting, a webhook retrying), where no
// `write` call is waiting to receive the error.

import type { ErrorOrigin } from '../../util/errors.js';
import type { Sink } from '../../policy/types.js';

/**
 * The error origin for everything under src/monitor. util/errors.ts has no 'monitor' origin yet; the monitor
 * is a surface like the CLI, so its errors say 'cli' until the lead adds one (change it here only).
 */
export const MONITOR_ORIGIN: ErrorOrigin = 'monitor';

export interface SinkStatus {
  /** False while the sink is failing (last delivery attempt or connection failed). */
  healthy: boolean;
  /** Alerts accepted but not yet delivered (queued in memory or spooled on disk). */
  pending: number;
  /** Alerts the sink refused because a bound was reached (reported to the caller as write errors). */
  dropped: number;
  /** Total failures seen (failed writes, connections, delivery attempts). */
  failures: number;
  lastError?: string;
}

/** A sink vigil built: a policy-layer `Sink` that can also say how it is doing. */
export interface VigilSink extends Sink {
  status(): SinkStatus;
}

/**
 * Receives a sink's background outcomes (a stream reconnecting, a webhook delivery retried or done); SinkSet
 * turns them into health transitions. Outcomes of write() itself are not reported here: its caller sees them.
 */
export interface SinkReporter {
  failure(error: unknown): void;
  success(): void;
}

export const silentReporter: SinkReporter = { failure: () => {}, success: () => {} };

/** What a sink may take from its surroundings, injectable for tests. */
export interface SinkDeps {
  reporter?: SinkReporter;
  /** The stdout sink's stream (default process.stdout). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** The environment consulted for NO_COLOR (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** This host's name, for syslog HOSTNAME and ECS observer.hostname (default os.hostname()). */
  hostname?: string;
  /** Random source for backoff jitter (default Math.random). */
  random?: () => number;
}
