// kernel-hooks: where the kernel's control flow has been sent somewhere it should not go — the checks a
// modern rootkit scanner makes, each naming the module (or unknown memory) the hook leads to:
//  - system call table entries and IDT gates pointing outside kernel text (into a module, or memory that is
//    neither kernel nor module code);
//  - inline hooks: a function whose first instruction (after an endbr64 or its fentry nop) is a jmp/call
//    — rel32, jmp [rip+x], movabs+jmp reg, push+ret — leaving kernel text (static call trampolines, whose
//    job is to jump, are left to memory-access);
//  - ftrace hooks: registered ftrace_ops whose callback lies outside kernel text (IPMODIFY ones can
//    redirect the traced function), with the functions they filter on;
//  - kprobes whose handlers lie outside kernel text.
// Applies to dumps: it needs no baseline.
import type { Kernel } from '../../os/linux/kernel.js';
import { hex, type KernelAccess } from '../../os/linux/modules/access.js';
import {
  CodeAttributor,
  decodeBranch,
  describeCode,
  ftraceTargets,
  listFtraceOps,
  listSyscallTables,
  readIdt,
  syscallNames,
  textSnapshot,
  type Attribution,
  type CallTargets,
  type ImageRange,
} from '../../os/linux/tables/index.js';
import { hlistEntries, listHeadEntries } from '../../os/linux/walk.js';
import { isVigilError } from '../../util/errors.js';
import { definePolicy } from '../policy.js';
import type { Finding, Severity } from '../types.js';
import type { IntegrityKernel } from './kernel-text-state.js';
import { pollFresh } from './poll-fresh.js';

const TECHNIQUE = 'T1014';
/** Bound on functions looked at: a distribution kernel has ~47k in text. */
const MAX_FUNCTIONS = 1 << 18;
const MAX_INLINE_FINDINGS = 64;
/** kprobe_table has 1 << KPROBE_HASH_BITS (6) heads; read at most this many. */
const MAX_KPROBE_HEADS = 1024;
const MAX_KPROBES = 1 << 14;
const isEndbr64 = (b: Buffer, o: number): boolean =>
  b[o] === 0xf3 && b[o + 1] === 0x0f && b[o + 2] === 0x1e && b[o + 3] === 0xfa;
const isNop5 = (b: Buffer, o: number): boolean =>
  b[o] === 0x0f && b[o + 1] === 0x1f && b[o + 2] === 0x44 && b[o + 3] === 0 && b[o + 4] === 0;
/** Bytes of each function's start looked at: endbr64 (4) + fentry nop (5) + the longest hook form (13). */
const PROLOGUE = 24;

/** The code location of `va` for evidence, and whether it is outside kernel text. */
function locate(
  attr: CodeAttributor,
  va: bigint,
): { text: string; evidence: Record<string, unknown>; a: Attribution } {
  const d = describeCode(attr, va);
  return { text: d.text, evidence: d.evidence, a: d.attribution };
}

const severityFor = (a: Attribution): Severity =>
  a.where === 'module' || a.where === 'unknown' ? 'critical' : 'high';

// ---- system call tables and the IDT -------------------------------------------------------------------

export function tableHookFindings(k: KernelAccess, attr: CodeAttributor): Finding[] {
  const out: Finding[] = [];
  for (const t of listSyscallTables(k, { attributor: attr })) {
    const names = t.name === 'sys_call_table' ? syscallNames(k, t.entries.length) : new Map<number, string>();
    for (const e of t.entries) {
      if (e.where === 'kernel') continue;
      const name = names.get(e.nr);
      const to = locate(attr, e.address);
      out.push({
        key: `syscall:${t.name}:${e.nr}`,
        severity: severityFor(to.a),
        technique: TECHNIQUE,
        summary: `${t.name}[${e.nr}]${name ? ` (${name})` : ''} is hooked: it points to ${to.text}`,
        evidence: {
          table: t.name,
          nr: e.nr,
          ...(name ? { syscall: name } : {}),
          slot: hex(t.address + BigInt(e.nr * 8)),
          ...to.evidence,
        },
      });
    }
  }
  for (const g of readIdt(k, { attributor: attr })) {
    if (!g.present || g.where === 'kernel') continue;
    // Reserved vectors keep pointing at the early boot handlers in init text on 6.1.
    if (g.where === 'kernel-init' && (g.symbol ?? '').startsWith('early_idt_handler_array')) continue;
    const to = locate(attr, g.handler);
    out.push({
      key: `idt:${g.vector}`,
      severity: severityFor(to.a),
      technique: TECHNIQUE,
      summary: `IDT vector ${hex(BigInt(g.vector))} is hooked: its handler is ${to.text}`,
      evidence: {
        vector: g.vector,
        vectorHex: hex(BigInt(g.vector)),
        dpl: g.dpl,
        type: g.type,
        ist: g.ist,
        handler: hex(g.handler),
        ...to.evidence,
      },
    });
  }
  return out;
}

