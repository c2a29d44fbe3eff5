// The registered ftrace_ops (ftrace_ops_list): each tracer's callback, flags, trampoline and the functions it
// filters on. An ftrace hook is one of them, and their trampolines are where fentry calls may go.
import { isVigilError } from '../../../util/errors.js';
import { hex, type KernelAccess } from '../modules/access.js';
import { hlistEntries, WalkIssues } from '../walk.js';

export const MAX_FTRACE_OPS = 1024;
const MAX_FTRACE_HASH_BITS = 16;
const MAX_FILTERS_SHOWN = 64;

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
