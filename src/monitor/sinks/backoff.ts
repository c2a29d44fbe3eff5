// Exponential backoff with jitter, shared by the reconnecting syslog stream and the webhook retries.

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

/**
 * Delay before retry number `attempt` (0 = first retry): the exponential step capped at maxMs, of which half
 * is fixed and half random ("equal jitter"), so many failing senders spread out yet never retry instantly.
 */
export function backoffDelay(
  attempt: number,
  opts: BackoffOptions,
  random: () => number = Math.random,
): number {
  const step = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(step / 2 + random() * (step / 2));
}
