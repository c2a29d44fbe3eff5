// memory-access: Livewire's memory access enforcer for the kernel image. Kernel text and read-only data
// must not change after boot; the system call tables and the IDT must keep pointing where they pointed.
//
//  - Text and rodata are read every sweep, normalised, and compared per 64 KiB chunk with what was learned
//    on the first attach (SHA-256 per chunk in the baseline; the chunk's bytes kept in memory while vigil
//    runs, so a change is reported with its exact offsets, symbol and old/new bytes; a change found against
//    a baseline from an earlier run is placed by 32-bit digests of its 256-byte blocks).
//  - Normalising: the kernel itself patches its text at run time, at known places only. Jump labels (the
//    kernel's __jump_table: nop ↔ jmp to the entry's target), static calls (.static_call_sites and the
//    __SCT__ trampolines: call/jmp into kernel text, nop, ret, "xor eax,eax"), ftrace's fentry sites (nop ↔
//    call to ftrace_caller/ftrace_regs_caller or a registered ftrace_ops' trampoline; ftrace_pages'
//    records), ftrace_call/ftrace_regs_call inside the ftrace entry code, the BPF dispatcher. A site in any
//    of the states the kernel's own patching produces (and text_poke_bp's transient int3) hashes as zeros,
//    so flipping a static key or enabling a tracer changes nothing. A site in any other state is reported
//    even without a baseline: no kernel mechanism writes a jmp over an fentry nop.
//  - sys_call_table (masked out of the rodata hash) is checked entry by entry against the baseline and
//    for shape: every entry is the entry point of a __x64_sys_*/__do_sys_*/sys_ni_syscall function in
//    kernel text. The IDT (idt_table) gate by gate against the baseline and for shape (handler in kernel
//    text; the reserved vectors' early handlers in init text), and the CPU entry area's read-only IDT alias
//    (what IDTR points at) must map idt_table's page.
//  - Event-driven: QEMU's GDB stub can set write watchpoints on a few critical entries (armWatchpoints);
//    a hit becomes a VmEvent this policy checks at once.
//  - The system call entry MSRs (LSTAR, CSTAR, SYSENTER_EIP) of every vCPU against the kernel's entry
//    symbols, read from a QEMU device-state snapshot at most once a minute: syscall-msr.ts.
import { createHash } from 'node:crypto';
import type { Kernel } from '../../os/linux/kernel.js';
import { hex, type KernelAccess } from '../../os/linux/modules/access.js';
import {
  CodeAttributor,
  describeCode,
  GATE_SIZE,
  IDT_ENTRIES,
  decodeGate,
  listSyscallTables,
  tableSlots,
  MAX_SYSCALLS,
  SYSCALL_TABLES,
  type SyscallTable,
} from '../../os/linux/tables/index.js';
import { readTask } from '../../os/linux/tasks/index.js';
import { hlistEntries, WalkIssues, type WalkIssue } from '../../os/linux/walk.js';
import { VigilError, isVigilError } from '../../util/errors.js';
import type { StopReply } from '../../vmm/gdb/stop-reply.js';
import { BoundedQueue } from '../../vmm/qmp/bounded-queue.js';
import type { DebugHandle, VmEvent } from '../../vmm/types.js';
import type { BaselineAccess, JsonValue } from '../baseline.js';
import { definePolicy, type SweepContext } from '../policy.js';
import type { Finding, Severity } from '../types.js';
import { withSyscallMsrFindings } from './syscall-msr.js';

/** What the integrity checks read: the walkers' kernel slice, and the cache epoch when there is one. */
export type IntegrityKernel = KernelAccess & {
  readonly epoch?: { readonly frozen: boolean; readonly value: number };
};

export const CHUNK_SIZE = 0x10000;
export const BLOCK_SIZE = 0x100;
/** Text is ~14 MiB and rodata ~9 MiB on a distribution kernel. */
const MAX_RANGE_BYTES = 64 << 20;
const MAX_JUMP_ENTRIES = 1 << 18;
const MAX_STATIC_CALL_SITES = 1 << 18;
const MAX_FTRACE_PAGES = 1 << 14;
const MAX_FTRACE_RECORDS = 1 << 20;
/** All patch sites together (the sort key packs an index of 21 bits). */
const MAX_SITES = (1 << 21) - 1;
const MAX_FTRACE_PAGE_RECORDS = 1 << 17;
export const MAX_FTRACE_OPS = 1024;
const MAX_FTRACE_HASH_BITS = 16;
const MAX_FILTERS_SHOWN = 64;
/** Change groups reported per range per sweep; the last finding says how many more there were. */
const MAX_GROUPS = 32;
/** Differing bytes closer than this belong to one change. */
const MERGE_GAP = 8;
/** Bytes of old/new shown per change. */
const SHOW_BYTES = 32;
/** x86-64 module mapping space (Documentation/x86/x86_64/mm.rst): BPF images and ftrace trampolines too. */
export const MODULE_AREA = { start: 0xffffffffa0000000n, end: 0xffffffffff000000n };
/** CPU_ENTRY_AREA_RO_IDT: the read-only IDT alias IDTR points at (4- and 5-level paging alike). */
export const CEA_IDT = 0xfffffe0000000000n;
const PAGE_MASK = ~0xfffn;

// ---- x86 instruction shapes ------------------------------------------------------------------------

const ENDBR64 = Buffer.from([0xf3, 0x0f, 0x1e, 0xfa]);
const isNop5 = (b: Buffer, o: number): boolean =>
  b[o] === 0x0f && b[o + 1] === 0x1f && b[o + 2] === 0x44 && b[o + 3] === 0 && b[o + 4] === 0;
const isRetInt3 = (b: Buffer, o: number): boolean =>
  b[o] === 0xc3 && b[o + 1] === 0xcc && b[o + 2] === 0xcc && b[o + 3] === 0xcc && b[o + 4] === 0xcc;
/** static_call's inline "return 0": cs cs cs xor %eax,%eax. */
const isXorRet0 = (b: Buffer, o: number): boolean =>
  b[o] === 0x2e && b[o + 1] === 0x2e && b[o + 2] === 0x2e && b[o + 3] === 0x31 && b[o + 4] === 0xc0;

export type BranchKind = 'jmp' | 'call' | 'jmp-short' | 'jmp-indirect' | 'movabs-jmp' | 'push-ret' | 'int3';

export interface Branch {
  kind: BranchKind;
  /** Instruction length in bytes. */
  length: number;
  /** Where it goes, when that can be computed from the bytes (and, for `jmp [rip+x]`, memory). */
  destination?: bigint;
}

const U64 = (1n << 64n) - 1n;

/**
 * Decode the control transfer at `b[o]` (at virtual address `va`) in the forms inline hooks use: jmp/call
 * rel32, jmp rel8, jmp [rip+disp32] (the pointer read through `readPointer`), movabs reg, imm64 + jmp reg,
 * push imm32 + ret, int3. Undefined for anything else.
 */
export function decodeBranch(
  b: Buffer,
  o: number,
  va: bigint,
  readPointer?: (va: bigint) => bigint | undefined,
): Branch | undefined {
  const op = b[o];
  if (op === undefined) return undefined;
  if ((op === 0xe9 || op === 0xe8) && o + 5 <= b.length) {
    return {
      kind: op === 0xe9 ? 'jmp' : 'call',
      length: 5,
      destination: (va + 5n + BigInt(b.readInt32LE(o + 1))) & U64,
    };
  }
  if (op === 0xeb && o + 2 <= b.length) {
    return { kind: 'jmp-short', length: 2, destination: (va + 2n + BigInt(b.readInt8(o + 1))) & U64 };
  }
  if (op === 0xff && b[o + 1] === 0x25 && o + 6 <= b.length) {
    const slot = (va + 6n + BigInt(b.readInt32LE(o + 2))) & U64;
    const destination = readPointer?.(slot);
    return destination !== undefined
      ? { kind: 'jmp-indirect', length: 6, destination }
      : { kind: 'jmp-indirect', length: 6 };
  }
  // movabs $imm64, %reg (48/49 b8+r) then jmp *%reg (ff e0+r, 41 ff e0+r for r8-r15).
  if ((op === 0x48 || op === 0x49) && b[o + 1]! >= 0xb8 && b[o + 1]! <= 0xbf && o + 12 <= b.length) {
    const reg = (b[o + 1]! - 0xb8) | (op === 0x49 ? 8 : 0);
    const j = o + 10;
    const jmpReg =
      reg < 8
        ? b[j] === 0xff && b[j + 1] === 0xe0 + reg
        : b[j] === 0x41 && b[j + 1] === 0xff && b[j + 2] === 0xe0 + (reg - 8);
    if (jmpReg) {
      return { kind: 'movabs-jmp', length: reg < 8 ? 12 : 13, destination: b.readBigUInt64LE(o + 2) };
    }
  }
  // push $imm32 (sign-extended: kernel addresses fit) ; ret
  if (op === 0x68 && b[o + 5] === 0xc3 && o + 6 <= b.length) {
    return { kind: 'push-ret', length: 6, destination: BigInt(b.readInt32LE(o + 1)) & U64 };
  }
  if (op === 0xcc) return { kind: 'int3', length: 1 };
  return undefined;
}

// ---- the kernel image ranges -------------------------------------------------------------------------

export interface ImageRange {
  name: 'text' | 'rodata';
  start: bigint;
  end: bigint;
}

/** Kernel text (_stext.._etext) and read-only data (__start_rodata..__end_rodata) when present. */
export function imageRanges(k: KernelAccess): ImageRange[] {
  const out: ImageRange[] = [];
  for (const [name, a, b] of [
    ['text', '_stext', '_etext'],
    ['rodata', '__start_rodata', '__end_rodata'],
  ] as const) {
    const start = k.symbols.address(a);
    const end = k.symbols.address(b);
    if (start === undefined || end === undefined || end <= start) continue;
    if (end - start > BigInt(MAX_RANGE_BYTES)) {
      throw new VigilError(
        'policy',
        'bound',
        `kernel ${name} ${hex(start)}..${hex(end)} is implausibly large`,
      );
    }
    out.push({ name, start, end });
  }
  if (!out.some((r) => r.name === 'text')) {
    throw new VigilError('os', 'not-found', 'kernel text boundaries (_stext/_etext) not found');
  }
  return out;
}

