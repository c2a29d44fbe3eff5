// Field paths, C-like: `mm`, `se.exec_start`, `numbers[0].nr`, `thread_pid->numbers[0].nr`.
// `.` steps into an embedded struct/union member (anonymous members are searched through), `[n]`
// indexes an array, `->` follows a pointer (only typed views can, since it needs guest memory).
import { VigilError } from '../../../util/errors.js';
import { sanitize } from '../../../util/sanitize.js';

export type PathStep =
  { readonly op: 'member'; readonly name: string } | { readonly op: 'index'; readonly index: number };

/** A path split at each `->`: segment k+1 starts in the type segment k's final pointer points to. */
export type ParsedPath = readonly (readonly PathStep[])[];

export const MAX_PATH_LENGTH = 512;
const MAX_INDEX = 0x7fffffff;
const cache = new Map<string, ParsedPath>();
const CACHE_LIMIT = 4096;

const bad = (path: string, why: string): VigilError =>
  new VigilError('os', 'usage', `bad field path "${sanitize(path, 80)}": ${why}`);

/** Parse a field path (cached: callers pass the same literals over and over). */
export function parsePath(path: string): ParsedPath {
  const hit = cache.get(path);
  if (hit) return hit;
  const parsed = parseUncached(path);
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(path, parsed);
  return parsed;
}

function parseUncached(path: string): ParsedPath {
  if (path.length === 0) throw bad(path, 'empty');
  if (path.length > MAX_PATH_LENGTH) throw bad(path, 'too long');
  const segments: PathStep[][] = [];
  let steps: PathStep[] = [];
  let i = 0;
  let expectName = true;
  while (i < path.length) {
    if (expectName) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(path.slice(i));
      if (!m) throw bad(path, `expected a member name at ${i}`);
      steps.push({ op: 'member', name: m[0] });
      i += m[0].length;
      expectName = false;
      continue;
    }
    const c = path[i];
    if (c === '.') {
      expectName = true;
      i++;
    } else if (c === '-' && path[i + 1] === '>') {
      segments.push(steps);
      steps = [];
      expectName = true;
      i += 2;
    } else if (c === '[') {
      const m = /^\[(\d{1,10})\]/.exec(path.slice(i));
      if (!m || Number(m[1]) > MAX_INDEX) throw bad(path, `bad index at ${i}`);
      steps.push({ op: 'index', index: Number(m[1]) });
      i += m[0].length;
    } else {
      throw bad(path, `unexpected "${sanitize(c ?? '', 4)}" at ${i}`);
    }
  }
  if (expectName) throw bad(path, 'ends without a member name');
  segments.push(steps);
  return segments;
}

/** Render steps back to text (for messages). */
export function formatSteps(steps: readonly PathStep[]): string {
  let s = '';
  for (const st of steps) s += st.op === 'member' ? (s ? '.' : '') + st.name : `[${st.index}]`;
  return s;
}
