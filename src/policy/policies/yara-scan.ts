// YARA-X over a gathered buffer: run the compiled rules and place each matched string at its virtual
// address through the gatherer's runs, sanitising what the guest controls (identifiers, meta, bytes).
import type { GatheredRun } from '../../os/linux/mm/gather.js';
import { sanitize } from '../../util/sanitize.js';
import type { CompiledRules } from './yara-rules.js';

export interface StringHit {
  identifier: string;
  /** Virtual address of the match: the run's address plus the offset into it. */
  va: bigint;
  length: number;
  /** The matched bytes (first 64), sanitised. */
  excerpt: string;
  region: number;
}

export interface RuleHit {
  rule: string;
  namespace: string;
  tags: string[];
  meta: Record<string, string | number | boolean>;
  strings: StringHit[];
  /** Matches found in all (more than `strings` holds when capped). */
  matchCount: number;
}

/** Run index holding buffer offset `off` (runs are in buffer order). */
function runAt(runs: readonly GatheredRun[], off: number): GatheredRun | undefined {
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = runs[mid]!;
    if (off < r.offset) hi = mid - 1;
    else if (off >= r.offset + r.length) lo = mid + 1;
    else return r;
  }
  return undefined;
}

function cleanMeta(meta: object): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(meta).slice(0, 32)) {
    if (typeof v === 'string') out[sanitize(k, 64)] = sanitize(v, 500);
    else if (typeof v === 'number' || typeof v === 'boolean') out[sanitize(k, 64)] = v;
  }
  return out;
}

/**
 * Scan gathered bytes and place each match at its virtual address. A match that straddles two runs
 * (pages that are not neighbours in the process) is not reported as a string: it exists only in the
 * buffer's layout.
 */
export function scanGathered(
  rules: CompiledRules,
  data: Buffer,
  runs: readonly GatheredRun[],
  maxStrings: number,
): RuleHit[] {
  if (data.length === 0) return [];
  const hits: RuleHit[] = [];
  for (const m of rules.scanner.scan(data)) {
    const strings: StringHit[] = [];
    let count = 0;
    for (const s of m.matches) {
      const run = runAt(runs, s.offset);
      if (!run || s.offset + s.length > run.offset + run.length) continue;
      count++;
      if (strings.length >= maxStrings) continue;
      const bytes = data.subarray(s.offset, s.offset + Math.min(s.length, 64));
      strings.push({
        identifier: sanitize(s.identifier, 64),
        va: run.va + BigInt(s.offset - run.offset),
        length: s.length,
        excerpt: sanitize(bytes.toString('latin1'), 80) + (s.length > 64 ? '…' : ''),
        region: run.region,
      });
    }
    hits.push({
      rule: sanitize(m.ruleIdentifier, 128),
      namespace: sanitize(m.namespace, 128),
      tags: m.tags.slice(0, 16).map((t) => sanitize(t, 64)),
      meta: cleanMeta(m.meta),
      strings,
      matchCount: count,
    });
  }
  return hits;
}
