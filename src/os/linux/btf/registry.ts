// TypeRegistry: the kernel's types by name, from its own BTF. Lookups by name are lazy (the index is
// built on first use), field resolution is cached per (type, path), and every walk over the type graph
// is bounded in depth and in work, because the graph comes from the guest and may be cyclic.
import { VigilError } from '../../../util/errors.js';
import { sanitize } from '../../../util/sanitize.js';
import { BtfData, parseBtf } from './parse.js';
import { formatSteps, parsePath, type PathStep } from './path.js';
import { declaration, formatType, typeName } from './print.js';
import { KIND_NAMES, type BtfComposite, type BtfEnum, type BtfKindName, type BtfType } from './types.js';

/** A type by id, or by name: 'task_struct', 'struct task_struct', 'union x', 'enum pid_type', 'typedef pid_t'. */
export type TypeRef = number | string;

/** A member (or field path) located inside a type. */
export interface FieldInfo {
  /** Path as given (for a direct member: its name). */
  readonly path: string;
  /** Declared type id of the member (unresolved: may be a typedef or const). */
  readonly type: number;
  /** Bit offset from the start of the outer type, through anonymous members and array indexes. */
  readonly bitOffset: number;
  /** Bitfield width in bits, 0 when not a bitfield (both BTF bitfield encodings are normalised). */
  readonly bitfieldSize: number;
  /** Byte offset (bitOffset / 8, rounded down). */
  readonly offset: number;
  /** Bytes the member occupies (for a bitfield: the size of its declared integer type). */
  readonly size: number;
}

/** Chains of typedef/const/volatile/restrict/type_tag longer than this are treated as cycles. */
export const MAX_CHAIN = 32;
/** Nesting of anonymous members searched through, and of declarators printed. */
export const MAX_NESTING = 32;
/** Upper bound on nodes visited by one member search (anonymous members can fan out). */
const SEARCH_BUDGET = 100_000;
const FIND_CACHE_LIMIT = 4096;

const MODIFIERS: ReadonlySet<BtfKindName> = new Set(['typedef', 'const', 'volatile', 'restrict', 'type_tag']);
const PREFIXES: Readonly<Record<string, readonly BtfKindName[]>> = {
  struct: ['struct'],
  union: ['union'],
  enum: ['enum', 'enum64'],
  typedef: ['typedef'],
  func: ['func'],
  var: ['var'],
  datasec: ['datasec'],
};
/** Bare names prefer complete aggregate types; a forward declaration only when nothing else has the name. */
const BARE_ORDER: readonly BtfKindName[] = [
  'struct',
  'union',
  'typedef',
  'enum',
  'enum64',
  'int',
  'float',
  'func',
  'var',
  'datasec',
  'fwd',
];
const INDEXED_MASK = BARE_ORDER.reduce((mask, k) => mask | (1 << KIND_NAMES.indexOf(k)), 0);

export class TypeRegistry {
  readonly data: BtfData;
  private nameIndex: Map<string, number | number[]> | undefined;
  private enumIndex: Map<string, { type: number; value: bigint }> | undefined;
  private readonly fieldCache = new WeakMap<readonly PathStep[], Map<number, FieldInfo>>();
  private readonly memberCache = new Map<number, readonly FieldInfo[]>();
  private ptrSize: number | undefined;
  private readonly findCache = new Map<string, number | undefined>();

  constructor(data: BtfData) {
    this.data = data;
  }

  /** Parse a BTF blob into a registry. Throws VigilError('os', 'malformed'). */
  static fromBlob(blob: Buffer): TypeRegistry {
    return new TypeRegistry(parseBtf(blob));
  }

  /** Number of types, not counting void (id 0). */
  get count(): number {
    return this.data.count;
  }

  type(ref: TypeRef): BtfType {
    return this.data.type(this.id(ref));
  }

  kind(ref: TypeRef): BtfKindName {
    return this.data.kind(this.id(ref));
  }

  /** Type id of a reference; a name must exist (VigilError 'not-found'). */
  id(ref: TypeRef): number {
    if (typeof ref === 'number') {
      this.data.checkId(ref);
      return ref;
    }
    const id = this.find(ref);
    if (id === undefined)
      throw new VigilError('os', 'not-found', `no type "${sanitize(ref, 200)}" in the kernel BTF`);
    return id;
  }

  /** Look a type up by name; see TypeRef for the accepted forms. Undefined when absent. */
  find(name: string): number | undefined {
    // Views name their type on every construction: remember answers, including misses.
    if (this.findCache.has(name)) return this.findCache.get(name);
    const id = this.findUncached(name);
    if (this.findCache.size >= FIND_CACHE_LIMIT) this.findCache.clear();
    this.findCache.set(name, id);
    return id;
  }

