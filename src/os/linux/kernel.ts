// The Kernel object: everything vigil learns about a Linux guest from its memory alone, built once per
// guest (per boot) and reused by every command and policy. Bootstrap order, each step proving the next:
//   kallsyms (found by shape in physical memory) → KASLR (anchored at linux_banner, confirmed by the
//   kernel's own page tables) → banner (read at linux_banner, so it is the running kernel's) → BTF (at
//   __start_BTF, so a blob planted elsewhere cannot win) → the kernel address space (init_top_pgt).
// Registers are not needed: dumps have none, and CR3 on a live vCPU belongs to whatever process ran last.

import type { Epoch } from '../../arch/epoch.js';
import { Epoch as EpochClass } from '../../arch/epoch.js';
import { CachedPhysicalMemory } from '../../arch/page-cache.js';
import type { AddressSpace } from '../../arch/types.js';
import { PageTableAddressSpace, PagingCache } from '../../arch/x86_64/index.js';
import { VigilError } from '../../util/errors.js';
import type { PhysicalMemory } from '../../vmm/types.js';
import { findBanner, readBannerAt, type Banner } from './banner.js';
import { findVmlinuxBtf, StructView, TypeRegistry, type TypeRef } from './btf/index.js';
import { findKallsyms, type SymbolTable } from './kallsyms/index.js';
import { bannerAnchors, deriveKaslr, imageAnchors, kernelVirtToPhys, type KaslrInfo } from './kaslr.js';
import { WalkIssues } from './walk.js';

export interface KernelOptions {
  /**
   * When cached guest state goes stale. Live VMs: bump it per sweep (or give it a maxAgeMs). Dumps: a
   * frozen epoch (the default when `live` is false).
   */
  epoch?: Epoch;
  live?: boolean;
  /** Told as each bootstrap step starts, with the fraction of the work done (for a progress bar). */
  onProgress?: (step: string, fraction: number) => void;
}

export interface BootstrapTimings {
  kallsymsMs: number;
  kaslrMs: number;
  bannerMs: number;
  btfMs: number;
  totalMs: number;
}

export class Kernel {
  readonly memory: PhysicalMemory;
  readonly epoch: Epoch;
  readonly banner: Banner;
  readonly symbols: SymbolTable;
  readonly types: TypeRegistry;
  readonly kaslr: KaslrInfo;
  /** The kernel's own address space (init_top_pgt): kernel text, data, direct map, vmalloc, modules. */
  readonly space: PageTableAddressSpace;
  readonly pagingCache: PagingCache;
  readonly btfPaddr: bigint;
  readonly timings: BootstrapTimings;
  /** Why walks stopped early; read and cleared by whoever runs a sweep. */
  issues = new WalkIssues();

  private constructor(init: {
    memory: PhysicalMemory;
    epoch: Epoch;
    banner: Banner;
    symbols: SymbolTable;
    types: TypeRegistry;
    kaslr: KaslrInfo;
    btfPaddr: bigint;
    timings: BootstrapTimings;
  }) {
    this.memory = init.memory;
    this.epoch = init.epoch;
    this.banner = init.banner;
    this.symbols = init.symbols;
    this.types = init.types;
    this.kaslr = init.kaslr;
    this.btfPaddr = init.btfPaddr;
    this.timings = init.timings;
    this.pagingCache = new PagingCache(this.epoch);
    this.space = new PageTableAddressSpace(
      this.memory,
      this.kaslr.kernelPgd,
      this.kaslr.la57 ? 5 : 4,
      this.pagingCache,
    );
  }

