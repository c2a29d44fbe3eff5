// Where a run-time patched call in kernel text may go: for an fentry site, ftrace's entry code or an
// ftrace_ops trampoline; for a static call, also the code of a listed module. Judging patch sites needs it.
import type { KernelAccess } from '../modules/access.js';
import { CodeAttributor } from './attribute.js';
import type { FtraceOps } from './ftrace-ops.js';
import { inModuleArea } from './image.js';

/** Where the site judge lets run-time patched calls go. */
export interface CallTargets {
  /** An fentry call may go here. */
  has(va: bigint): boolean;
  /** Code of a module on the module list (a static call may be retargeted there: kvm's ops are). */
  moduleCode?(va: bigint): boolean;
}

/** Bytes of the ftrace entry code a dynamic trampoline starts with (create_trampoline copies them). */
const TRAMPOLINE_PREFIX = 32;

/**
 * Where an fentry call may legitimately go: ftrace_caller/ftrace_regs_caller, a registered ftrace_ops'
 * trampoline, or an ftrace trampoline whose ops is just being registered or removed (ftrace unlinks the
 * ops before it patches the call sites back): memory in the module area that belongs to no module and
 * starts with a copy of ftrace_caller's or ftrace_regs_caller's code.
 */
export class FtraceCallees implements CallTargets {
  readonly #known = new Set<bigint>();
  readonly #memo = new Map<bigint, boolean>();
  readonly #prefixes: Buffer[] = [];
  readonly #k: KernelAccess;
  readonly #attr: CodeAttributor;

  constructor(k: KernelAccess, ops: readonly FtraceOps[], attr?: CodeAttributor) {
    this.#k = k;
    this.#attr = attr ?? new CodeAttributor(k);
    for (const n of ['ftrace_caller', 'ftrace_regs_caller']) {
      const va = k.symbols.address(n);
      if (va === undefined) continue;
      this.#known.add(va);
      const p = k.space.tryRead(va, TRAMPOLINE_PREFIX);
      if (p) this.#prefixes.push(p);
    }
    for (const o of ops) if (o.trampoline !== 0n) this.#known.add(o.trampoline);
  }

  readonly #modules = new Map<bigint, boolean>();

  moduleCode(va: bigint): boolean {
    let hit = this.#modules.get(va);
    if (hit === undefined) this.#modules.set(va, (hit = this.#attr.attribute(va).where === 'module'));
    return hit;
  }

  has(va: bigint): boolean {
    if (this.#known.has(va)) return true;
    let hit = this.#memo.get(va);
    if (hit === undefined) {
      hit = false;
      if (inModuleArea(va) && this.#attr.attribute(va).where === 'unknown') {
        const b = this.#k.space.tryRead(va, TRAMPOLINE_PREFIX);
        hit = b !== undefined && this.#prefixes.some((p) => p.equals(b));
      }
      this.#memo.set(va, hit);
    }
    return hit;
  }
}

/** The fentry call targets of this sweep. */
export function ftraceTargets(
  k: KernelAccess,
  ops: readonly FtraceOps[],
  attr?: CodeAttributor,
): FtraceCallees {
  return new FtraceCallees(k, ops, attr);
}