  private findUncached(name: string): number | undefined {
    if (name.length > 512) return undefined;
    const m = /^\s*(?:(struct|union|enum|typedef|func|var|datasec)\s+)?(\S(?:.*\S)?)\s*$/.exec(name);
    if (!m) return undefined;
    const prefix = m[1];
    const bare = m[2]!;
    const hits = this.index().get(bare);
    if (hits === undefined) return undefined;
    const ids = typeof hits === 'number' ? [hits] : hits;
    if (prefix) {
      const kinds = PREFIXES[prefix]!;
      const found = ids.find((id) => kinds.includes(this.data.kind(id)));
      if (found !== undefined) return found;
      // `struct foo` with only a forward declaration in BTF still names something (incomplete).
      if (prefix === 'struct' || prefix === 'union') {
        return ids.find((id) => {
          const t = this.data.type(id);
          return t.kind === 'fwd' && t.union === (prefix === 'union');
        });
      }
      return undefined;
    }
    for (const kind of BARE_ORDER) {
      const found = ids.find((id) => this.data.kind(id) === kind);
      if (found !== undefined) return found;
    }
    return undefined;
  }

  /** All ids of named types of a kind (for listings); names are raw guest strings. */
  idsOfKind(kind: BtfKindName): number[] {
    const out: number[] = [];
    for (let id = 1; id <= this.data.count; id++) if (this.data.kind(id) === kind) out.push(id);
    return out;
  }

  /** The name index, built on first use (~100k names on a 6.1 kernel). */
  private index(): Map<string, number | number[]> {
    this.nameIndex ??= this.data.buildNameIndex(INDEXED_MASK);
    return this.nameIndex;
  }

  /** Strip typedefs, cv-qualifiers and type tags. Cycles and over-long chains are 'malformed'. */
  resolve(ref: TypeRef): number {
    let id = this.id(ref);
    for (let n = 0; n <= MAX_CHAIN; n++) {
      const t = this.data.type(id);
      if (!MODIFIERS.has(t.kind)) return id;
      id = (t as { type: number }).type;
    }
    throw new VigilError(
      'os',
      'malformed',
      `BTF: typedef/modifier chain from type ${this.id(ref)} is cyclic or too long`,
    );
  }

  /** The resolved type object. */
  resolved(ref: TypeRef): BtfType {
    return this.data.type(this.resolve(ref));
  }

  /** Size of a pointer in the guest kernel, from the size of `long` (8 on x86-64). */
  get pointerSize(): number {
    if (this.ptrSize === undefined) {
      const id = this.find('long unsigned int') ?? this.find('long int');
      const t = id === undefined ? undefined : this.data.type(id);
      this.ptrSize = t && t.kind === 'int' && (t.size === 4 || t.size === 8) ? t.size : 8;
    }
    return this.ptrSize;
  }

  /** sizeof in bytes. Types without a size (void, functions, forward declarations) are 'unsupported'. */
  sizeof(ref: TypeRef): number {
    return this.sizeOf(this.id(ref), 0);
  }

  private sizeOf(id: number, depth: number): number {
    if (depth > MAX_CHAIN) {
      throw new VigilError(
        'os',
        'malformed',
        `BTF: type ${id}: nesting too deep or cyclic while computing its size`,
      );
    }
    const t = this.data.type(id);
    switch (t.kind) {
      case 'int':
      case 'struct':
      case 'union':
      case 'enum':
      case 'enum64':
      case 'float':
      case 'datasec':
        return t.size;
      case 'ptr':
        return this.pointerSize;
      case 'array': {
        const n = t.nelems * this.sizeOf(t.type, depth + 1);
        if (n > 0xffffffff)
          throw new VigilError('os', 'malformed', `BTF: array type ${id} larger than 4 GiB`);
        return n;
      }
      case 'typedef':
      case 'const':
      case 'volatile':
      case 'restrict':
      case 'type_tag':
      case 'var':
        return this.sizeOf(t.type, depth + 1);
      default:
        throw new VigilError('os', 'unsupported', `${this.describe(id)} has no size`);
    }
  }