  /** Find and decode everything from guest-physical memory alone. */
  static bootstrap(raw: PhysicalMemory, options: KernelOptions = {}): Kernel {
    const live = options.live ?? false;
    const epoch = options.epoch ?? (live ? new EpochClass({ maxAgeMs: 1000 }) : EpochClass.frozen());
    const memory = new CachedPhysicalMemory(raw, epoch);
    const t0 = performance.now();
    const progress = options.onProgress ?? (() => {});
    progress('finding the kernel symbol table (kallsyms)', 0);

    let found;
    try {
      found = findKallsyms(memory);
    } catch (e) {
      throw new VigilError(
        'os',
        'not-found',
        'no Linux kernel symbol table (kallsyms) in this memory: not an x86-64 Linux guest, or memory is not RAM',
        { cause: e },
      );
    }
    const symbols = found.symbols;
    const t1 = performance.now();

    progress('placing the kernel image (KASLR)', 0.55);
    let kaslr: KaslrInfo;
    const anchors = imageAnchors(memory, symbols, found.layout.namesAddr);
    try {
      kaslr = deriveKaslr(
        memory,
        symbols,
        anchors.length > 0 ? anchors : bannerAnchors(findBanner(memory).paddrs),
      );
    } catch (e) {
      throw new VigilError('os', 'not-found', 'could not place the kernel image (KASLR)', { cause: e });
    }
    const t2 = performance.now();

    const bannerVa = symbols.address('linux_banner');
    const banner =
      bannerVa !== undefined
        ? readBannerAt(memory, kernelVirtToPhys(kaslr.physBase, bannerVa))
        : findBanner(memory);
    const t3 = performance.now();

    progress('reading kernel types (BTF)', 0.7);
    const startBtf = symbols.address('__start_BTF');
    if (startBtf === undefined) {
      throw new VigilError(
        'os',
        'unsupported',
        `kernel ${banner.release} has no BTF type information (built without CONFIG_DEBUG_INFO_BTF=y); ` +
          'vigil needs it to read kernel structures',
      );
    }
    const expectPaddr = kernelVirtToPhys(kaslr.physBase, startBtf);
    const btf = findVmlinuxBtf(memory, { expectPaddr });
    if (btf.paddr !== expectPaddr) {
      throw new VigilError(
        'os',
        'malformed',
        `BTF at __start_BTF (0x${expectPaddr.toString(16)}) is invalid; a blob elsewhere ` +
          `(0x${btf.paddr.toString(16)}) is not trusted`,
      );
    }
    const t4 = performance.now();
    progress('kernel ready', 1);

    return new Kernel({
      memory,
      epoch,
      banner,
      symbols,
      types: btf.types,
      kaslr,
      btfPaddr: btf.paddr,
      timings: {
        kallsymsMs: t1 - t0,
        kaslrMs: t2 - t1,
        bannerMs: t3 - t2,
        btfMs: t4 - t3,
        totalMs: t4 - t0,
      },
    });
  }

  get release(): string {
    return this.banner.release;
  }

  /** Address of a kernel symbol, or a not-found error naming it. */
  sym(name: string): bigint {
    const va = this.symbols.address(name);
    if (va === undefined) throw new VigilError('os', 'not-found', `kernel symbol ${name} not found`);
    return va;
  }

  /** A typed, bounds-checked view of a kernel object. */
  view(type: TypeRef, va: bigint): StructView {
    return new StructView(this.types, type, va, this.space);
  }

  /** A view through another address space (a process's). */
  viewIn(space: AddressSpace, type: TypeRef, va: bigint): StructView {
    return new StructView(this.types, type, va, space);
  }

  /** Read a kernel pointer; undefined when unmapped. */
  readPointer = (va: bigint): bigint | undefined => {
    const b = this.space.tryRead(va, 8);
    return b ? b.readBigUInt64LE(0) : undefined;
  };

  /** Kernel virtual address of a per-CPU variable on one CPU. */
  perCpu(symbol: string, cpu: number): bigint {
    const off = this.kaslr.perCpuOffsets[cpu];
    if (off === undefined) throw new VigilError('os', 'not-found', `no per-CPU offset for CPU ${cpu}`);
    return (this.sym(symbol) + off) & 0xffff_ffff_ffff_ffffn;
  }

  /** A process's address space from its mm->pgd (a kernel virtual address in the direct map). */
  userSpace(pgdVa: bigint): PageTableAddressSpace {
    const paddr = this.space.translate(pgdVa);
    if (paddr === undefined)
      throw new VigilError('os', 'unmapped', `pgd 0x${pgdVa.toString(16)} is not mapped`);
    return new PageTableAddressSpace(this.memory, paddr, this.space.mode, this.pagingCache);
  }

  /** Start a new sweep on a live guest: everything cached is stale. */
  refresh(): void {
    this.epoch.bump();
    this.issues = new WalkIssues();
  }

  /** Drop cached guest memory on a live guest (see TaskKernel.rereadLive); false on a dump. */
  rereadLive(): boolean {
    if (this.epoch.frozen) return false;
    this.epoch.bump();
    return true;
  }

  /** Name of the kernel symbol an address points into ("func+0x1f"), or undefined. */
  symbolize(va: bigint): string | undefined {
    return this.symbols.symbolize(va);
  }
}
