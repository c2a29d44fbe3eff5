// C-like rendering of BTF types for people: type names ('struct list_head *'), declarations
// ('void (*fn)(int)') and whole definitions with offsets. Names are guest strings, so everything is
// sanitised; the type graph may be cyclic, so recursion is bounded and cut short with '…' rather than
// failing, since printing is for display.
import { sanitize } from '../../../util/sanitize.js';
import type { TypeRegistry } from './registry.js';
import type { BtfType } from './types.js';

const MAX_DEPTH = 32;
/** Declarator nodes per name: real kernel declarations need a few dozen. */
const MAX_NODES = 512;
const MAX_LINES = 20_000;
/** Nesting of anonymous members expanded inline in a definition. */
const MAX_INLINE = 8;
const INDENT = '    ';
const COMMENT_COLUMN = 48;

const clean = (s: string): string => sanitize(s, 200);
const join = (base: string, inner: string): string => (inner ? `${base} ${inner}` : base);

function tagSpelling(tag: string): string {
  return /^[A-Za-z_]\w*$/.test(tag) ? `__${tag}` : `__attribute__((btf_type_tag("${clean(tag)}")))`;
}

function baseName(t: BtfType): string {
  switch (t.kind) {
    case 'struct':
    case 'union':
      return `${t.kind} ${t.name ? clean(t.name) : '{…}'}`;
    case 'enum':
    case 'enum64':
      return `enum ${t.name ? clean(t.name) : '{…}'}`;
    case 'fwd':
      return `${t.union ? 'union' : 'struct'} ${clean(t.name)}`;
    default:
      return t.name ? clean(t.name) : `<anonymous ${t.kind}>`;
  }
}

/** Declarator walk: `inner` is what has been built around the name so far. */
function decl(reg: TypeRegistry, id: number, inner: string, depth: number, budget: { left: number }): string {
  if (depth > MAX_DEPTH || --budget.left < 0) return join('…', inner);
  const t = reg.data.type(id);
  switch (t.kind) {
    case 'void':
      return join('void', inner);
    case 'ptr': {
      const k = reg.data.kind(t.type);
      return decl(
        reg,
        t.type,
        k === 'array' || k === 'func_proto' ? `(*${inner})` : `*${inner}`,
        depth + 1,
        budget,
      );
    }
    case 'const':
    case 'volatile':
    case 'restrict':
      // A qualified pointer is spelled after the '*' ('char *const p'); anything else before the base.
      if (reg.data.kind(t.type) === 'ptr') return decl(reg, t.type, join(t.kind, inner), depth + 1, budget);
      return `${t.kind} ${decl(reg, t.type, inner, depth + 1, budget)}`;
    case 'type_tag':
      return decl(reg, t.type, join(tagSpelling(t.name), inner), depth + 1, budget);
    case 'array':
      return decl(reg, t.type, `${inner}[${t.nelems}]`, depth + 1, budget);
    case 'func_proto': {
      const params = t.params.map((p) => decl(reg, p.type, clean(p.name), depth + 1, budget));
      if (t.variadic) params.push('...');
      return decl(
        reg,
        t.returnType,
        `${inner}(${params.length ? params.join(', ') : 'void'})`,
        depth + 1,
        budget,
      );
    }
    case 'func':
    case 'var':
      return decl(reg, t.type, clean(t.name), depth + 1, budget);
    case 'decl_tag':
      return decl(reg, t.type, inner, depth + 1, budget);
    case 'datasec':
      return join(`SEC("${clean(t.name)}")`, inner);
    default:
      return join(baseName(t), inner);
  }
}

/** 'struct list_head *', 'char [16]', 'void (*)(int)'. */
export function typeName(reg: TypeRegistry, id: number): string {
  return decl(reg, id, '', 0, { left: MAX_NODES });
}

/** 'struct list_head *next'. */
export function declaration(reg: TypeRegistry, id: number, name: string): string {
  return decl(reg, id, clean(name), 0, { left: MAX_NODES });
}

