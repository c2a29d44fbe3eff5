// A kernel-integrity check run with its own issue collector, and once more on fresh memory when a live walk
// stumbled: shared by memory-access, kernel-hooks and hidden-module.
import type { WalkIssues } from '../../os/linux/walk.js';
import type { SweepContext } from '../policy.js';
import { collecting } from './process-facts.js';

/** The cache epoch of a kernel that can start a new one (Kernel's). */
interface FreshKernel {
  issues: WalkIssues;
  readonly epoch?: { readonly frozen: boolean; bump?(): number };
}

/**
 * Run a check with its own issue collector. On a live guest, a walk that stumbled (a structure freed
 * while it was read) runs once more on fresh memory; what the second run still stumbles on is noted, and
 * everything it recorded is copied into the kernel's collector. Shared by the kernel-integrity policies.
 */
export function pollFresh<T>(ctx: Pick<SweepContext, 'note'>, k: FreshKernel, fn: () => T): T {
  const run = () => collecting(k, fn);
  let r = run();
  if (r.issues.length > 0 && k.epoch && !k.epoch.frozen && k.epoch.bump) {
    k.epoch.bump();
    r = run();
  }
  for (const i of r.issues) ctx.note(i.kind, `${i.walker}: ${i.detail}`);
  return r.value;
}