// ---- inline hooks ---------------------------------------------------------------------------------

const functionCache = new WeakMap<object, Uint32Array>();

/** Offsets from _stext of every function symbol ('T'/'t') in kernel text, once per kernel. */
export function textFunctions(k: KernelAccess, text: ImageRange): Uint32Array {
  const hit = functionCache.get(k.symbols);
  if (hit) return hit;
  const offs: number[] = [];
  for (const s of k.symbols.range(text.start, text.end)) {
    if (s.type !== 'T' && s.type !== 't') continue;
    // Static call trampolines jump by design; memory-access judges them.
    if (s.name.startsWith('__SCT__')) continue;
    const o = Number(s.address - text.start);
    if (offs.at(-1) !== o) offs.push(o);
    if (offs.length >= MAX_FUNCTIONS) break;
  }
  const out = Uint32Array.from(offs);
  functionCache.set(k.symbols, out);
  return out;
}

export interface InlineHook {
  function: string;
  address: bigint;
  /** Offset of the hook instruction from the function's start. */
  offset: number;
  instruction: string;
  bytes: string;
  destination?: bigint;
}

/**
 * Functions whose first real instruction transfers control out of kernel text. `text` holds the bytes of
 * kernel text (from _stext); `ftraceTargets` are where an fentry call may legitimately go.
 */
export function findInlineHooks(
  k: KernelAccess,
  textRange: ImageRange,
  text: Buffer,
  ftraceTargetSet: CallTargets,
): InlineHook[] {
  const out: InlineHook[] = [];
  // Jumps into the kernel's own image (init text freed after boot included) are the compiler's.
  const imageStart = k.symbols.address('_text') ?? textRange.start;
  const imageEnd = k.symbols.address('_end') ?? textRange.end;
  const fns = textFunctions(k, textRange);
  const len = text.length;
  for (let f = 0; f < fns.length; f++) {
    let o = fns[f]!;
    const limit = Math.min(len, f + 1 < fns.length ? fns[f + 1]! : len, o + PROLOGUE);
    const start = o;
    if (o + 4 <= limit && isEndbr64(text, o)) o += 4;
    const op = text[o];
    // Quick reject: the forms hooks use start with e9/e8/eb/ff/48/49/68/cc; prologues rarely do.
    if (op !== 0xe9 && op !== 0xe8 && op !== 0xff && op !== 0x48 && op !== 0x49 && op !== 0x68 && op !== 0x0f)
      continue;
    if (op === 0x0f) {
      if (o + 5 > limit || !isNop5(text, o)) continue;
      o += 5; // the fentry nop: a hook can also sit right after it
      const next = text[o];
      if (next !== 0xe9 && next !== 0xff && next !== 0x48 && next !== 0x49 && next !== 0x68) continue;
    }
    const va = textRange.start + BigInt(o);
    const br = decodeBranch(text.subarray(o, Math.min(len, o + 16)), 0, va, k.readPointer);
    if (!br || br.kind === 'int3' || br.kind === 'jmp-short') continue;
    if (br.destination !== undefined) {
      const d = br.destination;
      if (d >= imageStart && d < imageEnd) continue;
      if (br.kind === 'call' && ftraceTargetSet.has(d)) continue; // ftrace's own call at the fentry site
    } else if (br.kind === 'jmp-indirect') {
      continue; // unreadable pointer: nothing to attribute
    }
    if (br.kind === 'call' && o !== start && o !== start + 4) continue; // a call after the prologue is code
    const fnVa = textRange.start + BigInt(start);
    out.push({
      function: k.symbolize(fnVa) ?? hex(fnVa),
      address: va,
      offset: o - start,
      instruction: br.kind,
      bytes: text.toString('hex', o, Math.min(len, o + br.length)),
      ...(br.destination !== undefined ? { destination: br.destination } : {}),
    });
    if (out.length >= MAX_INLINE_FINDINGS) break;
  }
  return out;
}

