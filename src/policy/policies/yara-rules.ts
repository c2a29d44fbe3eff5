// The YARA-X rule set of the `signature` policy: finding the shipped rules/default.yar, reading the user's
// rule files (options `rules`, `noDefaultRules`), and compiling them together once, with errors that name
// the file and line.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile, validate, type YaraX } from '@litko/yara-x';
import { VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';

export interface RuleOptions {
  /** User rule files, compiled together with the default set. */
  rules: string[];
  /** Leave rules/default.yar out (then `rules` must name at least one file). */
  noDefaultRules: boolean;
}

export interface RuleSource {
  /** File path (or a label) errors name. */
  name: string;
  text: string;
}

export interface CompiledRules {
  scanner: YaraX;
  sources: string[];
  /** sha256 of the sources, to tell rule sets apart. */
  digest: string;
}

/** The shipped rule file: `rules/default.yar` of the vigil tree this module belongs to. */
export function defaultRulesPath(): string {
  if (process.env.VIGIL_DEFAULT_RULES) return resolve(process.env.VIGIL_DEFAULT_RULES);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'rules', 'default.yar');
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new VigilError(
    'policy',
    'not-found',
    'cannot find rules/default.yar of the vigil installation (set VIGIL_DEFAULT_RULES)',
  );
}

/** "error[E025]: unknown pattern `$b`" and "line:5:48" out of a YARA-X diagnostic. */
function diagnostic(message: string): { text: string; line?: number; column?: number } {
  const lines = message.split('\n');
  const head = lines.find((l) => /error\[|warning\[/.test(l)) ?? lines[0] ?? message;
  const at = /-->\s*line:(\d+):(\d+)/.exec(message);
  const text = head.replace(/^.*?(error\[)/, '$1').trim();
  return at ? { text, line: Number(at[1]), column: Number(at[2]) } : { text };
}

/** Rule names a source declares, with their lines (for clashes between files). */
function declaredRules(text: string): Map<string, number> {
  const out = new Map<string, number>();
  text.split('\n').forEach((l, i) => {
    const m = /^\s*(?:(?:private|global)\s+)*rule\s+([A-Za-z_]\w*)/.exec(l);
    if (m && !out.has(m[1]!)) out.set(m[1]!, i + 1);
  });
  return out;
}

/**
 * Compile rule sources together. Each source is validated on its own first, so an error names its file
 * and line; a rule declared in two files names both.
 */
export function compileRules(sources: readonly RuleSource[]): CompiledRules {
  if (sources.length === 0) throw new VigilError('policy', 'usage', 'no YARA rules to compile');
  const owner = new Map<string, string>();
  for (const s of sources) {
    const r = validate(s.text);
    if (r.errors.length > 0) {
      const first = r.errors[0]!;
      const d = diagnostic(first.message);
      const line = d.line ?? first.line;
      const where = line !== undefined ? `:${line}${d.column !== undefined ? `:${d.column}` : ''}` : '';
      throw new VigilError(
        'policy',
        'usage',
        `YARA rules ${s.name}${where}: ${sanitize(d.text || first.code, 300)}`,
      );
    }
    for (const [rule, line] of declaredRules(s.text)) {
      const prev = owner.get(rule);
      if (prev !== undefined) {
        throw new VigilError(
          'policy',
          'usage',
          `YARA rule ${sanitize(rule, 128)} is declared twice: ${prev} and ${s.name}:${line}`,
        );
      }
      owner.set(rule, `${s.name}:${line}`);
    }
  }
  const combined = sources.map((s) => s.text).join('\n');
  let scanner: YaraX;
  try {
    scanner = compile(combined);
  } catch (e) {
    const d = diagnostic(e instanceof Error ? e.message : String(e));
    throw new VigilError(
      'policy',
      'usage',
      `YARA rules of ${sources.map((s) => s.name).join(', ')} do not compile together: ${sanitize(d.text, 300)}`,
    );
  }
  return {
    scanner,
    sources: sources.map((s) => s.name),
    digest: createHash('sha256').update(combined).digest('hex'),
  };
}

function readRuleFile(path: string): RuleSource {
  try {
    return { name: path, text: readFileSync(path, 'utf8') };
  } catch (e) {
    throw new VigilError('policy', 'not-found', `cannot read YARA rule file ${path}`, { cause: e });
  }
}

/** Compiled rule sets, by file list and content: rules compile once, not per sweep. */
const ruleCache = new Map<string, CompiledRules>();

/** The rule set an options object asks for (default set unless noDefaultRules, plus `rules`). */
export function loadRules(opts: RuleOptions): CompiledRules {
  const files = [...(opts.noDefaultRules ? [] : [defaultRulesPath()]), ...opts.rules.map((r) => resolve(r))];
  const sources = files.map(readRuleFile);
  const key = createHash('sha256');
  for (const s of sources) key.update(s.name).update('\0').update(s.text).update('\0');
  const k = key.digest('hex');
  let rules = ruleCache.get(k);
  if (!rules) {
    rules = compileRules(sources);
    if (ruleCache.size >= 8) ruleCache.clear();
    ruleCache.set(k, rules);
  }
  return rules;
}