  /** Direct members of a struct/union with bitfields normalised (both encodings). */
  members(ref: TypeRef): readonly FieldInfo[] {
    const id = this.resolve(ref);
    const cached = this.memberCache.get(id);
    if (cached) return cached;
    const t = this.composite(id, ref);
    const out = t.members.map((m): FieldInfo => {
      let bitOffset = m.bitOffset;
      let bitfieldSize = m.bitfieldSize;
      const mt = this.resolved(m.type);
      if (!t.kindFlag && mt.kind === 'int' && (mt.bitOffset !== 0 || mt.bits !== mt.size * 8)) {
        // Old encoding: the bitfield lives in the INT type itself.
        bitOffset += mt.bitOffset;
        bitfieldSize = mt.bits;
      }
      const size = this.sizeOrZero(m.type);
      return { path: m.name, type: m.type, bitOffset, bitfieldSize, offset: Math.floor(bitOffset / 8), size };
    });
    this.memberCache.set(id, out);
    return out;
  }

  private sizeOrZero(id: number): number {
    try {
      return this.sizeOf(id, 0);
    } catch (e) {
      if (e instanceof VigilError && e.kind === 'unsupported') return 0;
      throw e;
    }
  }

  private composite(id: number, ref: TypeRef): BtfComposite {
    const t = this.data.type(id);
    if (t.kind === 'struct' || t.kind === 'union') return t;
    if (t.kind === 'fwd') {
      throw new VigilError('os', 'unsupported', `${this.describe(id)} is only declared in BTF (no members)`);
    }
    throw new VigilError('os', 'usage', `${this.describe(ref)} is not a struct or union`);
  }

  /**
   * A member by name, searching through anonymous struct/union members (offsets accumulate).
   * Throws 'not-found' naming the type and the field.
   */
  member(ref: TypeRef, name: string): FieldInfo {
    const id = this.resolve(ref);
    const budget = { left: SEARCH_BUDGET };
    const found = this.searchMember(id, name, 0, 0, budget);
    if (!found) throw this.noField(id, name);
    return { ...found, path: name };
  }

  private searchMember(
    id: number,
    name: string,
    base: number,
    depth: number,
    budget: { left: number },
  ): FieldInfo | undefined {
    if (depth > MAX_NESTING) throw new VigilError('os', 'malformed', `BTF: anonymous members nest too deep`);
    const members = this.members(id);
    if ((budget.left -= members.length + 1) < 0) {
      throw new VigilError(
        'os',
        'bound',
        `BTF: member search for "${sanitize(name, 80)}" exceeded its budget`,
      );
    }
    for (const m of members) {
      if (m.path === name)
        return { ...m, bitOffset: base + m.bitOffset, offset: Math.floor((base + m.bitOffset) / 8) };
    }
    for (const m of members) {
      if (m.path !== '') continue;
      const inner = this.resolve(m.type);
      const k = this.data.kind(inner);
      if (k !== 'struct' && k !== 'union') continue;
      const hit: FieldInfo | undefined = this.searchMember(
        inner,
        name,
        base + m.bitOffset,
        depth + 1,
        budget,
      );
      if (hit) return hit;
    }
    return undefined;
  }

  private noField(id: number, name: string): VigilError {
    return new VigilError('os', 'not-found', `no field "${sanitize(name, 80)}" in ${this.describe(id)}`);
  }

  /**
   * Locate a field path inside a type: `a.b`, `a[2].b`, through anonymous members. Paths with `->`
   * need guest memory and belong to typed views. Cached per (type, path).
   */
  field(ref: TypeRef, path: string): FieldInfo {
    const id = this.id(ref);
    const segments = parsePath(path);
    if (segments.length > 1) {
      throw new VigilError(
        'os',
        'usage',
        `path "${sanitize(path, 80)}" follows a pointer: read it with a typed view`,
      );
    }
    return this.fieldSteps(id, segments[0]!);
  }

  /**
   * Walk pre-parsed steps (no pointers) from type `id`. Cached per (steps, type): parsePath hands out the
   * same steps array for the same path string, so hot paths resolve once.
   */
  fieldSteps(id: number, steps: readonly PathStep[]): FieldInfo {
    this.data.checkId(id);
    let perType = this.fieldCache.get(steps);
    if (!perType) {
      perType = new Map();
      this.fieldCache.set(steps, perType);
    }
    const hit = perType.get(id);
    if (hit) return hit;
    const info = this.walkSteps(id, steps);
    perType.set(id, info);
    return info;
  }