function inlineFindings(hooks: readonly InlineHook[], attr: CodeAttributor): Finding[] {
  return hooks.map((h) => {
    const fn = h.function.replace(/\+0x0$/, '');
    const to = h.destination !== undefined ? locate(attr, h.destination) : undefined;
    return {
      key: `inline:${fn}`,
      severity: to ? severityFor(to.a) : 'high',
      technique: TECHNIQUE,
      summary:
        `inline hook in ${fn}: ${h.instruction} at +${hex(BigInt(h.offset))} (${h.bytes})` +
        (to ? ` to ${to.text}` : ''),
      evidence: {
        function: fn,
        address: hex(h.address),
        offset: h.offset,
        instruction: h.instruction,
        bytes: h.bytes,
        ...(to ? { destination: to.evidence } : {}),
      },
    };
  });
}

// ---- ftrace and kprobes ----------------------------------------------------------------------------

function ftraceFindings(k: KernelAccess, attr: CodeAttributor): Finding[] {
  const out: Finding[] = [];
  const outside = (op: { func: bigint }): boolean => attr.attribute(op.func).where !== 'kernel';
  for (const op of listFtraceOps(k, { filters: outside })) {
    const to = locate(attr, op.func);
    if (to.a.where === 'kernel') continue;
    const functions = op.filters.map((ip) => k.symbolize(ip) ?? hex(ip));
    const ipmodify = op.flagNames.includes('IPMODIFY');
    const owner = locate(attr, op.address);
    const targets =
      functions.length > 0 ? functions.map((f) => f.replace(/\+0x0$/, '')).join(', ') : 'every function';
    out.push({
      key: `ftrace:${hex(op.address)}`,
      severity: ipmodify || to.a.where !== 'module' ? 'critical' : 'high',
      technique: TECHNIQUE,
      summary:
        `ftrace hook on ${targets}: callback ${to.text}` +
        (ipmodify ? ' with IPMODIFY (it can redirect the traced function)' : ''),
      evidence: {
        ops: hex(op.address),
        ...(owner.a.module !== undefined ? { opsModule: owner.a.module } : {}),
        callback: to.evidence,
        ...(to.a.module !== undefined ? { module: to.a.module } : {}),
        flags: hex(op.flags),
        flagNames: op.flagNames,
        functions,
        filterCount: op.filterCount,
        ...(op.filtersReadable ? {} : { filtersReadable: false }),
        ...(op.trampoline !== 0n
          ? { trampoline: hex(op.trampoline), trampolineSize: Number(op.trampolineSize) }
          : {}),
      },
    });
  }
  return out;
}

export interface KprobeInfo {
  address: bigint;
  addr: bigint;
  handlers: { kind: 'pre_handler' | 'post_handler'; va: bigint }[];
}