class Lines {
  readonly out: string[] = [];
  full = false;
  push(line: string): void {
    if (this.full) return;
    if (this.out.length >= MAX_LINES) {
      this.out.push(`${INDENT}/* … truncated */`);
      this.full = true;
      return;
    }
    this.out.push(line);
  }
}

const withComment = (text: string, comment: string): string =>
  `${text.padEnd(COMMENT_COLUMN - 1)} /* ${comment} */`;

function body(reg: TypeRegistry, id: number, level: number, baseBits: number, lines: Lines): void {
  const pad = INDENT.repeat(level);
  for (const m of reg.members(id)) {
    if (lines.full) return;
    const bits = baseBits + m.bitOffset;
    const inner = reg.resolved(m.type);
    if (m.path === '' && (inner.kind === 'struct' || inner.kind === 'union') && level <= MAX_INLINE) {
      lines.push(`${pad}${inner.kind} {`);
      body(reg, inner.id, level + 1, bits, lines);
      lines.push(withComment(`${pad}};`, `${Math.floor(bits / 8)} ${m.size}`));
      continue;
    }
    const d = declaration(reg, m.type, m.path);
    if (m.bitfieldSize) {
      lines.push(
        withComment(`${pad}${d}:${m.bitfieldSize};`, `${Math.floor(bits / 8)}:${bits % 8} ${m.size}`),
      );
    } else {
      lines.push(withComment(`${pad}${d};`, `${Math.floor(bits / 8)} ${m.size}`));
    }
  }
}

/** A C-like definition of a type, with member offsets and sizes in comments. */
export function formatType(reg: TypeRegistry, id: number): string {
  const t = reg.data.type(id);
  switch (t.kind) {
    case 'struct':
    case 'union': {
      const lines = new Lines();
      lines.push(`${baseName(t).replace(' {…}', '')} {`);
      body(reg, id, 1, 0, lines);
      lines.out.push(`}; /* size ${t.size} */`);
      return lines.out.join('\n');
    }
    case 'enum':
    case 'enum64': {
      const lines = new Lines();
      lines.push(`${baseName(t).replace(' {…}', '')} {`);
      for (const v of t.values) lines.push(`${INDENT}${clean(v.name)} = ${v.value},`);
      lines.out.push(`}; /* size ${t.size} */`);
      return lines.out.join('\n');
    }
    case 'typedef': {
      // `typedef struct { … } atomic_t;`: an anonymous body has no other name to be looked up by.
      const target = reg.data.type(t.type);
      if ((target.kind === 'struct' || target.kind === 'union') && target.name === '') {
        const lines = new Lines();
        lines.push(`typedef ${target.kind} {`);
        body(reg, target.id, 1, 0, lines);
        lines.out.push(`} ${clean(t.name)}; /* size ${target.size} */`);
        return lines.out.join('\n');
      }
      if ((target.kind === 'enum' || target.kind === 'enum64') && target.name === '') {
        const values = target.values.map((v) => `${INDENT}${clean(v.name)} = ${v.value},`);
        return ['typedef enum {', ...values.slice(0, MAX_LINES), `} ${clean(t.name)};`].join('\n');
      }
      return `typedef ${declaration(reg, t.type, t.name)};`;
    }
    case 'func':
      return `${t.linkage === 0 ? 'static ' : t.linkage === 2 ? 'extern ' : ''}${typeName(reg, id)};`;
    case 'var':
      return `${t.linkage === 0 ? 'static ' : ''}${typeName(reg, id)};`;
    case 'fwd':
      return `${baseName(t)};`;
    case 'datasec': {
      const lines = new Lines();
      lines.push(`SEC("${clean(t.name)}") { /* size ${t.size} */`);
      for (const v of t.vars)
        lines.push(withComment(`${INDENT}${typeName(reg, v.type)};`, `${v.offset} ${v.size}`));
      lines.out.push('};');
      return lines.out.join('\n');
    }
    default:
      return typeName(reg, id);
  }
}
