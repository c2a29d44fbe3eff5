// memory-access's check of kernel text and rodata: learn per-chunk hashes into the baseline, then sweep
// each range against the pristine copy or those hashes and report what changed.
import { hex } from '../../os/linux/modules/access.js';
import {
  textSnapshot,
  readImageBytes,
  type CallTargets,
  type CodeAttributor,
  type ImageRange,
} from '../../os/linux/tables/index.js';
import type { BaselineAccess, JsonValue } from '../baseline.js';
import type { Finding } from '../types.js';
import {
  BLOCK_SIZE,
  CHUNK_SIZE,
  blockDigests,
  matchesRange,
  rangeBaselines,
  sha256,
} from './memory-access-baseline.js';
import { rangeFindings } from './kernel-text-changes.js';
import {
  keepSiteRaw,
  normalizedChunk,
  rangeStates,
  sweepRange,
  type IntegrityKernel,
} from './kernel-text-state.js';

/** Read text and rodata and store their per-chunk hashes and block digests as the baseline's `ranges`. */
export function learnImageRanges(k: IntegrityKernel, b: BaselineAccess, targets: CallTargets): void {
  const ranges: Record<string, JsonValue> = {};
  for (const rs of rangeStates(k)) {
    rs.unreadablePages = 0;
    if (rs.range.name === 'text') {
      const snap = textSnapshot(k);
      snap.bytes.copy(rs.lastRaw);
      rs.unreadablePages = snap.unreadablePages;
    } else readImageBytes(k, rs, rs.lastRaw, 0);
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
}

/** Per range: bytes compared, chunks, chunks that differ from the baseline, patch sites in no accepted state. */
export interface RangeSummary {
  name: string;
  bytes: number;
  chunks: number;
  changed: number;
  badSites: number;
}

/** Sweep text and rodata against `b` (which may be empty): the findings, a summary per range, and the text range. */
export function checkImageRanges(
  k: IntegrityKernel,
  b: BaselineAccess,
  targets: CallTargets,
  attr: CodeAttributor,
): { findings: Finding[]; ranges: RangeSummary[]; text: ImageRange } {
  const rbs = rangeBaselines(b);
  const findings: Finding[] = [];
  const ranges: RangeSummary[] = [];
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
  return { findings, ranges, text };
}
