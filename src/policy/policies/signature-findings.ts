// A YARA rule hit as a `signature` finding: severity and ATT&CK technique from the rule's meta when vigil
// knows them, the summary text, and each matched string with its address and the map it lies in.
import { isSeverity } from '../policy.js';
import type { Finding, Severity } from '../types.js';
import { hex } from './process-facts.js';
import type { RuleHit } from './yara-scan.js';

const TECHNIQUE_RE = /^T\d{4}(\.\d{3})?$/;

/** Severity a rule asks for in its meta, when it is one vigil knows. */
function ruleSeverity(h: RuleHit, fallback: Severity): Severity {
  const s = h.meta.severity;
  return typeof s === 'string' && isSeverity(s.toLowerCase()) ? (s.toLowerCase() as Severity) : fallback;
}

/** The rule's name as keys and summaries show it: namespace:rule outside the default namespace. */
export function ruleName(h: RuleHit): string {
  return h.namespace && h.namespace !== 'default' ? `${h.namespace}:${h.rule}` : h.rule;
}

function stringEvidence(
  h: RuleHit,
  regionOf: (i: number) => Record<string, unknown>,
): Record<string, unknown>[] {
  return h.strings.map((s) => ({
    identifier: s.identifier,
    va: hex(s.va),
    length: s.length,
    excerpt: s.excerpt,
    vma: regionOf(s.region),
  }));
}

/** The finding for one rule hit `where` (a process, a module); `regionOf` describes a string's region. */
export function hitFinding(
  h: RuleHit,
  key: string,
  where: string,
  evidence: Record<string, unknown>,
  regionOf: (i: number) => Record<string, unknown>,
): Finding {
  const technique =
    typeof h.meta.technique === 'string' && TECHNIQUE_RE.test(h.meta.technique)
      ? h.meta.technique
      : undefined;
  const description = typeof h.meta.description === 'string' ? h.meta.description : undefined;
  return {
    key,
    severity: ruleSeverity(h, 'high'),
    summary: `YARA rule ${ruleName(h)} matched ${where}${description ? `: ${description}` : ''}`,
    ...(technique ? { technique } : {}),
    evidence: {
      ...evidence,
      rule: h.rule,
      ...(h.namespace !== 'default' ? { namespace: h.namespace } : {}),
      ...(h.tags.length ? { tags: h.tags } : {}),
      meta: h.meta,
      matches: h.matchCount,
      strings: stringEvidence(h, regionOf),
    },
  };
}
