// Kernel text made comparable across the kernel's own run-time patching: a patch site holding a form the
// kernel writes there (or text_poke_bp's transient int3) is zeroed; a site in any other state is named.
import type { CallTargets } from './ftrace-callees.js';
import { inModuleArea } from './image.js';
import { firstSiteFrom, SITE_KIND_INDEX as KIND, type PatchSites } from './patch-sites.js';

const isNop5 = (b: Buffer, o: number): boolean =>
  b[o] === 0x0f && b[o + 1] === 0x1f && b[o + 2] === 0x44 && b[o + 3] === 0 && b[o + 4] === 0;
const isRetInt3 = (b: Buffer, o: number): boolean =>
  b[o] === 0xc3 && b[o + 1] === 0xcc && b[o + 2] === 0xcc && b[o + 3] === 0xcc && b[o + 4] === 0xcc;
/** static_call's inline "return 0": cs cs cs xor %eax,%eax. */
const isXorRet0 = (b: Buffer, o: number): boolean =>
  b[o] === 0x2e && b[o + 1] === 0x2e && b[o + 2] === 0x2e && b[o + 3] === 0x31 && b[o + 4] === 0xc0;

const U64 = (1n << 64n) - 1n;

/** Context for judging a site: the text length and where fentry calls may go this sweep. */
interface SiteContext {
  textStart: bigint;
  textLen: number;
  ftraceTargets: CallTargets;
}

const inText = (c: SiteContext, o: number): boolean => o >= 0 && o < c.textLen;

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
  let s = firstSiteFrom(sites, from);
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