// ---- ftrace_ops ----------------------------------------------------------------------------------------

export interface FtraceOps {
  address: bigint;
  func: bigint;
  flags: bigint;
  /** FTRACE_OPS_FL_* names set in `flags` (from the kernel's BTF enum). */
  flagNames: string[];
  trampoline: bigint;
  trampolineSize: bigint;
  /** Functions the ops filters on (func_hash->filter_hash), at most 64; empty = every function. */
  filters: bigint[];
  /** False when the filter hash was asked for but could not be read (it is swapped under RCU). */
  filtersReadable: boolean;
  filterCount: number;
}

const FTRACE_FLAG_NAMES = [
  'ENABLED',
  'DYNAMIC',
  'SAVE_REGS',
  'SAVE_REGS_IF_SUPPORTED',
  'RECURSION',
  'STUB',
  'INITIALIZED',
  'DELETED',
  'ADDING',
  'REMOVING',
  'MODIFYING',
  'ALLOC_TRAMP',
  'IPMODIFY',
  'PID',
  'RCU',
  'TRACE_ARRAY',
  'PERMANENT',
  'DIRECT',
];

function ftraceFlagNames(k: KernelAccess, flags: bigint): string[] {
  const out: string[] = [];
  for (const n of FTRACE_FLAG_NAMES) {
    try {
      const v = k.types.enumValue(`FTRACE_OPS_FL_${n}`);
      if (v > 0n && (flags & v) === v) out.push(n);
    } catch {
      // Not in this kernel's enum.
    }
  }
  return out;
}

/**
 * The registered ftrace_ops: ftrace_ops_list, threaded through ->next, ends at &ftrace_list_end. Bounded
 * and cycle-safe; a walk that stops early leaves an issue in kernel.issues.
 */
export function listFtraceOps(
  k: KernelAccess,
  options: { filters?: boolean | ((ops: { address: bigint; func: bigint }) => boolean) } = {},
): FtraceOps[] {
  const listVa = k.symbols.address('ftrace_ops_list');
  const end = k.symbols.address('ftrace_list_end');
  if (listVa === undefined || end === undefined || k.types.find('ftrace_ops') === undefined) return [];
  const nextOff = BigInt(k.types.offsetof('ftrace_ops', 'next'));
  const out: FtraceOps[] = [];
  const seen = new Set<bigint>();
  let op = k.readPointer(listVa);
  while (op !== undefined && op !== end && op !== 0n) {
    if (seen.has(op)) {
      k.issues.add('ftrace-ops', 'cycle', `ftrace_ops list loops back to ${hex(op)}`);
      break;
    }
    if (seen.size >= MAX_FTRACE_OPS) {
      k.issues.add('ftrace-ops', 'bound', `stopped at ${MAX_FTRACE_OPS} ftrace_ops`);
      break;
    }
    seen.add(op);
    try {
      const v = k.view('ftrace_ops', op);
      const flags = v.int('flags');
      const func = v.ptr('func');
      const want =
        typeof options.filters === 'function' ? options.filters({ address: op, func }) : options.filters;
      const f = want ? filterHash(k, v.ptr('func_hash')) : { ips: [], count: 0, readable: true };
      out.push({
        address: op,
        func,
        flags,
        flagNames: ftraceFlagNames(k, flags),
        trampoline: v.ptr('trampoline'),
        trampolineSize: v.int('trampoline_size'),
        filters: f.ips,
        filterCount: f.count,
        filtersReadable: f.readable,
      });
    } catch (e) {
      if (!isVigilError(e)) throw e;
      k.issues.add('ftrace-ops', 'unmapped', `ftrace_ops at ${hex(op)}: ${e.message}`);
      break;
    }
    op = k.readPointer(op + nextOff);
  }
  if (op === undefined) k.issues.add('ftrace-ops', 'unmapped', 'ftrace_ops list is not readable');
  if (op === 0n) k.issues.add('ftrace-ops', 'malformed', 'ftrace_ops list ends in NULL');
  return out;
}

/**
 * The functions in an ftrace_ops_hash's filter_hash (struct ftrace_hash of ftrace_func_entry). Evidence
 * only: the kernel replaces a filter hash under RCU whenever a filter is written, so a live read can land
 * on a hash being freed; that makes the list unreadable, not the walk partial.
 */
function filterHash(k: KernelAccess, opsHash: bigint): { ips: bigint[]; count: number; readable: boolean } {
  const none = { ips: [], count: 0, readable: true };
  try {
    if (opsHash === 0n) return none;
    const hash = k.view('ftrace_ops_hash', opsHash).ptr('filter_hash');
    if (hash === 0n) return none;
    const h = k.view('ftrace_hash', hash);
    const bits = Number(h.int('size_bits'));
    const count = Number(h.int('count'));
    const buckets = h.ptr('buckets');
    const n = bits >= 0 && bits <= MAX_FTRACE_HASH_BITS ? 1 << bits : 0;
    const heads = n > 0 && buckets !== 0n ? k.space.tryRead(buckets, n * 8) : undefined;
    if (!heads) return { ips: [], count, readable: false };
    const ipOff = BigInt(k.types.offsetof('ftrace_func_entry', 'ip'));
    const issues = new WalkIssues();
    const ips: bigint[] = [];
    for (let i = 0; i < n && ips.length < MAX_FILTERS_SHOWN; i++) {
      if (heads.readBigUInt64LE(i * 8) === 0n) continue;
      const opts = { walker: 'ftrace-hash', max: MAX_FILTERS_SHOWN, issues };
      for (const node of hlistEntries(k.readPointer, buckets + BigInt(i * 8), opts)) {
        const ip = k.readPointer(node + ipOff);
        if (ip !== undefined) ips.push(ip);
        if (ips.length >= MAX_FILTERS_SHOWN) break;
      }
    }
    return { ips, count, readable: issues.items.length === 0 };
  } catch (e) {
    if (!isVigilError(e)) throw e;
    return { ips: [], count: 0, readable: false };
  }
}

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

// ---- run-time patch sites in kernel text ---------------------------------------------------------------

export type SiteKind =
  'jump-label' | 'static-call' | 'static-call-trampoline' | 'ftrace' | 'ftrace-caller' | 'bpf-dispatcher';
const SITE_KINDS: readonly SiteKind[] = [
  'jump-label',
  'static-call',
  'static-call-trampoline',
  'ftrace',
  'ftrace-caller',
  'bpf-dispatcher',
];
const KIND = Object.fromEntries(SITE_KINDS.map((k, i) => [k, i])) as Record<SiteKind, number>;

/** What the kernel writes at each kind of site (for evidence). */
export const SITE_FORMS: Readonly<Record<SiteKind, string>> = {
  'jump-label': "a 2- or 5-byte nop, or a jmp to the jump_entry's target",
  'static-call': 'a call/jmp into kernel text or a listed module, a 5-byte nop, ret, or xor %eax,%eax',
  'static-call-trampoline': 'a jmp into kernel text or a listed module, or ret',
  ftrace: 'a 5-byte nop, or a call to ftrace_caller/ftrace_regs_caller or an ftrace_ops trampoline',
  'ftrace-caller': 'a call or jmp into kernel text',
  'bpf-dispatcher': 'a 5-byte nop or a jmp to a BPF image',
};

/** The run-time patch sites in kernel text, sorted by offset from the text start. */
export interface PatchSites {
  textStart: bigint;
  textEnd: bigint;
  offsets: Uint32Array;
  kinds: Uint8Array;
  /** Jump labels: the target's offset from the text start (NaN for other kinds). */
  targets: Float64Array;
  /** How many sites of each kind were found. */
  counts: Record<SiteKind, number>;
}

const siteCache = new WeakMap<object, PatchSites>();

