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

const hex = (v: bigint): string => '0x' + v.toString(16);

/** Where a code pointer lands, said once for summaries and evidence alike. */
export interface CodeDescription {
  attribution: Attribution;
  /** "0xffff… (func+0x10)", "0xffff… in module vk_x+0x14", "0xffff… (neither kernel nor module code)". */
  text: string;
  /** The place without the address: "func+0x10", "module vk_x+0x14", "neither kernel nor module code". */
  place: string;
  evidence: Record<string, unknown>;
}

export function describeCode(attr: CodeAttributor, va: bigint): CodeDescription {
  const a = attr.attribute(va);
  const evidence: Record<string, unknown> = { address: hex(va), where: a.where };
  if (a.symbol !== undefined) evidence.symbol = a.symbol;
  if (a.module !== undefined) evidence.module = a.module;
  if (a.moduleOffset !== undefined) evidence.moduleOffset = hex(a.moduleOffset);
  const inModule = `module ${a.module}${a.moduleOffset !== undefined ? `+${hex(a.moduleOffset)}` : ''}`;
  const place =
    a.where === 'module'
      ? inModule
      : a.symbol !== undefined
        ? `${a.symbol}${a.where === 'kernel' ? '' : `, ${a.where}`}`
        : a.where === 'unknown'
          ? 'neither kernel nor module code'
          : a.where;
  const text = a.where === 'module' ? `${hex(va)} in ${inModule}` : `${hex(va)} (${place})`;
  return { attribution: a, text, place, evidence };
}
