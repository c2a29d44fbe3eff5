// The places in kernel text the kernel patches at run time: jump labels (__jump_table), static calls
// (.static_call_sites and the __SCT__ trampolines), ftrace's fentry records (ftrace_pages), ftrace_call and
// the BPF dispatcher. They are fixed at boot: found once per kernel object.
import { isVigilError } from '../../../util/errors.js';
import { hex, type KernelAccess } from '../modules/access.js';
import { imageRanges } from './image.js';

const MAX_JUMP_ENTRIES = 1 << 18;
const MAX_STATIC_CALL_SITES = 1 << 18;
const MAX_FTRACE_PAGES = 1 << 14;
const MAX_FTRACE_RECORDS = 1 << 20;
/** All patch sites together (the sort key packs an index of 21 bits). */
const MAX_SITES = (1 << 21) - 1;
const MAX_FTRACE_PAGE_RECORDS = 1 << 17;

const ENDBR64 = Buffer.from([0xf3, 0x0f, 0x1e, 0xfa]);

export type SiteKind =
  'jump-label' | 'static-call' | 'static-call-trampoline' | 'ftrace' | 'ftrace-caller' | 'bpf-dispatcher';
export const SITE_KINDS: readonly SiteKind[] = [
  'jump-label',
  'static-call',
  'static-call-trampoline',
  'ftrace',
  'ftrace-caller',
  'bpf-dispatcher',
];
type KindIndex = Readonly<Record<SiteKind, number>>;
/** Each kind's index in SITE_KINDS: what PatchSites.kinds holds. */
export const SITE_KIND_INDEX = Object.fromEntries(SITE_KINDS.map((k, i) => [k, i])) as KindIndex;

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
    kinds.push(SITE_KIND_INDEX[kind]);
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

/** Index of the first site at or after text offset `offset` (sites.offsets is sorted). */
export function firstSiteFrom(sites: PatchSites, offset: number): number {
  const a = sites.offsets;
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