/** Every run-time patch site of kernel text; built once per kernel object (they are fixed at boot). */
export function patchSites(k: KernelAccess): PatchSites {
  const hit = siteCache.get(k);
  if (hit) return hit;
  const text = imageRanges(k).find((r) => r.name === 'text')!;
  const len = Number(text.end - text.start);
  const offs: number[] = [];
  const kinds: number[] = [];
  const targets: number[] = [];
  const counts = Object.fromEntries(SITE_KINDS.map((s) => [s, 0])) as Record<SiteKind, number>;
  const add = (va: bigint, kind: SiteKind, target = NaN): void => {
    if (va < text.start || va >= text.end || offs.length >= MAX_SITES) return;
    const o = Number(va - text.start);
    if (o + 2 > len) return;
    offs.push(o);
    kinds.push(KIND[kind]);
    targets.push(target);
    counts[kind]++;
  };

  // __jump_table: struct jump_entry { s32 code; s32 target; long key; }, fields relative to themselves.
  const js = k.symbols.address('__start___jump_table');
  const je = k.symbols.address('__stop___jump_table');
  if (js !== undefined && je !== undefined && je > js) {
    const size = k.types.find('jump_entry') !== undefined ? k.types.sizeof('jump_entry') : 16;
    const codeOff = fieldOffset(k, 'jump_entry', 'code', 0);
    const targetOff = fieldOffset(k, 'jump_entry', 'target', 4);
    const n = Math.min(Number((je - js) / BigInt(size)), MAX_JUMP_ENTRIES);
    if (n === MAX_JUMP_ENTRIES) k.issues.add('patch-sites', 'bound', `__jump_table cut at ${n} entries`);
    const raw = k.space.tryRead(js, n * size);
    if (!raw) k.issues.add('patch-sites', 'unmapped', '__jump_table is not readable');
    else {
      for (let i = 0; i < n; i++) {
        const e = js + BigInt(i * size);
        const code = e + BigInt(codeOff) + BigInt(raw.readInt32LE(i * size + codeOff));
        const target = e + BigInt(targetOff) + BigInt(raw.readInt32LE(i * size + targetOff));
        add(code, 'jump-label', Number(target - text.start));
      }
    }
  }

  // .static_call_sites: struct static_call_site { s32 addr; s32 key; }.
  const ss = k.symbols.address('__start_static_call_sites');
  const se = k.symbols.address('__stop_static_call_sites');
  if (ss !== undefined && se !== undefined && se > ss) {
    const size = k.types.find('static_call_site') !== undefined ? k.types.sizeof('static_call_site') : 8;
    const addrOff = fieldOffset(k, 'static_call_site', 'addr', 0);
    const n = Math.min(Number((se - ss) / BigInt(size)), MAX_STATIC_CALL_SITES);
    const raw = k.space.tryRead(ss, n * size);
    if (!raw) k.issues.add('patch-sites', 'unmapped', '.static_call_sites is not readable');
    else {
      for (let i = 0; i < n; i++) {
        const e = ss + BigInt(i * size);
        add(e + BigInt(addrOff) + BigInt(raw.readInt32LE(i * size + addrOff)), 'static-call');
      }
    }
  }

  // Static call trampolines: the __SCT__* symbols in .static_call.text.
  const ts = k.symbols.address('__static_call_text_start');
  const te = k.symbols.address('__static_call_text_end');
  if (ts !== undefined && te !== undefined && te > ts && te - ts < 1n << 24n) {
    for (const s of k.symbols.range(ts, te)) {
      if (s.name.startsWith('__SCT__')) add(s.address, 'static-call-trampoline');
    }
  }

  // ftrace's records of fentry call sites: ftrace_pages_start → struct ftrace_page { next, records, index }.
  for (const ip of ftraceRecords(k)) add(ip, 'ftrace');
  for (const n of ['ftrace_call', 'ftrace_regs_call', 'ftrace_graph_call']) {
    const va = k.symbols.address(n);
    if (va !== undefined) add(va, 'ftrace-caller');
  }
  for (const n of ['bpf_dispatcher_xdp_func']) {
    const va = k.symbols.address(n);
    if (va === undefined) continue;
    const head = k.space.tryRead(va, 4);
    // The patched nop follows an endbr64 on kernels built with IBT.
    add(head?.equals(ENDBR64) ? va + 4n : va, 'bpf-dispatcher');
  }

  // Sort by (offset, kind) with one native numeric sort: key = (offset * 8 + kind) * 2^21 + index.
  const keys = new Float64Array(offs.length);
  for (let i = 0; i < offs.length; i++) keys[i] = (offs[i]! * 8 + kinds[i]!) * 2 ** 21 + i;
  keys.sort();
  const order = Array.from(keys, (key) => key % 2 ** 21);
  const sites: PatchSites = {
    textStart: text.start,
    textEnd: text.end,
    offsets: Uint32Array.from(order, (i) => offs[i]!),
    kinds: Uint8Array.from(order, (i) => kinds[i]!),
    targets: Float64Array.from(order, (i) => targets[i]!),
    counts,
  };
  siteCache.set(k, sites);
  return sites;
}

function fieldOffset(k: KernelAccess, type: string, field: string, fallback: number): number {
  try {
    return k.types.offsetof(type, field);
  } catch {
    return fallback;
  }
}

function ftraceRecords(k: KernelAccess): bigint[] {
  const start = k.symbols.address('ftrace_pages_start');
  if (start === undefined || k.types.find('ftrace_page') === undefined) return [];
  const recSize = k.types.sizeof('dyn_ftrace');
  const ipOff = k.types.offsetof('dyn_ftrace', 'ip');
  const out: bigint[] = [];
  const seen = new Set<bigint>();
  let pg = k.readPointer(start);
  while (pg !== undefined && pg !== 0n) {
    if (seen.has(pg)) {
      k.issues.add('patch-sites', 'cycle', `ftrace_pages loop back to ${hex(pg)}`);
      break;
    }
    if (seen.size >= MAX_FTRACE_PAGES || out.length >= MAX_FTRACE_RECORDS) {
      k.issues.add('patch-sites', 'bound', `ftrace_pages cut after ${seen.size} pages`);
      break;
    }
    seen.add(pg);
    try {
      const v = k.view('ftrace_page', pg);
      const count = Number(v.int('index'));
      const records = v.ptr('records');
      if (count < 0 || count > MAX_FTRACE_PAGE_RECORDS) {
        k.issues.add('patch-sites', 'malformed', `ftrace_page ${hex(pg)} claims ${count} records`);
      } else if (count > 0) {
        const raw = k.space.tryRead(records, count * recSize);
        if (!raw) k.issues.add('patch-sites', 'unmapped', `ftrace records at ${hex(records)} unreadable`);
        else for (let i = 0; i < count; i++) out.push(raw.readBigUInt64LE(i * recSize + ipOff));
      }
      pg = v.ptr('next');
    } catch (e) {
      if (!isVigilError(e)) throw e;
      k.issues.add('patch-sites', 'unmapped', `ftrace_page ${hex(pg)}: ${e.message}`);
      break;
    }
  }
  return out;
}

/** Context for judging a site: the text length and where fentry calls may go this sweep. */
interface SiteContext {
  textStart: bigint;
  textLen: number;
  ftraceTargets: CallTargets;
}

const inText = (c: SiteContext, o: number): boolean => o >= 0 && o < c.textLen;
const inModuleArea = (va: bigint): boolean => va >= MODULE_AREA.start && va < MODULE_AREA.end;

const nopTail = (b: Buffer, i: number): boolean =>
  b[i + 1] === 0x1f && b[i + 2] === 0x44 && b[i + 3] === 0 && b[i + 4] === 0;
const int3Tail = (b: Buffer, i: number): boolean =>
  b[i + 1] === 0xcc && b[i + 2] === 0xcc && b[i + 3] === 0xcc && b[i + 4] === 0xcc;

/**
 * How many bytes at buffer index `i` (text offset `o`) are in a state the kernel's own patching produces
 * for a site of this kind (0: none — tampered, or torn mid-patch). text_poke_bp writes an int3 first, then
 * the tail, then the first byte: an int3 followed by the tail of an accepted form is accepted as that form.
 */
function acceptedLength(
  b: Buffer,
  i: number,
  o: number,
  kind: number,
  target: number,
  c: SiteContext,
): number {
  if (i < 0 || i + 5 > b.length) return 0;
  const op = b[i]!;
  const int3 = op === 0xcc;
  if (kind === KIND.ftrace) {
    if (op === 0x0f) return isNop5(b, i) ? 5 : 0;
    if (int3 && nopTail(b, i)) return 5;
    if (op !== 0xe8 && !int3) return 0;
    return c.ftraceTargets.has((c.textStart + BigInt(o + 5 + b.readInt32LE(i + 1))) & U64) ? 5 : 0;
  }
  if (kind === KIND['jump-label']) {
    if ((op === 0x66 || int3) && b[i + 1] === 0x90) return 2;
    if ((op === 0xeb || int3) && o + 2 + b.readInt8(i + 1) === target) return 2;
    if (isNop5(b, i) || (int3 && nopTail(b, i))) return 5;
    return (op === 0xe9 || int3) && o + 5 + b.readInt32LE(i + 1) === target ? 5 : 0;
  }
  const dest = o + 5 + b.readInt32LE(i + 1);
  switch (kind) {
    case KIND['static-call']:
    case KIND['static-call-trampoline']: {
      const branch = op === 0xe9 || int3 || (kind === KIND['static-call'] && op === 0xe8);
      if (branch && (inText(c, dest) || c.ftraceTargets.moduleCode?.((c.textStart + BigInt(dest)) & U64))) {
        return 5;
      }
      if (isNop5(b, i) || isRetInt3(b, i) || isXorRet0(b, i)) return 5;
      if (int3 && (nopTail(b, i) || int3Tail(b, i))) return 5;
      return int3 && b[i + 1] === 0x2e && b[i + 2] === 0x2e && b[i + 3] === 0x31 && b[i + 4] === 0xc0 ? 5 : 0;
    }
    case KIND['ftrace-caller']:
      return (op === 0xe8 || op === 0xe9 || int3) && inText(c, dest) ? 5 : 0;
    case KIND['bpf-dispatcher']:
      if (isNop5(b, i) || (int3 && nopTail(b, i))) return 5;
      if (op !== 0xe9 && !int3) return 0;
      return inText(c, dest) || inModuleArea((c.textStart + BigInt(dest)) & U64) ? 5 : 0;
    default:
      return 0;
  }
}

export interface NormalizeOptions {
  /** Text offset of buf[0] (default 0: buf is kernel text from _stext). */
  base?: number;
  /** Only sites starting in [from, to) text offsets (default: every site whose bytes lie in buf). */
  from?: number;
  to?: number;
}

/**
 * Zero every site in `buf` (kernel text bytes) that is in an accepted state; return the indices (into
 * `sites`) of the sites in no accepted state.
 */
export function normalizeText(
  buf: Buffer,
  sites: PatchSites,
  ftraceTargetSet: CallTargets,
  options: NormalizeOptions = {},
): number[] {
  const base = options.base ?? 0;
  const from = options.from ?? base;
  const to = options.to ?? base + buf.length;
  const c: SiteContext = {
    textStart: sites.textStart,
    textLen: Number(sites.textEnd - sites.textStart),
    ftraceTargets: ftraceTargetSet,
  };
  const bad: number[] = [];
  const zero: [number, number][] = [];
  const { offsets, kinds, targets } = sites;
  let s = lowerBound(offsets, from);
  while (s < offsets.length && offsets[s]! < to) {
    const o = offsets[s]!;
    let j = s;
    let len = 0;
    // Several sites can share an offset (an fentry nop that is also the BPF dispatcher's): any may accept.
    while (j < offsets.length && offsets[j] === o) {
      len = Math.max(len, acceptedLength(buf, o - base, o, kinds[j]!, targets[j]!, c));
      j++;
    }
    if (len > 0) zero.push([o - base, len]);
    else if (o - base + 5 <= buf.length) bad.push(s);
    s = j;
  }
  for (const [i, len] of zero) buf.fill(0, i, Math.min(i + len, buf.length));
  return bad;
}