/** Every kprobe in kprobe_table (aggregate probes expanded), bounded. */
export function listKprobes(k: KernelAccess): KprobeInfo[] {
  const table = k.symbols.address('kprobe_table');
  if (table === undefined || k.types.find('kprobe') === undefined) return [];
  let heads = 64;
  for (const s of k.symbols.range(table + 1n, table + BigInt(MAX_KPROBE_HEADS * 8) + 1n)) {
    heads = Math.max(1, Math.min(MAX_KPROBE_HEADS, Number((s.address - table) / 8n)));
    break;
  }
  const hlistOff = BigInt(k.types.offsetof('kprobe', 'hlist'));
  const listOff = BigInt(k.types.offsetof('kprobe', 'list'));
  const aggr = k.symbols.address('aggr_pre_handler');
  const out: KprobeInfo[] = [];
  const read = (kp: bigint): KprobeInfo => {
    const v = k.view('kprobe', kp);
    return {
      address: kp,
      addr: v.ptr('addr'),
      handlers: [
        { kind: 'pre_handler' as const, va: v.ptr('pre_handler') },
        { kind: 'post_handler' as const, va: v.ptr('post_handler') },
      ].filter((h) => h.va !== 0n),
    };
  };
  for (let i = 0; i < heads && out.length < MAX_KPROBES; i++) {
    for (const node of hlistEntries(k.readPointer, table + BigInt(i * 8), {
      walker: 'kprobes',
      max: MAX_KPROBES,
      issues: k.issues,
    })) {
      try {
        const kp = read(node - hlistOff);
        out.push(kp);
        if (aggr !== undefined && kp.handlers.some((h) => h.va === aggr)) {
          for (const child of listHeadEntries(k.readPointer, kp.address + listOff, {
            walker: 'kprobes.aggr',
            max: MAX_KPROBES,
            issues: k.issues,
          })) {
            out.push(read(child - listOff));
          }
        }
      } catch (e) {
        if (!isVigilError(e)) throw e;
        k.issues.add('kprobes', 'unmapped', `kprobe at ${hex(node - hlistOff)}: ${e.message}`);
      }
    }
  }
  return out;
}

function kprobeFindings(k: KernelAccess, attr: CodeAttributor): Finding[] {
  const out: Finding[] = [];
  for (const kp of listKprobes(k)) {
    for (const h of kp.handlers) {
      const to = locate(attr, h.va);
      if (to.a.where === 'kernel') continue;
      const at = k.symbolize(kp.addr) ?? hex(kp.addr);
      out.push({
        key: `kprobe:${hex(kp.address)}:${h.kind}`,
        severity: 'high',
        technique: TECHNIQUE,
        summary: `kprobe on ${at}: ${h.kind} ${to.text}`,
        evidence: {
          kprobe: hex(kp.address),
          probed: hex(kp.addr),
          probedSymbol: at,
          handlerKind: h.kind,
          handler: to.evidence,
          ...(to.a.module !== undefined ? { module: to.a.module } : {}),
        },
      });
    }
  }
  return out;
}

// ---- the policy --------------------------------------------------------------------------------------

export interface HookReport {
  findings: Finding[];
  functions: number;
  ms: Record<'tables' | 'inline' | 'ftrace' | 'kprobes', number>;
}

/** Every hook check once. */
export function findHooks(k: IntegrityKernel): HookReport {
  const attr = new CodeAttributor(k);
  const findings: Finding[] = [];
  const t0 = performance.now();
  findings.push(...tableHookFindings(k, attr));
  const t1 = performance.now();
  const snap = textSnapshot(k);
  const textRange = snap.range;
  const targets = ftraceTargets(k, listFtraceOps(k), attr);
  findings.push(...inlineFindings(findInlineHooks(k, textRange, snap.bytes, targets), attr));
  if (snap.unreadablePages > 0) {
    k.issues.add('kernel-hooks', 'unmapped', `${snap.unreadablePages} pages of kernel text unreadable`);
  }
  const t2 = performance.now();
  findings.push(...ftraceFindings(k, attr));
  const t3 = performance.now();
  findings.push(...kprobeFindings(k, attr));
  const t4 = performance.now();
  return {
    findings,
    functions: textFunctions(k, textRange).length,
    ms: { tables: t1 - t0, inline: t2 - t1, ftrace: t3 - t2, kprobes: t4 - t3 },
  };
}

export const kernelHooksPolicy = definePolicy<Kernel>({
  id: 'kernel-hooks',
  title: 'Kernel hooks',
  description:
    'System call table entries and IDT gates pointing outside kernel text, inline jmp/call hooks at function ' +
    'entry leaving kernel text, ftrace_ops and kprobes whose handlers live in module or unknown memory; ' +
    'each names the module the hook leads to.',
  technique: TECHNIQUE,
  severity: 'critical',
  requires: ['kernel'],
  defaultIntervalMs: 10_000,
  poll(ctx) {
    const k = ctx.requireKernel();
    return pollFresh(ctx, k, () => findHooks(k)).findings;
  },
});