  private walkSteps(id: number, steps: readonly PathStep[]): FieldInfo {
    const path = formatSteps(steps);
    let type = id;
    let bitOffset = 0;
    let bitfieldSize = 0;
    let size = 0;
    let walked: PathStep[] = [];
    for (const step of steps) {
      if (bitfieldSize) throw new VigilError('os', 'usage', `${formatSteps(walked)} is a bitfield`);
      const cur = this.resolve(type);
      const t = this.data.type(cur);
      if (step.op === 'member') {
        if (t.kind !== 'struct' && t.kind !== 'union' && t.kind !== 'fwd') {
          const what = walked.length
            ? `${formatSteps(walked)} (${this.describe(type)})`
            : this.describe(type);
          throw new VigilError('os', 'usage', `${what} has no members (looking for "${step.name}")`);
        }
        const m = this.member(cur, step.name);
        type = m.type;
        bitOffset += m.bitOffset;
        bitfieldSize = m.bitfieldSize;
        size = m.size;
      } else {
        if (t.kind !== 'array') {
          throw new VigilError('os', 'usage', `${formatSteps(walked) || this.describe(id)} is not an array`);
        }
        // Index 0-length (flexible) arrays freely; views still bound the bytes they read.
        if (t.nelems !== 0 && step.index >= t.nelems) {
          throw new VigilError('os', 'bound', `index ${step.index} past ${formatSteps(walked)}[${t.nelems}]`);
        }
        size = this.sizeof(t.type);
        type = t.type;
        // Offsets stay within a u32 like every other BTF offset, so bit arithmetic stays exact.
        if (step.index * size > 0xffffffff) {
          throw new VigilError('os', 'bound', `index ${step.index} of ${formatSteps(walked)} is past 4 GiB`);
        }
        bitOffset += step.index * size * 8;
      }
      walked = [...walked, step];
    }
    return { path, type, bitOffset, bitfieldSize, offset: Math.floor(bitOffset / 8), size };
  }

  /** offsetof(type, path) in bytes; a bitfield has no byte offset ('usage'). */
  offsetof(ref: TypeRef, path: string): number {
    const f = this.field(ref, path);
    if (f.bitfieldSize)
      throw new VigilError('os', 'usage', `${sanitize(path, 80)} is a bitfield: no byte offset`);
    return f.offset;
  }

  /** Element type and count of an array type (through typedefs). */
  arrayInfo(ref: TypeRef): { elementType: number; count: number; elementSize: number } {
    const t = this.resolved(ref);
    if (t.kind !== 'array') throw new VigilError('os', 'usage', `${this.describe(ref)} is not an array`);
    return { elementType: t.type, count: t.nelems, elementSize: this.sizeof(t.type) };
  }

  /** Value of an enumerator by name (e.g. PIDTYPE_PID), optionally only within one enum type. */
  enumValue(name: string, enumRef?: TypeRef): bigint {
    if (enumRef !== undefined) {
      const t = this.enumType(enumRef);
      const v = t.values.find((e) => e.name === name);
      if (!v)
        throw new VigilError(
          'os',
          'not-found',
          `no enumerator ${sanitize(name, 80)} in ${this.describe(t.id)}`,
        );
      return v.value;
    }
    this.enumIndex ??= this.data.buildEnumeratorIndex();
    const hit = this.enumIndex.get(name);
    if (!hit)
      throw new VigilError('os', 'not-found', `no enumerator ${sanitize(name, 80)} in the kernel BTF`);
    return hit.value;
  }

  /** Name of an enum's value (first match), for display; undefined when no enumerator has it. */
  enumName(enumRef: TypeRef, value: bigint | number): string | undefined {
    const v = BigInt(value);
    return this.enumType(enumRef).values.find((e) => e.value === v)?.name;
  }

  private enumType(ref: TypeRef): BtfEnum {
    const t = this.resolved(ref);
    if (t.kind !== 'enum' && t.kind !== 'enum64')
      throw new VigilError('os', 'usage', `${this.describe(ref)} is not an enum`);
    return t;
  }

  /** C spelling of a type: 'struct list_head *', 'char [16]', 'void (*)(int)'. Sanitised. */
  typeName(ref: TypeRef): string {
    return typeName(this, this.id(ref));
  }

  /** C declaration of a name with a type: 'struct list_head *next'. Sanitised. */
  declaration(ref: TypeRef, name: string): string {
    return declaration(this, this.id(ref), name);
  }

  /** C-like definition for display (`vigil kernel types X`). Sanitised. */
  format(ref: TypeRef): string {
    return formatType(this, this.id(ref));
  }

  /** Short name for messages: 'struct task_struct', 'typedef pid_t', 'type 123 (ptr)'. Sanitised. */
  describe(ref: TypeRef): string {
    if (typeof ref === 'string') return sanitize(ref, 200);
    const t = this.data.type(ref);
    if (t.kind === 'void') return 'void';
    if (t.name === '') return `anonymous ${t.kind} (type ${ref})`;
    const label = t.kind === 'enum64' ? 'enum' : t.kind;
    return `${label} ${sanitize(t.name, 200)}`;
  }
}