function lowerBound(a: Uint32Array, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Ranges of rodata masked from the hash because they are checked entry by entry: the syscall tables. */
export function rodataMasks(k: KernelAccess, range: ImageRange): [number, number][] {
  const out: [number, number][] = [];
  for (const name of SYSCALL_TABLES) {
    const va = k.symbols.address(name);
    if (va === undefined || va < range.start || va >= range.end) continue;
    const { count } = tableSlots(k, va, MAX_SYSCALLS);
    const o = Number(va - range.start);
    out.push([o, Math.min(o + count * 8, Number(range.end - range.start))]);
  }
  return out;
}

// ---- digests ------------------------------------------------------------------------------------------

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * A 32-bit digest (FNV-1a over little-endian 32-bit words) of each BLOCK_SIZE block of `chunk`, packed
 * little-endian: enough to place a change within 256 bytes when only the baseline's digests are known.
 */
export function blockDigests(chunk: Buffer): Buffer {
  const src = chunk.byteOffset % 4 === 0 && chunk.length % 4 === 0 ? chunk : padded(chunk);
  const words = new Uint32Array(src.buffer, src.byteOffset, src.length / 4);
  const perBlock = BLOCK_SIZE / 4;
  const n = Math.ceil(chunk.length / BLOCK_SIZE);
  const out = Buffer.alloc(n * 4);
  for (let blk = 0; blk < n; blk++) {
    let h = 0x811c9dc5;
    const end = Math.min((blk + 1) * perBlock, words.length);
    for (let w = blk * perBlock; w < end; w++) h = Math.imul(h ^ words[w]!, 0x01000193);
    out.writeUInt32LE(h >>> 0, blk * 4);
  }
  return out;
}

function padded(b: Buffer): Buffer {
  const out = Buffer.alloc(Math.ceil(b.length / 4) * 4);
  b.copy(out);
  return out;
}

// ---- per-kernel snapshot state -------------------------------------------------------------------------

/** What a chunk looked like when it was last judged (its raw bytes have not changed since). */
interface ChunkVerdict {
  changed: boolean;
  /** Sites starting in this chunk's window that are in no accepted state. */
  bad: number[];
  /** Normalised bytes of a changed chunk, to diff against the pristine copy. */
  normalized?: Buffer;
  sha256?: string;
}

interface RangeState {
  range: ImageRange;
  len: number;
  /** The raw bytes as last read: a sweep re-judges only the chunks whose raw bytes moved. */
  lastRaw: Buffer;
  /** Normalised bytes known to equal the baseline, chunk by chunk (`verified`). */
  pristine: Buffer;
  verified: Uint8Array;
  verdicts: (ChunkVerdict | undefined)[];
  masks: [number, number][];
  /** Kernel text only: its run-time patch sites, and each site's raw bytes when its chunk was verified. */
  sites?: PatchSites;
  siteRaw?: Uint8Array;
  unreadablePages: number;
}

const states = new WeakMap<object, RangeState[]>();

function rangeStates(k: IntegrityKernel): RangeState[] {
  let s = states.get(k);
  if (!s) {
    s = imageRanges(k).map((range) => {
      const len = Number(range.end - range.start);
      const chunks = Math.ceil(len / CHUNK_SIZE);
      return {
        range,
        len,
        lastRaw: Buffer.alloc(len),
        pristine: Buffer.alloc(len),
        verified: new Uint8Array(chunks),
        verdicts: new Array<ChunkVerdict | undefined>(chunks).fill(undefined),
        masks: range.name === 'rodata' ? rodataMasks(k, range) : [],
        ...(range.name === 'text' ? textSites(k) : {}),
        unreadablePages: 0,
      };
    });
    states.set(k, s);
  }
  return s;
}

function textSites(k: KernelAccess): { sites: PatchSites; siteRaw: Uint8Array } {
  const sites = patchSites(k);
  return { sites, siteRaw: new Uint8Array(sites.offsets.length * SITE_BYTES) };
}

/** Raw bytes kept per patch site: the longest form (5) is what the kernel writes. */
const SITE_BYTES = 5;

/** Record chunk `c`'s raw site bytes (from rs.lastRaw) as the pristine ones. */
function keepSiteRaw(rs: RangeState, c: number): void {
  if (!rs.sites || !rs.siteRaw) return;
  const a = c * CHUNK_SIZE;
  const b = Math.min(a + CHUNK_SIZE, rs.len);
  const offs = rs.sites.offsets;
  for (let i = lowerBound(offs, a); i < offs.length && offs[i]! < b; i++) {
    const o = offs[i]!;
    rs.siteRaw.set(rs.lastRaw.subarray(o, Math.min(o + SITE_BYTES, rs.len)), i * SITE_BYTES);
  }
}

/** The pristine raw bytes of [start, end): the normalised copy with the sites' recorded bytes put back. */
function pristineRaw(rs: RangeState, start: number, end: number): Buffer {
  const out = Buffer.from(rs.pristine.subarray(start, end));
  if (!rs.sites || !rs.siteRaw) return out;
  const offs = rs.sites.offsets;
  for (let i = lowerBound(offs, Math.max(0, start - SITE_BYTES)); i < offs.length && offs[i]! < end; i++) {
    const o = offs[i]!;
    for (let j = 0; j < SITE_BYTES; j++) {
      const p = o + j;
      // Only bytes the normalisation zeroed: a 2-byte site's next bytes are ordinary code.
      if (p >= start && p < end && out[p - start] === 0) out[p - start] = rs.siteRaw[i * SITE_BYTES + j]!;
    }
  }
  return out;
}

/** Fill `buf` with the range's raw bytes from range offset `at`; unmapped pages read as zeros, counted. */
function readRaw(
  k: KernelAccess,
  rs: { range: ImageRange; unreadablePages: number },
  buf: Buffer,
  at: number,
): void {
  for (let i = 0; i < buf.length;) {
    const va = rs.range.start + BigInt(at + i);
    const n = Math.min(CHUNK_SIZE - Number(va & BigInt(CHUNK_SIZE - 1)), buf.length - i);
    const piece = buf.subarray(i, i + n);
    try {
      k.space.readInto(va, piece);
    } catch (e) {
      if (!isVigilError(e)) throw e;
      for (let p = i; p < i + n;) {
        const pv = rs.range.start + BigInt(at + p);
        const step = Math.min(0x1000 - Number(pv & 0xfffn), i + n - p);
        const page = k.space.tryRead(pv, step);
        if (page) page.copy(buf, p);
        else {
          buf.fill(0, p, p + step);
          rs.unreadablePages++;
        }
        p += step;
      }
    }
    i += n;
  }
}

interface TextSnapshot {
  range: ImageRange;
  bytes: Buffer;
  unreadablePages: number;
  epoch: number | undefined;
}

const snapshots = new WeakMap<object, TextSnapshot>();

/**
 * The raw bytes of kernel text, read once per cache epoch (one sweep on a live guest, forever on a dump)
 * and shared by the policies that look at it (memory-access, kernel-hooks).
 */
export function textSnapshot(k: IntegrityKernel): TextSnapshot {
  const epoch = k.epoch?.value;
  let snap = snapshots.get(k);
  if (snap && epoch !== undefined && snap.epoch === epoch) return snap;
  if (!snap) {
    const range = imageRanges(k).find((r) => r.name === 'text')!;
    snap = { range, bytes: Buffer.alloc(Number(range.end - range.start)), unreadablePages: 0, epoch };
    snapshots.set(k, snap);
  }
  const holder = { range: snap.range, unreadablePages: 0 };
  readRaw(k, holder, snap.bytes, 0);
  snap.unreadablePages = holder.unreadablePages;
  snap.epoch = epoch;
  return snap;
}

/** Margin around a chunk so that every patch site reaching into it is judged whole. */
const SITE_MARGIN = 8;
let scratchWindow = Buffer.alloc(0);

/** Chunk `c` of rs.lastRaw, masked and normalised (sites starting in its window judged). */
function normalizedChunk(rs: RangeState, c: number, targets: CallTargets): { norm: Buffer; bad: number[] } {
  const a = c * CHUNK_SIZE;
  const b = Math.min(a + CHUNK_SIZE, rs.len);
  const lo = Math.max(0, a - SITE_MARGIN);
  const hi = Math.min(rs.len, b + SITE_MARGIN);
  // One scratch window reused for every chunk: callers copy out what they keep.
  if (scratchWindow.length < hi - lo) scratchWindow = Buffer.alloc(CHUNK_SIZE + 2 * SITE_MARGIN);
  const tmp = scratchWindow.subarray(0, hi - lo);
  rs.lastRaw.copy(tmp, 0, lo, hi);
  for (const [x, y] of rs.masks)
    if (y > lo && x < hi) tmp.fill(0, Math.max(x, lo) - lo, Math.min(y, hi) - lo);
  const bad = rs.sites
    ? normalizeText(tmp, rs.sites, targets, { base: lo, from: a - SITE_MARGIN, to: b })
    : [];
  return { norm: tmp.subarray(a - lo, b - lo), bad };
}

/** Judge chunk `c` from rs.lastRaw: equal to the pristine copy, or to the baseline's hash? */
function judgeChunk(
  rs: RangeState,
  c: number,
  rb: RangeBaseline | undefined,
  targets: CallTargets,
): ChunkVerdict {
  const a = c * CHUNK_SIZE;
  const { norm, bad } = normalizedChunk(rs, c, targets);
  if (rs.verified[c]) {
    const changed = !norm.equals(rs.pristine.subarray(a, a + norm.length));
    return changed ? { changed, bad, normalized: Buffer.from(norm) } : { changed, bad };
  }
  const sha = sha256(norm);
  if (rb === undefined || rb.sha256[c] === sha) {
    // Equal to the baseline (or, with no usable baseline for this range, the first thing this run saw).
    norm.copy(rs.pristine, a);
    keepSiteRaw(rs, c);
    rs.verified[c] = 1;
    return { changed: false, bad, sha256: sha };
  }
  return { changed: true, bad, normalized: Buffer.from(norm), sha256: sha };
}

/**
 * Read the range; chunks whose raw bytes moved since the last sweep (or never judged) are judged again.
 * On a live guest a chunk found changed is read and judged once more: the kernel may be mid-patch.
 */
function sweepRange(
  k: IntegrityKernel,
  rs: RangeState,
  rb: RangeBaseline | undefined,
  targets: CallTargets,
): void {
  const scratch = Buffer.allocUnsafe(CHUNK_SIZE);
  const dirty: number[] = [];
  const snap = rs.range.name === 'text' ? textSnapshot(k) : undefined;
  rs.unreadablePages = snap?.unreadablePages ?? 0;
  for (let c = 0; c < rs.verdicts.length; c++) {
    const a = c * CHUNK_SIZE;
    const n = Math.min(CHUNK_SIZE, rs.len - a);
    const piece = snap ? snap.bytes.subarray(a, a + n) : scratch.subarray(0, n);
    if (!snap) readRaw(k, rs, piece, a);
    const last = rs.lastRaw.subarray(a, a + piece.length);
    const v = rs.verdicts[c];
    const same = v !== undefined && piece.equals(last);
    if (!same) piece.copy(last);
    // A chunk that was clean and has not moved keeps its verdict. One with a change or a doubtful site is
    // judged again: its verdict also depends on ftrace's state and the module list, which move on their own.
    if (same && !v.changed && v.bad.length === 0) continue;
    dirty.push(c);
  }
  // Judge after everything was read, so that a site straddling two chunks is judged on current bytes.
  const again: number[] = [];
  for (const c of dirty) {
    const v = judgeChunk(rs, c, rb, targets);
    rs.verdicts[c] = v;
    if (v.changed) again.push(c);
  }
  if (again.length > 0 && k.epoch && !k.epoch.frozen) {
    for (const c of again) {
      const a = c * CHUNK_SIZE;
      const lo = Math.max(0, a - SITE_MARGIN);
      readRaw(k, rs, rs.lastRaw.subarray(lo, Math.min(rs.len, a + CHUNK_SIZE + SITE_MARGIN)), lo);
    }
    for (const c of again) rs.verdicts[c] = judgeChunk(rs, c, rb, targets);
  }
}

// ---- the baseline -----------------------------------------------------------------------------------

interface RangeBaseline {
  start: string;
  end: string;
  chunk: number;
  block: number;
  sha256: string[];
  blocks: string[];
}

function rangeBaselines(b: BaselineAccess): Record<string, RangeBaseline> | undefined {
  const v = b.get('ranges');
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const out: Record<string, RangeBaseline> = {};
  for (const [name, r] of Object.entries(v)) {
    if (!r || typeof r !== 'object' || Array.isArray(r)) continue;
    const x = r as Record<string, JsonValue>;
    if (
      typeof x.start === 'string' &&
      typeof x.end === 'string' &&
      x.chunk === CHUNK_SIZE &&
      x.block === BLOCK_SIZE &&
      Array.isArray(x.sha256) &&
      x.sha256.every((s) => typeof s === 'string') &&
      Array.isArray(x.blocks) &&
      x.blocks.every((s) => typeof s === 'string')
    ) {
      out[name] = x as unknown as RangeBaseline;
    }
  }
  return out;
}

const matchesRange = (rb: RangeBaseline | undefined, r: ImageRange): rb is RangeBaseline =>
  rb !== undefined && safeBig(rb.start) === r.start && safeBig(rb.end) === r.end;

function safeBig(s: unknown): bigint | undefined {
  if (typeof s !== 'string' || !/^(0x[0-9a-f]{1,16}|\d{1,20})$/i.test(s)) return undefined;
  return BigInt(s);
}

// ---- syscall names --------------------------------------------------------------------------------

const syscallNameCache = new WeakMap<object, Map<number, string>>();

/** x86-64 system call names by number, from the kernel's syscalls_metadata (CONFIG_FTRACE_SYSCALLS). */
export function syscallNames(k: KernelAccess, count: number): Map<number, string> {
  const hit = syscallNameCache.get(k);
  if (hit) return hit;
  const out = new Map<number, string>();
  syscallNameCache.set(k, out);
  const sym = k.symbols.address('syscalls_metadata');
  const arr = sym !== undefined ? k.readPointer(sym) : undefined;
  if (!arr || k.types.find('syscall_metadata') === undefined) return out;
  const n = Math.min(count, MAX_SYSCALLS);
  const ptrs = k.space.tryRead(arr, n * 8);
  if (!ptrs) return out;
  const nameOff = BigInt(k.types.offsetof('syscall_metadata', 'name'));
  for (let nr = 0; nr < n; nr++) {
    const meta = ptrs.readBigUInt64LE(nr * 8);
    if (meta === 0n) continue;
    const namePtr = k.readPointer(meta + nameOff);
    const raw = namePtr ? k.space.tryRead(namePtr, 64) : undefined;
    if (!raw) continue;
    const name = raw.toString('latin1', 0, Math.max(0, raw.indexOf(0)));
    if (/^sys_[a-z0-9_]{1,48}$/.test(name)) out.set(nr, name.slice(4));
  }
  return out;
}

/** Names a syscall table entry may carry: the arch wrappers, __do_sys_ (zero-argument calls), ni_syscall. */
const SYSCALL_FN_RE =
  /^(__x64_sys_|__ia32_sys_|__x32_compat_sys_|__ia32_compat_sys_|__x64_compat_sys_|__do_sys_|__se_sys_)\w+$|^(__x64_)?sys_ni_syscall$/;

/** True when `va` is the entry point of a system call function in kernel text. */
export function isSyscallFunction(k: KernelAccess, va: bigint, text: ImageRange): boolean {
  if (va < text.start || va >= text.end) return false;
  let n = 0;
  for (const s of k.symbols.range(va, va + 1n)) {
    if (SYSCALL_FN_RE.test(s.name)) return true;
    if (++n > 64) break;
  }
  return false;
}

// ---- findings --------------------------------------------------------------------------------------

const TECHNIQUE = 'T1014';
const hexBytes = (b: Buffer): string => b.toString('hex');

interface Described {
  text: string;
  evidence: Record<string, unknown>;
  outside: boolean;
}

/** "0xffff… (func+0x10)" or "0xffff… in module vk_x" or "0xffff… (unknown memory)" with evidence. */
function describeTarget(attr: CodeAttributor, va: bigint): Described {
  const d = describeCode(attr, va);
  return { text: d.text, evidence: d.evidence, outside: d.attribution.where !== 'kernel' };
}

interface ChangeGroup {
  start: number;
  end: number;
  exact: boolean;
}

/** Byte ranges where `a` and `b` differ, merged across gaps of at most MERGE_GAP. */
export function diffGroups(a: Buffer, b: Buffer, from: number, to: number): ChangeGroup[] {
  const out: ChangeGroup[] = [];
  for (let i = from; i < to; i++) {
    if (a[i] === b[i]) continue;
    const last = out.at(-1);
    if (last && i - last.end <= MERGE_GAP) last.end = i + 1;
    else out.push({ start: i, end: i + 1, exact: true });
  }
  return out;
}

/** Blocks of a chunk whose digests differ from the baseline's, merged when adjacent. */
function blockGroups(chunk: Buffer, chunkOff: number, baselineBlocks: string | undefined): ChangeGroup[] {
  const now = blockDigests(chunk);
  const then = baselineBlocks !== undefined ? Buffer.from(baselineBlocks, 'base64') : undefined;
  const out: ChangeGroup[] = [];
  for (let i = 0; i * 4 < now.length; i++) {
    if (then && then.length === now.length && then.readUInt32LE(i * 4) === now.readUInt32LE(i * 4)) continue;
    const start = chunkOff + i * BLOCK_SIZE;
    const end = Math.min(start + BLOCK_SIZE, chunkOff + chunk.length);
    const last = out.at(-1);
    if (last && last.end === start) last.end = end;
    else out.push({ start, end, exact: false });
  }
  // A chunk whose hash changed but whose block digests all match (a 32-bit collision): the whole chunk.
  return out.length > 0 ? out : [{ start: chunkOff, end: chunkOff + chunk.length, exact: false }];
}

interface RangeReport {
  findings: Finding[];
  changedChunks: number;
  badSites: number;
}

function rangeFindings(
  k: IntegrityKernel,
  rs: RangeState,
  rb: RangeBaseline | undefined,
  attr: CodeAttributor,
): RangeReport {
  const { range, sites } = rs;
  const changed: number[] = [];
  rs.verdicts.forEach((v, c) => v?.changed && changed.push(c));
  const groups: { g: ChangeGroup; chunk: number }[] = [];
  for (const c of changed) {
    const v = rs.verdicts[c]!;
    const a = c * CHUNK_SIZE;
    const norm = v.normalized ?? Buffer.alloc(0);
    const gs = rs.verified[c]
      ? diffGroups(rs.pristine.subarray(a, a + norm.length), norm, 0, norm.length).map((g) => ({
          ...g,
          start: g.start + a,
          end: g.end + a,
        }))
      : blockGroups(norm, a, rb?.blocks[c]);
    for (const g of gs) groups.push({ g, chunk: c });
  }
  const nowSha = (c: number): string | undefined => rs.verdicts[c]?.sha256;
  const bad = sites ? [...new Set(rs.verdicts.flatMap((v) => v?.bad ?? []))].sort((x, y) => x - y) : [];
  const findings: Finding[] = [];
  const covered: [number, number][] = [];
  for (const [idx, { g, chunk }] of groups.entries()) {
    if (idx >= MAX_GROUPS) break;
    covered.push([g.start, g.end]);
    const va = range.start + BigInt(g.start);
    const cur = rawBytes(k, va, g.end - g.start);
    const where = k.symbolize(va);
    const evidence: Record<string, unknown> = {
      range: range.name,
      address: hex(va),
      ...(where !== undefined ? { symbol: where } : {}),
      length: g.end - g.start,
      localized: g.exact ? 'exact' : `${BLOCK_SIZE}-byte block (baseline learned in another run)`,
      new: hexBytes(cur.subarray(0, SHOW_BYTES)),
      chunk: {
        index: chunk,
        start: hex(range.start + BigInt(chunk * CHUNK_SIZE)),
        size: CHUNK_SIZE,
        ...(rb?.sha256[chunk] !== undefined ? { baselineSha256: rb.sha256[chunk] } : {}),
        ...(nowSha(chunk) !== undefined ? { sha256: nowSha(chunk) } : {}),
      },
    };
    if (g.exact) evidence.old = hexBytes(pristineRaw(rs, g.start, Math.min(g.end, g.start + SHOW_BYTES)));
    if (g.end - g.start > SHOW_BYTES) evidence.truncated = true;
    let severity: Severity = 'high';
    let how = '';
    // Only an exact change starts at the changed instruction; a block's start is just where the block starts.
    if (sites && g.exact) {
      const site = siteIn(sites, g.start, g.end);
      if (site !== undefined) {
        const kind = SITE_KINDS[sites.kinds[site]!]!;
        evidence.site = {
          kind,
          expected: SITE_FORMS[kind],
          address: hex(range.start + BigInt(sites.offsets[site]!)),
        };
      }
      const br = range.name === 'text' ? decodeBranch(cur, 0, va, k.readPointer) : undefined;
      if (br) {
        evidence.instruction = br.kind;
        if (br.destination !== undefined) {
          const d = describeTarget(attr, br.destination);
          evidence.destination = d.evidence;
          how = ` (${br.kind} ${d.text})`;
          if (d.outside) severity = 'critical';
        }
      }
    }
    // A change placed only by its block: the sites in it that no kernel mechanism wrote say where exactly.
    const inBlock =
      !g.exact && sites ? bad.filter((i) => sites.offsets[i]! >= g.start && sites.offsets[i]! < g.end) : [];
    const described = inBlock.slice(0, 8).map((i) => describeSite(k, attr, sites!, i, range.start));
    if (!g.exact && range.name === 'text') {
      evidence.functions = [...k.symbols.range(va, range.start + BigInt(g.end))]
        .filter((x) => x.type === 'T' || x.type === 't')
        .slice(0, 8)
        .map((x) => x.name);
    }
    if (described.length > 0) {
      evidence.sites = described.map((d) => d.evidence);
      if (described.some((d) => d.severity === 'critical')) severity = 'critical';
    }
    const what = range.name === 'text' ? 'kernel text' : 'kernel read-only data';
    const at = `${where ?? hex(va)}${where !== undefined ? ` (${hex(va)})` : ''}`;
    const bytes = g.exact
      ? `: ${evidence.old as string} → ${evidence.new as string}${evidence.truncated ? '…' : ''}`
      : ` within ${g.end - g.start} bytes` + (described[0] ? `: ${described[0].text}` : '');
    findings.push({
      key: `${range.name}:${hex(va)}`,
      severity,
      technique: TECHNIQUE,
      summary: `${what} changed at ${at}${bytes}${how}`,
      evidence,
    });
  }
  if (groups.length > MAX_GROUPS && findings.length > 0) {
    findings.at(-1)!.evidence.moreChanges = groups.length - MAX_GROUPS;
  }

  // Sites in a state no kernel mechanism produces, not already part of a reported change.
  if (sites) {
    for (const i of bad.slice(0, MAX_GROUPS)) {
      const o = sites.offsets[i]!;
      if (covered.some(([a, b]) => o >= a && o < b)) continue;
      const d = describeSite(k, attr, sites, i, range.start);
      const kind = SITE_KINDS[sites.kinds[i]!]!;
      findings.push({
        key: `site:${d.evidence.address as string}`,
        severity: d.severity,
        technique: TECHNIQUE,
        summary: `kernel text at ${d.text}; the kernel only writes ${SITE_FORMS[kind]} there`,
        evidence: { range: range.name, ...d.evidence },
      });
    }
  }
  return { findings, changedChunks: changed.length, badSites: bad.length };
}

/** A patch site in no accepted state, for evidence: where, what kind, its bytes, where they jump. */
function describeSite(
  k: KernelAccess,
  attr: CodeAttributor,
  sites: PatchSites,
  i: number,
  textStart: bigint,
): { evidence: Record<string, unknown>; text: string; severity: Severity } {
  const va = textStart + BigInt(sites.offsets[i]!);
  const kind = SITE_KINDS[sites.kinds[i]!]!;
  const cur = rawBytes(k, va, 16);
  const where = k.symbolize(va) ?? hex(va);
  const br = decodeBranch(cur, 0, va, k.readPointer);
  const evidence: Record<string, unknown> = {
    address: hex(va),
    symbol: where,
    site: { kind, expected: SITE_FORMS[kind] },
    bytes: hexBytes(cur.subarray(0, 8)),
  };
  let how = '';
  let severity: Severity = 'high';
  if (br) {
    evidence.instruction = br.kind;
    if (br.destination !== undefined) {
      const d = describeTarget(attr, br.destination);
      evidence.destination = d.evidence;
      how = `: ${br.kind} ${d.text}`;
      if (d.outside) severity = 'critical';
    }
  }
  return {
    evidence,
    severity,
    text: `${where} (${hex(va)}), a ${kind} site, holds ${hexBytes(cur.subarray(0, 5))}${how}`,
  };
}

/** The first site whose offset is in [a, b), or undefined. */
function siteIn(sites: PatchSites, a: number, b: number): number | undefined {
  const i = lowerBound(sites.offsets, Math.max(0, a - 4));
  for (let j = i; j < sites.offsets.length && sites.offsets[j]! < b; j++) {
    if (sites.offsets[j]! + 5 > a) return j;
  }
  return undefined;
}

/** Raw (un-normalised) kernel bytes for evidence; zeros where unmapped. */
function rawBytes(k: KernelAccess, va: bigint, n: number): Buffer {
  return k.space.tryRead(va, Math.min(n, 4096)) ?? Buffer.alloc(Math.min(n, 4096));
}

// ---- system call tables ------------------------------------------------------------------------------

type TableBaseline = Record<string, string[]>;

function tableBaseline(b: BaselineAccess): TableBaseline | undefined {
  const v = b.get('syscalls');
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const out: TableBaseline = {};
  for (const [name, list] of Object.entries(v)) {
    if (Array.isArray(list) && list.every((x) => typeof x === 'string')) out[name] = list as string[];
  }
  return out;
}

function syscallFindings(
  k: KernelAccess,
  tables: readonly SyscallTable[],
  base: TableBaseline | undefined,
  text: ImageRange,
  attr: CodeAttributor,
): Finding[] {
  const out: Finding[] = [];
  for (const t of tables) {
    const names = t.name === 'sys_call_table' ? syscallNames(k, t.entries.length) : new Map<number, string>();
    const then = base?.[t.name];
    if (then && then.length !== t.entries.length) {
      out.push({
        key: `syscall-count:${t.name}`,
        severity: 'high',
        technique: TECHNIQUE,
        summary: `${t.name} has ${t.entries.length} entries; the baseline had ${then.length}`,
        evidence: {
          table: t.name,
          address: hex(t.address),
          entries: t.entries.length,
          baseline: then.length,
        },
      });
    }
    for (const e of t.entries) {
      const was = then ? safeBig(then[e.nr]) : undefined;
      const changed = was !== undefined && was !== e.address;
      const shapeOk = isSyscallFunction(k, e.address, text);
      if (!changed && shapeOk) continue;
      const name = names.get(e.nr);
      const label = `${t.name}[${e.nr}]${name ? ` (${name})` : ''}`;
      const now = describeTarget(attr, e.address);
      const evidence: Record<string, unknown> = {
        table: t.name,
        nr: e.nr,
        ...(name ? { syscall: name } : {}),
        slot: hex(t.address + BigInt(e.nr * 8)),
        now: now.evidence,
        syscallFunction: shapeOk,
      };
      let summary: string;
      if (changed) {
        const old = describeTarget(attr, was);
        evidence.baseline = old.evidence;
        summary = `${label} changed: ${old.text} → ${now.text}`;
      } else {
        summary = `${label} points to ${now.text}, not to a system call function in kernel text`;
      }
      out.push({
        key: `syscall:${t.name}:${e.nr}`,
        severity: 'critical',
        technique: TECHNIQUE,
        summary,
        evidence,
      });
    }
  }
  return out;
}

// ---- the IDT -----------------------------------------------------------------------------------------

interface IdtBaseline {
  base: string;
  gates: string[];
}

function idtBaseline(b: BaselineAccess): IdtBaseline | undefined {
  const v = b.get('idt');
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const x = v as Record<string, JsonValue>;
  if (typeof x.base !== 'string' || !Array.isArray(x.gates) || !x.gates.every((g) => typeof g === 'string')) {
    return undefined;
  }
  return { base: x.base, gates: x.gates as string[] };
}

/** Where a present gate may point: kernel text, or (reserved vectors on 6.1) the early handlers in init text. */
function gateShapeOk(attr: CodeAttributor, handler: bigint): boolean {
  const a = attr.attribute(handler);
  return (
    a.where === 'kernel' ||
    (a.where === 'kernel-init' && (a.symbol ?? '').startsWith('early_idt_handler_array'))
  );
}

function idtFindings(k: KernelAccess, base: IdtBaseline | undefined, attr: CodeAttributor): Finding[] {
  const va = k.symbols.address('idt_table');
  if (va === undefined) return [];
  const raw = k.space.read(va, IDT_ENTRIES * GATE_SIZE);
  const out: Finding[] = [];
  for (let v = 0; v < IDT_ENTRIES; v++) {
    const g = decodeGate(raw, v * GATE_SIZE);
    const nowHex = raw.toString('hex', v * GATE_SIZE, (v + 1) * GATE_SIZE);
    const thenHex = base?.gates[v];
    const changed = thenHex !== undefined && /^[0-9a-f]{32}$/.test(thenHex) && thenHex !== nowHex;
    const shapeOk = !g.present || gateShapeOk(attr, g.handler);
    if (!changed && shapeOk) continue;
    const now = describeTarget(attr, g.handler);
    const evidence: Record<string, unknown> = {
      vector: v,
      vectorHex: hex(BigInt(v)),
      gate: hex(va + BigInt(v * GATE_SIZE)),
      present: g.present,
      type: g.type,
      dpl: g.dpl,
      ist: g.ist,
      selector: hex(BigInt(g.selector)),
      handler: now.evidence,
      handlerInKernelText: shapeOk,
      raw: nowHex,
    };
    let summary: string;
    if (changed) {
      const was = decodeGate(Buffer.from(thenHex, 'hex'));
      const old = describeTarget(attr, was.handler);
      evidence.baseline = { raw: thenHex, handler: old.evidence, dpl: was.dpl, type: was.type };
      summary = `IDT vector ${hex(BigInt(v))} changed: ${old.text} → ${now.text}`;
    } else {
      summary = `IDT vector ${hex(BigInt(v))} points to ${now.text}, outside kernel text`;
    }
    out.push({ key: `idt:${v}`, severity: 'critical', technique: TECHNIQUE, summary, evidence });
  }
  // IDTR points at the CPU entry area's read-only alias: it must map idt_table's own page.
  const alias = k.space.translate(CEA_IDT);
  const real = k.space.translate(va & PAGE_MASK);
  if (alias !== undefined && real !== undefined && alias !== real) {
    const mirror = k.space.tryRead(CEA_IDT, IDT_ENTRIES * GATE_SIZE);
    const differs = mirror !== undefined && !mirror.equals(raw);
    out.push({
      key: 'idt-alias',
      severity: differs ? 'critical' : 'high',
      technique: TECHNIQUE,
      summary:
        `the IDT the CPU uses (CPU entry area ${hex(CEA_IDT)} → physical ${hex(alias)}) is not idt_table's ` +
        `page (${hex(real)})${differs ? ' and its gates differ' : ''}`,
      evidence: {
        alias: hex(CEA_IDT),
        aliasPhysical: hex(alias),
        idtTable: hex(va),
        idtTablePhysical: hex(real),
        differs,
      },
    });
  }
  return out;
}

// ---- watchpoints (event-driven) ---------------------------------------------------------------------

/** VmEvent name for a GDB-stub write-watchpoint hit on one of the watched kernel entries. */
export const WATCH_EVENT = 'kernel-watchpoint';

export interface WatchTarget {
  /** "sys_call_table[62]" or "idt[0x80]". */
  label: string;
  va: bigint;
  len: number;
  table?: string;
  nr?: number;
  vector?: number;
}

/** x86-64 numbers of the system calls rootkits hook first: kill (magic signals), getdents/getdents64. */
export const WATCHED_SYSCALLS: readonly { nr: number; name: string }[] = [
  { nr: 62, name: 'kill' },
  { nr: 217, name: 'getdents64' },
  { nr: 78, name: 'getdents' },
];
export const WATCHED_VECTOR = 0x80;

/**
 * The entries worth a watchpoint: sys_call_table[kill/getdents64/getdents] and the first 8 bytes of IDT
 * gate 0x80 (they hold the handler's low 16 bits, type and DPL). Four watchpoints of 8 bytes each: what
 * x86 debug registers allow under KVM (DR0-3); QEMU's TCG has no such limit but this keeps one list.
 */
export function criticalWatchTargets(k: KernelAccess): WatchTarget[] {
  const out: WatchTarget[] = [];
  const table = k.symbols.address('sys_call_table');
  if (table !== undefined) {
    for (const s of WATCHED_SYSCALLS) {
      out.push({
        label: `sys_call_table[${s.nr}] (${s.name})`,
        va: table + BigInt(s.nr * 8),
        len: 8,
        table: 'sys_call_table',
        nr: s.nr,
      });
    }
  }
  const idt = k.symbols.address('idt_table');
  if (idt !== undefined) {
    out.push({
      label: `idt[${hex(BigInt(WATCHED_VECTOR))}]`,
      va: idt + BigInt(WATCHED_VECTOR * GATE_SIZE),
      len: 8,
      vector: WATCHED_VECTOR,
    });
  }
  return out;
}

/** What armWatchpoints needs of a GDB client (GdbClient fits). */
export interface WatchpointClient {
  watch(va: bigint, len: number, kind: 'w'): Promise<DebugHandle>;
  continue(): Promise<void>;
  onStop(listener: (s: StopReply) => void): () => void;
  /** Run `fn` with the target stopped (the stub takes no commands while it runs), resuming afterwards. */
  whileStopped<T>(fn: () => Promise<T>): Promise<T>;
  readonly running: boolean;
}

export interface WatchpointArm {
  armed: WatchTarget[];
  failed: { target: WatchTarget; reason: string }[];
  /** One VmEvent per watchpoint hit on an armed target (the VM has been continued, unless held). */
  events: AsyncIterable<VmEvent>;
  /** Remove the watchpoints and end `events`. */
  disarm(): Promise<void>;
}

export interface ArmOptions {
  now?: () => number;
  queueSize?: number;
  /**
   * Evidence gathered at a hit while the vCPUs are still stopped there (the writer's registers, the value
   * just written), merged into the event's data. Runs inside `client.whileStopped`. A failure is recorded
   * in the event (`inspectError`) rather than losing the hit.
   */
  inspect?(stop: StopReply, target: WatchTarget): Promise<Record<string, unknown>>;
  /** True: leave the VM stopped at this hit (a pause response will follow); whoever holds it continues it. */
  hold?(ev: VmEvent): boolean;
  /** Continue a stopped target once the watchpoints are in (default true). */
  resume?: boolean;
}

/** The VmEvent for a stop reply that is a write-watchpoint hit on one of `targets`, else undefined. */
export function watchpointEvent(
  stop: StopReply,
  targets: readonly WatchTarget[],
  now: number,
  extra: Record<string, unknown> = {},
): VmEvent | undefined {
  const w = stop.watch;
  if (!w) return undefined;
  const t = targets.find((x) => w.address >= x.va && w.address < x.va + BigInt(x.len));
  if (!t) return undefined;
  return {
    source: 'gdb',
    name: WATCH_EVENT,
    time: now,
    data: {
      target: t.label,
      va: hex(t.va),
      address: hex(w.address),
      kind: w.kind,
      ...(stop.thread !== undefined ? { thread: stop.thread } : {}),
      ...(t.table !== undefined ? { table: t.table, nr: t.nr } : {}),
      ...(t.vector !== undefined ? { vector: t.vector } : {}),
      ...extra,
    },
  };
}

/**
 * Set write watchpoints on `targets` through a GDB stub and turn hits into VmEvents. Attaching stops a
 * QEMU guest: the VM is continued once the watchpoints are in, and again after every hit of ours (other
 * stops — an interrupt by a reader of registers, a QMP `stop` — are left to whoever caused them). A
 * watchpoint matches virtual addresses: a write through another mapping of the same page (text_poke's
 * temporary alias, which vigilkit uses) does not trigger it; the sweeps still see the change. The stub keeps
 * the watchpoints until it is told otherwise: disarm() or detach (GdbClient.close) before going away, or the
 * next hit leaves the VM stopped with no debugger to continue it.
 */
export async function armWatchpoints(
  client: WatchpointClient,
  targets: readonly WatchTarget[],
  options: ArmOptions = {},
): Promise<WatchpointArm> {
  const now = options.now ?? Date.now;
  const armed: WatchTarget[] = [];
  const handles: DebugHandle[] = [];
  const failed: { target: WatchTarget; reason: string }[] = [];
  const insert = async (): Promise<void> => {
    for (const t of targets) {
      try {
        handles.push(await client.watch(t.va, t.len, 'w'));
        armed.push(t);
      } catch (e) {
        if (!isVigilError(e)) throw e;
        failed.push({ target: t, reason: e.message });
      }
    }
  };
  // The stub takes commands only while the target is stopped (it is, right after attaching).
  if (client.running) await client.whileStopped(insert);
  else await insert();
  const queue = new BoundedQueue<VmEvent>(options.queueSize ?? 64);
  const release = (ev: VmEvent): Promise<void> =>
    options.hold?.(ev) ? Promise.resolve() : client.continue();
  // Hits with an inspection are handled one after the other, so that their events keep their order.
  let hits: Promise<void> = Promise.resolve();
  const inspected = async (stop: StopReply, t: WatchTarget): Promise<void> => {
    let extra: Record<string, unknown>;
    try {
      extra = await client.whileStopped(() => options.inspect!(stop, t));
    } catch (e) {
      extra = { inspectError: e instanceof Error ? e.message : String(e) };
    }
    const ev = watchpointEvent(stop, armed, now(), extra)!;
    queue.push(ev);
    await release(ev);
  };
  const off = client.onStop((stop) => {
    const ev = watchpointEvent(stop, armed, now());
    if (!ev) return;
    if (!options.inspect) {
      queue.push(ev);
      release(ev).catch((e: unknown) => queue.fail(e));
      return;
    }
    const t = armed.find((x) => x.label === ev.data.target)!;
    hits = hits.then(() => inspected(stop, t)).catch((e: unknown) => queue.fail(e));
  });
  if (!client.running && (options.resume ?? true)) await client.continue();
  return {
    armed,
    failed,
    events: queue,
    async disarm() {
      off();
      await hits;
      await client
        .whileStopped(async () => {
          for (const h of handles) await h.remove().catch(() => undefined);
        })
        .catch(() => undefined);
      queue.end();
    },
  };
}

/**
 * Who wrote, from the registers at a watchpoint hit (QEMU stops after the writing instruction: RIP is the
 * next one): the code (kernel symbol or module and offset) and, when the per-CPU `current_task` can be
 * read through GS base, the task. Read while the VM is still stopped at the hit, so that a module's init
 * code (freed once init returns) can still be named.
 */
export function describeWriter(k: Kernel, regs: { rip: bigint; gsBase?: bigint }): Record<string, unknown> {
  const code = describeTarget(new CodeAttributor(k), regs.rip);
  const out: Record<string, unknown> = { rip: hex(regs.rip), code: code.evidence, text: code.text };
  // x86-64 per-CPU symbols are offsets into each CPU's area; in kernel mode GS base is this CPU's area.
  const off = k.symbols.address('current_task');
  if (regs.gsBase !== undefined && regs.gsBase !== 0n && off !== undefined && off < 1n << 32n) {
    const ptr = k.readPointer(regs.gsBase + off);
    const task = ptr !== undefined ? readTask(k, ptr) : undefined;
    if (task) out.task = { pid: task.pid, tgid: task.tgid, comm: task.comm, address: hex(task.address) };
  }
  return out;
}

function watchFindings(ev: VmEvent, k: KernelAccess, b: BaselineAccess): Finding[] {
  const d = ev.data;
  const label = typeof d.target === 'string' ? d.target : 'a watched kernel entry';
  const attr = new CodeAttributor(k);
  const { writer, ...watch } = d;
  const evidence: Record<string, unknown> = { watch };
  let changed: boolean | undefined;
  let now = '';
  let by = '';
  if (typeof writer === 'object' && writer !== null) {
    // Described at the hit, while the VM was stopped there (see describeWriter).
    const w = writer as { text?: unknown; task?: { pid?: unknown; comm?: unknown } };
    evidence.writer = writer;
    const task =
      w.task && typeof w.task.comm === 'string' ? ` by ${w.task.comm} (pid ${String(w.task.pid)})` : '';
    if (typeof w.text === 'string') by = `, written from ${w.text}${task}`;
  }
  // The value read at the hit (little-endian bytes) is what was written; memory may have moved on since.
  const written =
    typeof d.value === 'string' && /^[0-9a-f]{16}$/.test(d.value)
      ? Buffer.from(d.value, 'hex').readBigUInt64LE(0)
      : undefined;
  if (typeof d.table === 'string' && typeof d.nr === 'number') {
    const table = k.symbols.address(d.table);
    const cur = written ?? (table !== undefined ? k.readPointer(table + BigInt(d.nr * 8)) : undefined);
    if (cur !== undefined) {
      const desc = describeTarget(attr, cur);
      evidence.now = desc.evidence;
      now = `: now ${desc.text}`;
      const was = safeBig(tableBaseline(b)?.[d.table]?.[d.nr]);
      if (was !== undefined) {
        changed = was !== cur;
        evidence.baseline = describeTarget(attr, was).evidence;
      }
    }
  } else if (typeof d.vector === 'number') {
    const idt = k.symbols.address('idt_table');
    const raw =
      idt !== undefined ? k.space.tryRead(idt + BigInt(d.vector * GATE_SIZE), GATE_SIZE) : undefined;
    if (raw) {
      const desc = describeTarget(attr, decodeGate(raw).handler);
      evidence.now = desc.evidence;
      now = `: handler now ${desc.text}`;
      const then = idtBaseline(b)?.gates[d.vector];
      if (then !== undefined) changed = then !== raw.toString('hex');
    }
  }
  const cpu = typeof d.thread === 'string' ? ` (vCPU thread ${d.thread})` : '';
  return [
    {
      key: `watch:${label}`,
      severity: changed === false ? 'high' : 'critical',
      technique: TECHNIQUE,
      summary: `write to ${label} caught by a watchpoint${cpu}${by}${now}${changed === false ? ' (same value as the baseline)' : ''}`,
      evidence: { ...evidence, ...(changed !== undefined ? { changed } : {}) },
    },
  ];
}

// ---- learn / poll ----------------------------------------------------------------------------------

function sweepTargets(k: KernelAccess, attr?: CodeAttributor): FtraceCallees {
  return ftraceTargets(k, listFtraceOps(k), attr);
}

function learnIntegrity(k: IntegrityKernel, b: BaselineAccess): void {
  const targets = sweepTargets(k);
  const ranges: Record<string, JsonValue> = {};
  for (const rs of rangeStates(k)) {
    rs.unreadablePages = 0;
    if (rs.range.name === 'text') {
      const snap = textSnapshot(k);
      snap.bytes.copy(rs.lastRaw);
      rs.unreadablePages = snap.unreadablePages;
    } else readRaw(k, rs, rs.lastRaw, 0);
    const sha: string[] = [];
    const blocks: string[] = [];
    for (let c = 0; c < rs.verdicts.length; c++) {
      const { norm, bad } = normalizedChunk(rs, c, targets);
      const digest = sha256(norm);
      sha.push(digest);
      blocks.push(blockDigests(norm).toString('base64'));
      norm.copy(rs.pristine, c * CHUNK_SIZE);
      keepSiteRaw(rs, c);
      rs.verified[c] = 1;
      rs.verdicts[c] = { changed: false, bad, sha256: digest };
    }
    ranges[rs.range.name] = {
      start: hex(rs.range.start),
      end: hex(rs.range.end),
      chunk: CHUNK_SIZE,
      block: BLOCK_SIZE,
      sha256: sha,
      blocks,
    };
    if (rs.unreadablePages > 0) {
      k.issues.add(
        'kernel-image',
        'unmapped',
        `${rs.unreadablePages} pages of kernel ${rs.range.name} unreadable`,
      );
    }
  }
  b.set('ranges', ranges);
  const tables: Record<string, JsonValue> = {};
  for (const t of listSyscallTables(k)) tables[t.name] = t.entries.map((e) => hex(e.address));
  b.set('syscalls', tables);
  const idt = k.symbols.address('idt_table');
  if (idt !== undefined) {
    const raw = k.space.read(idt, IDT_ENTRIES * GATE_SIZE);
    const gates: string[] = [];
    for (let v = 0; v < IDT_ENTRIES; v++) gates.push(raw.toString('hex', v * GATE_SIZE, (v + 1) * GATE_SIZE));
    b.set('idt', { base: hex(idt), gates });
  }
}

export interface IntegrityReport {
  findings: Finding[];
  /** Per range: bytes compared, chunks, chunks that differ from the baseline, patch sites in no accepted state. */
  ranges: { name: string; bytes: number; chunks: number; changed: number; badSites: number }[];
}

/** One integrity check of the kernel image, syscall tables and IDT against `b` (which may be empty). */
export function checkIntegrity(k: IntegrityKernel, b: BaselineAccess): IntegrityReport {
  const attr = new CodeAttributor(k);
  const targets = sweepTargets(k, attr);
  const rbs = rangeBaselines(b);
  const findings: Finding[] = [];
  const ranges: IntegrityReport['ranges'] = [];
  const states = rangeStates(k);
  for (const rs of states) {
    const rb = rbs?.[rs.range.name];
    const usable = matchesRange(rb, rs.range) && rb.sha256.length === rs.verdicts.length;
    if (!usable && b.exists && !rs.verified.every((v) => v === 1)) {
      k.issues.add(
        'memory-access',
        'malformed',
        `the baseline has no usable hashes of kernel ${rs.range.name}`,
      );
    }
    sweepRange(k, rs, usable ? rb : undefined, targets);
    const r = rangeFindings(k, rs, usable ? rb : undefined, attr);
    findings.push(...r.findings);
    ranges.push({
      name: rs.range.name,
      bytes: rs.len,
      chunks: rs.verdicts.length,
      changed: r.changedChunks,
      badSites: r.badSites,
    });
    if (rs.unreadablePages > 0) {
      k.issues.add(
        'kernel-image',
        'unmapped',
        `${rs.unreadablePages} pages of kernel ${rs.range.name} unreadable`,
      );
    }
  }
  const text = states.find((r) => r.range.name === 'text')!.range;
  findings.push(
    ...syscallFindings(k, listSyscallTables(k, { attributor: attr }), tableBaseline(b), text, attr),
  );
  findings.push(...idtFindings(k, idtBaseline(b), attr));
  return { findings, ranges };
}

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

export const memoryAccessPolicy = definePolicy<Kernel>({
  id: 'memory-access',
  title: 'Kernel memory integrity',
  description:
    'Kernel text and read-only data hashed per 64 KiB chunk against the first attach (run-time patch sites ' +
    'of jump labels, static calls and ftrace normalised), the system call table and the IDT entry by entry; ' +
    'changes named by address, symbol and bytes. Under vigil watch, GDB-stub write watchpoints on critical ' +
    'entries raise at once. ' +
    'The syscall entry MSRs (LSTAR, CSTAR, SYSENTER_EIP) of each vCPU against the kernel entry points, at most ' +
    'once a minute (a QEMU device-state snapshot: needs guest RAM in a shared memory backend).',
  technique: TECHNIQUE,
  severity: 'high',
  requires: ['kernel'],
  defaultIntervalMs: 10_000,
  eventNames: [WATCH_EVENT],
  learn(ctx, baseline) {
    const k = ctx.requireKernel();
    pollFresh(ctx, k, () => learnIntegrity(k, baseline));
  },
  poll(ctx) {
    const k = ctx.requireKernel();
    return withSyscallMsrFindings(ctx, k, pollFresh(ctx, k, () => checkIntegrity(k, ctx.baseline)).findings);
  },
  onEvent(ev, ctx) {
    if (ev.source !== 'gdb' || ev.name !== WATCH_EVENT) return [];
    const k = ctx.requireKernel();
    // The guest wrote since the last sweep: nothing cached before the hit may be trusted.
    if (!k.epoch.frozen) k.refresh();
    return watchFindings(ev, k, ctx.baseline);
  },
});
