// Where a code pointer lands: kernel text, a module's memory, or somewhere else (a hook's trampoline in
// a vmalloc page, data, nothing). The kernel's symbol table only names addresses inside the kernel image.
import type { KernelAccess } from '../modules/access.js';
import { moduleAt } from '../modules/locate.js';
import { listModules, type KernelModule } from '../modules/list.js';
import { kernelTextRange } from './sections.js';

/**
 * 'kernel': kernel text (_stext.._etext). 'kernel-init': init text (_sinittext.._einittext), freed after
 * boot — on a clean 6.1 guest the reserved exception vectors 20-31 still point at early_idt_handler_array
 * there. 'module': a loaded module's memory. 'unknown': anything else.
 */
export type CodeLocation = 'kernel' | 'kernel-init' | 'module' | 'unknown';

export interface Attribution {
  where: CodeLocation;
  /** "func+0x0" inside the kernel image. */
  symbol?: string;
  /** The module whose memory holds the address, with the offset into that region. */
  module?: string;
  moduleOffset?: bigint;
}

/** Attributes many addresses against one snapshot of the module list and the text range. */
export class CodeAttributor {
  readonly #kernel: KernelAccess;
  readonly #text: { start: bigint; end: bigint };
  readonly #image: { start: bigint; end: bigint } | undefined;
  readonly #init: { start: bigint; end: bigint } | undefined;
  #modules: readonly KernelModule[] | undefined;

  constructor(kernel: KernelAccess, modules?: readonly KernelModule[]) {
    this.#kernel = kernel;
    this.#text = kernelTextRange(kernel);
    const start = kernel.symbols.address('_text');
    const end = kernel.symbols.address('_end');
    this.#image = range(start, end);
    this.#init = range(kernel.symbols.address('_sinittext'), kernel.symbols.address('_einittext'));
    this.#modules = modules;
  }

  /** The module list, walked on first need (most tables point only into kernel text). */
  get modules(): readonly KernelModule[] {
    this.#modules ??= listModules(this.#kernel);
    return this.#modules;
  }

  attribute(va: bigint): Attribution {
    if (va >= this.#text.start && va < this.#text.end) {
      const symbol = this.#kernel.symbolize(va);
      return symbol !== undefined ? { where: 'kernel', symbol } : { where: 'kernel' };
    }
    if (this.#init && va >= this.#init.start && va < this.#init.end) {
      const symbol = this.#kernel.symbolize(va);
      return symbol !== undefined ? { where: 'kernel-init', symbol } : { where: 'kernel-init' };
    }
    const hit = moduleAt(this.#kernel, va, this.modules);
    if (hit) return { where: 'module', module: hit.module.name, moduleOffset: hit.offset };
    // Inside the image but outside text (data, init memory freed after boot): name it, but it is not code.
    if (this.#image && va >= this.#image.start && va < this.#image.end) {
      const symbol = this.#kernel.symbolize(va);
      return symbol !== undefined ? { where: 'unknown', symbol } : { where: 'unknown' };
    }
    return { where: 'unknown' };
  }
}

function range(
  start: bigint | undefined,
  end: bigint | undefined,
): { start: bigint; end: bigint } | undefined {
  return start !== undefined && end !== undefined && end > start ? { start, end } : undefined;
}
