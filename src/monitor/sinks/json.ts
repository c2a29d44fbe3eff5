// JSON for alert output. Evidence is `Record<string, unknown>` built by policies from guest memory: it may
// hold bigints (addresses), Buffers, Maps, cycles or absurd depth, any of which would make JSON.stringify
// throw or print junk. toJsonSafe turns it into plain JSON data; stringifyJson also escapes the characters
// JSON leaves raw but a terminal or a log viewer would act on (C1 controls, bidi overrides, line separators).

const MAX_DEPTH = 32;
const MAX_ENTRIES = 10_000;

/** Plain JSON data: bigint → "0x…" hex string, bytes → hex string, Map → object, Set → array, Date → ISO. */
export function toJsonSafe(value: unknown): unknown {
  return convert(value, 0, new Set());
}

function convert(value: unknown, depth: number, seen: Set<object>): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return Number.isFinite(value) ? value : String(value);
    case 'bigint':
      // Evidence bigints are almost always guest addresses or raw register values: hex is what a reader wants.
      return value < 0n ? `-0x${(-value).toString(16)}` : `0x${value.toString(16)}`;
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
  }
  if (value === null) return null;
  const obj = value as object;
  if (depth >= MAX_DEPTH) return '[too deep]';
  if (seen.has(obj)) return '[circular]';
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
  if (value instanceof Uint8Array)
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex');
  if (value instanceof Error) return { name: value.name, message: value.message };
  seen.add(obj);
  try {
    if (Array.isArray(value) || value instanceof Set) {
      const out: unknown[] = [];
      let n = 0;
      for (const item of value) {
        if (++n > MAX_ENTRIES) {
          out.push('[truncated]');
          break;
        }
        const v = convert(item, depth + 1, seen);
        out.push(v === undefined ? null : v);
      }
      return out;
    }
    const entries: Iterable<[unknown, unknown]> =
      value instanceof Map ? value.entries() : Object.entries(obj as Record<string, unknown>);
    const out: Record<string, unknown> = {};
    let n = 0;
    for (const [k, v] of entries) {
      if (++n > MAX_ENTRIES) {
        out['[truncated]'] = true;
        break;
      }
      const converted = convert(v, depth + 1, seen);
      if (converted !== undefined) out[String(k)] = converted;
    }
    return out;
  } finally {
    seen.delete(obj);
  }
}

// Everything JSON.stringify leaves unescaped that a terminal, pager or browser would interpret.
const RISKY =
  /[\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]/g;

/** JSON text of `value` (made safe with toJsonSafe), with risky characters as \uXXXX escapes. */
export function stringifyJson(value: unknown): string {
  const text = JSON.stringify(toJsonSafe(value)) ?? 'null';
  return text.replace(RISKY, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
