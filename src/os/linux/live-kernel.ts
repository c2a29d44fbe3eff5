// The running kernel of a live VM: find it, and notice when a Kernel object stops describing it.
//
// A guest that reboots keeps its old kernel image in RAM (a reset does not clear memory), so a fresh
// bootstrap right after a reboot can find the *old* kernel, and with physical KASLR the old image may sit
// untouched next to the new one for a long time. Two checks tell a running kernel from a stale image:
//   - system_state (the kernel's own boot phase): SYSTEM_RUNNING once init runs, RESTART/HALT/POWER_OFF
//     on the way down. Policies should not learn baselines from a kernel that has not finished booting.
//   - the vCPU: its CR3 (any process's page tables share the kernel half) must map linux_banner's virtual
//     address to the physical address this Kernel found it at. A stale image fails this; so does the
//     firmware or the decompressor running before the new kernel.
// When the image found is not the running one (or is a stale one that no longer even bootstraps), bootstrap
// is tried again with that image (or its kallsyms tables) hidden.
// Every sweep, a cheaper check (no QMP round trip) re-reads linux_banner through the kernel page tables.

import { PageTableAddressSpace, type PagingCache } from '../../arch/x86_64/index.js';
import type { PagingMode } from '../../arch/types.js';
import { findKallsyms } from './kallsyms/index.js';
import { Kernel } from './kernel.js';
import { kernelVirtToPhys } from './kaslr.js';
import { isVigilError } from '../../util/errors.js';
import type { PhysicalMemory, PhysRange, Vcpu } from '../../vmm/types.js';

/** What the checks read of a Kernel (a real one, or a synthetic one in tests). */
export interface CheckableKernel {
  readonly banner: { readonly text: string; readonly release: string };
  readonly kaslr: {
    readonly physBase: bigint;
    readonly physicalBase: bigint;
    readonly virtualOffset: bigint;
  };
  readonly symbols: { address(name: string): bigint | undefined };
  readonly types: { enumValue(name: string): bigint };
  readonly memory: PhysicalMemory;
  readonly space: {
    translate(va: bigint): bigint | undefined;
    tryRead(va: bigint, length: number): Buffer | undefined;
    readonly mode: PagingMode;
  };
  readonly pagingCache: PagingCache;
}

export type KernelPhase = 'booting' | 'running' | 'going-down' | 'unknown';

const PHASES: readonly [string, KernelPhase][] = [
  ['SYSTEM_BOOTING', 'booting'],
  ['SYSTEM_SCHEDULING', 'booting'],
  ['SYSTEM_FREEING_INITMEM', 'booting'],
  ['SYSTEM_RUNNING', 'running'],
  // Suspend-to-RAM sets it for the duration of the suspend; the kernel is the same when it wakes.
  ['SYSTEM_SUSPEND', 'running'],
  ['SYSTEM_HALT', 'going-down'],
  ['SYSTEM_POWER_OFF', 'going-down'],
  ['SYSTEM_RESTART', 'going-down'],
];

const phaseTables = new WeakMap<object, Map<bigint, { name: string; phase: KernelPhase }>>();

function phaseTable(k: CheckableKernel): Map<bigint, { name: string; phase: KernelPhase }> {
  let t = phaseTables.get(k.types);
  if (!t) {
    t = new Map();
    for (const [name, phase] of PHASES) {
      try {
        t.set(k.types.enumValue(name), { name, phase });
      } catch (e) {
        if (!isVigilError(e)) throw e;
      }
    }
    phaseTables.set(k.types, t);
  }
  return t;
}

/** The kernel's boot phase from `system_state`; 'unknown' when the kernel does not say. */
export function kernelPhase(k: CheckableKernel): { phase: KernelPhase; name: string } {
  const va = k.symbols.address('system_state');
  if (va === undefined) return { phase: 'unknown', name: 'no system_state symbol' };
  const b = k.space.tryRead(va, 4);
  if (!b) return { phase: 'unknown', name: 'system_state unmapped' };
  const v = BigInt(b.readUInt32LE(0));
  const hit = phaseTable(k).get(v);
  return hit ?? { phase: 'unknown', name: `system_state ${v}` };
}

/** Which kernel this is: what baselines are tied to. */
export interface KernelIdentity {
  /** The `Linux version …` banner. */
  banner: string;
  /** KASLR virtual offset (the slide). */
  kaslrOffset: bigint;
  /** Kernel release (e.g. "6.1.0-28-amd64"). */
  release?: string;
}

