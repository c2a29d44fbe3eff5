// Changes found in kernel text and rodata, and patch sites in no state the kernel writes, turned into
// findings: exact offsets, symbol, old and new bytes, the branch written and where it lands.
import { hex, type KernelAccess } from '../../os/linux/modules/access.js';
import {
  decodeBranch,
  describeCode,
  firstSiteFrom,
  SITE_FORMS,
  SITE_KINDS,
  type CodeAttributor,
  type PatchSites,
} from '../../os/linux/tables/index.js';
import type { Finding, Severity } from '../types.js';
import { BLOCK_SIZE, CHUNK_SIZE, blockDigests, type RangeBaseline } from './memory-access-baseline.js';
import { pristineRaw, type IntegrityKernel, type RangeState } from './kernel-text-state.js';

const TECHNIQUE = 'T1014';
const hexBytes = (b: Buffer): string => b.toString('hex');
/** Change groups reported per range per sweep; the last finding says how many more there were. */
const MAX_GROUPS = 32;
/** Differing bytes closer than this belong to one change. */
const MERGE_GAP = 8;
/** Bytes of old/new shown per change. */
const SHOW_BYTES = 32;

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

/**
 * One range's findings after its sweep: each change (at most MAX_GROUPS), then each patch site in a state
 * no kernel mechanism writes that is not part of a reported change.
 */
export function rangeFindings(
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
          const d = describeCode(attr, br.destination);
          evidence.destination = d.evidence;
          how = ` (${br.kind} ${d.text})`;
          if (d.attribution.where !== 'kernel') severity = 'critical';
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
      const d = describeCode(attr, br.destination);
      evidence.destination = d.evidence;
      how = `: ${br.kind} ${d.text}`;
      if (d.attribution.where !== 'kernel') severity = 'critical';
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
  const i = firstSiteFrom(sites, Math.max(0, a - 4));
  for (let j = i; j < sites.offsets.length && sites.offsets[j]! < b; j++) {
    if (sites.offsets[j]! + 5 > a) return j;
  }
  return undefined;
}

/** Raw (un-normalised) kernel bytes for evidence; zeros where unmapped. */
function rawBytes(k: KernelAccess, va: bigint, n: number): Buffer {
  return k.space.tryRead(va, Math.min(n, 4096)) ?? Buffer.alloc(Math.min(n, 4096));
}
