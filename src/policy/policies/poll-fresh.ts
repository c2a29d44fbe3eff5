// A kernel-integrity check run with its own issue collector, and once more on fresh memory when a live walk
// stumbled: shared by memory-access, kernel-hooks and hidden-module.
import { WalkIssues, type WalkIssue } from '../../os/linux/walk.js';
import type { SweepContext } from '../policy.js';

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
  const run = (): { value: T; issues: WalkIssue[] } => {
    const outer = k.issues;
    const mine = new WalkIssues();
    k.issues = mine;
    try {
      return { value: fn(), issues: mine.items };
    } finally {
      k.issues = outer;
      for (const i of mine.items) outer.add(i.walker, i.kind, i.detail);
    }
  };
  let r = run();
  if (r.issues.length > 0 && k.epoch && !k.epoch.frozen && k.epoch.bump) {
    k.epoch.bump();
    r = run();
  }
  for (const i of r.issues) ctx.note(i.kind, `${i.walker}: ${i.detail}`);
  return r.value;
}