/** The identity baselines are tied to: a changed banner or KASLR offset means another kernel (a reboot). */
export function kernelIdentity(k: CheckableKernel): KernelIdentity {
  return { banner: k.banner.text, kaslrOffset: k.kaslr.virtualOffset, release: k.banner.release };
}

export function sameIdentity(a: KernelIdentity, b: KernelIdentity): boolean {
  return a.banner === b.banner && a.kaslrOffset === b.kaslrOffset;
}

/**
 * Memory-only check that `k` still describes the kernel in RAM: linux_banner is still mapped where it was
 * and still holds the same text, and the kernel is not shutting down. Returns why not, or undefined.
 * Reads a few hundred bytes: cheap enough for every sweep (call after the epoch moved, so reads are fresh).
 */
export function residentChange(k: CheckableKernel): string | undefined {
  const va = k.symbols.address('linux_banner');
  if (va !== undefined) {
    const pa = kernelVirtToPhys(k.kaslr.physBase, va);
    if (k.space.translate(va) !== pa) return 'the kernel page tables no longer map linux_banner';
    const want = Buffer.from(k.banner.text, 'latin1');
    if (!k.memory.read(pa, want.length).equals(want)) return 'the kernel banner in memory changed';
  }
  const { phase, name } = kernelPhase(k);
  if (phase === 'going-down') return `the kernel is going down (${name})`;
  if (phase === 'booting') return `a kernel is booting (${name})`;
  return undefined;
}

/** CR3 candidates for the kernel's own top-level table: PCID bits off, and with PTI the user-half bit too. */
export function cr3Roots(cr3: bigint): bigint[] {
  const frame = cr3 & 0x000f_ffff_ffff_f000n;
  return frame & 0x1000n ? [frame, frame & ~0x1fffn] : [frame];
}

/**
 * Whether a vCPU runs this kernel: its page tables map linux_banner to where `k` found it. Undefined when
 * the question cannot be asked (no vCPU registers, no linux_banner symbol).
 */
export async function runsOnCpu(
  k: CheckableKernel,
  vcpus: readonly Vcpu[],
): Promise<{ live: boolean; why?: string } | undefined> {
  const va = k.symbols.address('linux_banner');
  if (va === undefined || vcpus.length === 0) return undefined;
  const pa = kernelVirtToPhys(k.kaslr.physBase, va);
  let why = 'no vCPU maps this kernel';
  let asked = false;
  // A few vCPUs are enough: they all run the same kernel; an offline one may still sit in firmware.
  for (const cpu of vcpus.slice(0, 4)) {
    let regs;
    try {
      regs = await cpu.registers();
    } catch {
      continue;
    }
    asked = true;
    if ((regs.cr0 & (1n << 31n)) === 0n) {
      why = 'paging is off on the vCPU (firmware or boot loader)';
      continue;
    }
    for (const root of cr3Roots(regs.cr3)) {
      try {
        const space = new PageTableAddressSpace(k.memory, root, k.space.mode, k.pagingCache);
        if (space.translate(va) === pa) return { live: true };
      } catch (e) {
        if (!isVigilError(e)) throw e;
      }
    }
  }
  return asked ? { live: false, why } : undefined;
}

/** Physical range of a kernel image (_text … _end), to hide a stale image from a second bootstrap. */
export function imageRange(k: CheckableKernel): PhysRange | undefined {
  const text = k.symbols.address('_text');
  const end = k.symbols.address('_end');
  if (text === undefined || end === undefined || end <= text || end - text > 1n << 30n) return undefined;
  return { start: k.kaslr.physicalBase, size: end - text };
}

/** Guest memory with some ranges reading as zeros while `masked` is set: a stale kernel image, hidden. */
export class MaskedMemory implements PhysicalMemory {
  readonly inner: PhysicalMemory;
  masked: PhysRange[];

  constructor(inner: PhysicalMemory, masked: PhysRange[]) {
    this.inner = inner;
    this.masked = masked;
  }

  get description(): string {
    return this.inner.description;
  }

  get ranges(): readonly PhysRange[] {
    return this.inner.ranges;
  }

  read(paddr: bigint, length: number, into?: Buffer): Buffer {
    return this.#zero(paddr, this.inner.read(paddr, length, into));
  }

  readStrict(paddr: bigint, length: number): Buffer {
    return this.#zero(paddr, this.inner.readStrict(paddr, length));
  }

  close(): void {
    this.inner.close();
  }

  #zero(paddr: bigint, buf: Buffer): Buffer {
    const end = paddr + BigInt(buf.length);
    for (const m of this.masked) {
      const from = paddr > m.start ? paddr : m.start;
      const to = end < m.start + m.size ? end : m.start + m.size;
      if (from < to) buf.fill(0, Number(from - paddr), Number(to - paddr));
    }
    return buf;
  }
}

export type LiveBootstrap =
  { ok: true; kernel: Kernel; ms: number; note?: string } | { ok: false; reason: string; ms: number };

export interface LiveBootstrapOptions {
  /** Default Kernel.bootstrap(memory, { live: true }). */
  bootstrap?: (memory: PhysicalMemory) => Kernel;
}

/**
 * Bootstrap the kernel that is running now, or say why there is none yet (the guest is in firmware, its
 * kernel is booting, RAM still holds a stale image). Never throws for a guest's state.
 */
export async function bootstrapLive(
  memory: PhysicalMemory,
  vcpus: readonly Vcpu[],
  options: LiveBootstrapOptions = {},
): Promise<LiveBootstrap> {
  const t0 = performance.now();
  const boot = options.bootstrap ?? ((m: PhysicalMemory) => Kernel.bootstrap(m, { live: true }));
  const ms = () => Math.round(performance.now() - t0);
  const attempt = async (mem: PhysicalMemory): Promise<{ kernel?: Kernel; reason: string }> => {
    let k: Kernel;
    try {
      k = boot(mem);
    } catch (e) {
      return { reason: errorLine(e) };
    }
    const { phase, name } = kernelPhase(k);
    if (phase === 'booting') return { reason: `the kernel is still booting (${name})` };
    const cpu = await runsOnCpu(k, vcpus);
    if (cpu && !cpu.live)
      return { kernel: k, reason: `kernel image in RAM is not the running one: ${cpu.why}` };
    if (phase === 'going-down') return { kernel: k, reason: `the kernel in RAM is going down (${name})` };
    return { kernel: k, reason: '' };
  };
  // Each look that finds a kernel image which is not the running one hides it, and looks again.
  const hidden: PhysRange[] = [];
  let last = '';
  for (let i = 0; i < MAX_LOOKS; i++) {
    const mem = hidden.length > 0 ? new MaskedMemory(memory, [...hidden]) : memory;
    const r = await attempt(mem);
    if (r.kernel && r.reason === '') {
      if (mem instanceof MaskedMemory) {
        mem.masked = [];
        // Nothing read while masked may survive: the hidden ranges can hold the new kernel's data too.
        r.kernel.refresh();
      }
      const note = hidden.length > 0 ? `skipped ${describeHidden(hidden)}` : undefined;
      return { ok: true, kernel: r.kernel, ms: ms(), ...(note ? { note } : {}) };
    }
    last = r.reason;
    const stale = r.kernel ? imageRange(r.kernel) : kallsymsRange(mem);
    if (!stale || hidden.some((h) => h.start === stale.start)) break;
    hidden.push(stale);
  }
  const suffix = hidden.length > 0 ? ` (after skipping ${describeHidden(hidden)})` : '';
  return { ok: false, reason: last + suffix, ms: ms() };
}

/** Bootstraps tried per call: the first look, and one per stale image hidden. */
const MAX_LOOKS = 3;

function describeHidden(ranges: readonly PhysRange[]): string {
  const at = ranges.map((r) => `0x${r.start.toString(16)}`).join(', ');
  return `${ranges.length === 1 ? 'a stale kernel image' : `${ranges.length} stale kernel images`} at ${at}`;
}

/**
 * Where the kallsyms tables that a failed bootstrap used lie: a stale image whose page tables were already
 * overwritten fails KASLR placement, and kallsyms would find its tables first again next time.
 */
function kallsymsRange(mem: PhysicalMemory): PhysRange | undefined {
  let layout;
  try {
    layout = findKallsyms(mem).layout;
  } catch (e) {
    if (isVigilError(e)) return undefined;
    throw e;
  }
  const addrs = [
    layout.addressesAddr,
    layout.numSymsAddr,
    layout.namesAddr,
    layout.markersAddr,
    layout.tokenTableAddr,
  ];
  const start = addrs.reduce((a, b) => (a < b ? a : b));
  // The token index (256 u16 offsets) or the address table (at most 8 bytes a symbol) ends the tables.
  const tokensEnd = layout.tokenIndexAddr + 512n;
  const addressesEnd = layout.addressesAddr + 8n * BigInt(layout.numSyms);
  const end = tokensEnd > addressesEnd ? tokensEnd : addressesEnd;
  if (end <= start || end - start > 64n << 20n) return undefined;
  return { start, size: end - start };
}

function errorLine(e: unknown): string {
  if (isVigilError(e)) return e.message;
  return e instanceof Error ? e.message : String(e);
}
