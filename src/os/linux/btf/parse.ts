// BTF blob parser. The blob comes from guest memory, so it is hostile: every count, offset and type id
// is checked against the section it points into before anything is decoded, and failures are
// VigilError('os', 'malformed'). Parsing is two flat passes over a Uint32Array copy of the type
// section (record layout, then references); type objects are decoded lazily and cached.
import { endianness } from 'node:os';
import { VigilError } from '../../../util/errors.js';
import { sanitize } from '../../../util/sanitize.js';
import {
  BTF_KIND,
  KIND_NAMES,
  type BtfEnumValue,
  type BtfKindName,
  type BtfMember,
  type BtfParam,
  type BtfType,
  type BtfVarSecinfo,
} from './types.js';

export const BTF_MAGIC = 0xeb9f;
export const BTF_HEADER_MIN = 24;
/** Newer formats grow the header; anything past this is not a header we understand. */
export const BTF_HEADER_MAX = 256;
/** vmlinux BTF of a distribution kernel is 2–5 MB of types; leave room, but never trust a guest size. */
export const MAX_TYPE_SECTION = 64 << 20;
/** String offsets are 24-bit (BTF_MAX_NAME_OFFSET), so the section cannot usefully exceed 16 MiB. */
export const MAX_STR_SECTION = 1 << 24;
/** BTF_MAX_TYPE. */
export const MAX_TYPES = 0xfffff;

/** Bits of btf_type.info that must be zero: 16–23 and 29–30 (vlen is 16 bits, kind 5 bits). */
const INFO_RESERVED = 0x60ff0000;
/** Bits of the INT data word that must be zero (BTF_INT_MASK is 0x0fff00ff). */
const INT_RESERVED = 0xf000ff00;

export interface BtfHeader {
  readonly version: number;
  readonly flags: number;
  readonly hdrLen: number;
  /** Offsets are relative to the end of the header, as in the format. */
  readonly typeOff: number;
  readonly typeLen: number;
  readonly strOff: number;
  readonly strLen: number;
  /** Total blob length the header describes: header plus the furthest section end. */
  readonly length: number;
}

const malformed = (message: string): VigilError => new VigilError('os', 'malformed', `BTF: ${message}`);

/** Parse and sanity-check a BTF header at `at`. Throws VigilError('os','malformed'). */
export function parseBtfHeader(buf: Buffer, at = 0): BtfHeader {
  if (at < 0 || buf.length - at < BTF_HEADER_MIN)
    throw malformed(`truncated header (${buf.length - at} bytes)`);
  const magic = buf.readUInt16LE(at);
  if (magic !== BTF_MAGIC) throw malformed(`bad magic 0x${magic.toString(16)}`);
  const version = buf[at + 2]!;
  const flags = buf[at + 3]!;
  if (version !== 1) throw malformed(`unsupported version ${version}`);
  if (flags !== 0) throw malformed(`unsupported flags 0x${flags.toString(16)}`);
  const hdrLen = buf.readUInt32LE(at + 4);
  if (hdrLen < BTF_HEADER_MIN || hdrLen > BTF_HEADER_MAX || hdrLen % 4 !== 0) {
    throw malformed(`bad header length ${hdrLen}`);
  }
  const typeOff = buf.readUInt32LE(at + 8);
  const typeLen = buf.readUInt32LE(at + 12);
  const strOff = buf.readUInt32LE(at + 16);
  const strLen = buf.readUInt32LE(at + 20);
  if (typeOff % 4 !== 0 || typeLen % 4 !== 0) throw malformed(`type section not 4-byte aligned`);
  if (typeLen > MAX_TYPE_SECTION) throw malformed(`type section of ${typeLen} bytes exceeds the cap`);
  if (strLen === 0 || strLen > MAX_STR_SECTION) throw malformed(`string section of ${strLen} bytes`);
  // Both offsets are u32 and capped lengths are < 2^27, so these sums stay exact in a double.
  const typeEnd = typeOff + typeLen;
  const strEnd = strOff + strLen;
  if (typeEnd > strOff && strEnd > typeOff) throw malformed('type and string sections overlap');
  // The kernel writes the sections back to back from offset 0. A longer (newer) header may describe
  // extra sections we skip, so only then is a bounded gap allowed.
  const [first, second] = typeOff <= strOff ? [typeOff, typeEnd] : [strOff, strEnd];
  const gapAllowed = hdrLen > BTF_HEADER_MIN ? 1 << 20 : 0;
  const secondStart = typeOff <= strOff ? strOff : typeOff;
  if (first > gapAllowed || secondStart - second > gapAllowed) throw malformed('gap between sections');
  const length = hdrLen + Math.max(typeEnd, strEnd);
  return { version, flags, hdrLen, typeOff, typeLen, strOff, strLen, length };
}

/** Record length in u32 words after the 3-word btf_type, by kind; -1 for vlen-scaled kinds. */
function extraWords(kind: number, vlen: number): number {
  switch (kind) {
    case BTF_KIND.INT:
    case BTF_KIND.VAR:
    case BTF_KIND.DECL_TAG:
      return 1;
    case BTF_KIND.ARRAY:
      return 3;
    case BTF_KIND.STRUCT:
    case BTF_KIND.UNION:
    case BTF_KIND.DATASEC:
    case BTF_KIND.ENUM64:
      return 3 * vlen;
    case BTF_KIND.ENUM:
    case BTF_KIND.FUNC_PROTO:
      return 2 * vlen;
    case BTF_KIND.PTR:
    case BTF_KIND.FWD:
    case BTF_KIND.TYPEDEF:
    case BTF_KIND.VOLATILE:
    case BTF_KIND.CONST:
    case BTF_KIND.RESTRICT:
    case BTF_KIND.FUNC:
    case BTF_KIND.FLOAT:
    case BTF_KIND.TYPE_TAG:
      return 0;
    default:
      return -1;
  }
}

/** Parsed BTF: flat arrays indexed by type id, strings as one latin1 string (index = byte offset). */
export class BtfData {
  readonly header: BtfHeader;
  /** Number of types, not counting void (id 0). Valid ids are 0..count. */
  readonly count: number;
  private readonly words: Uint32Array;
  /** Word index of each type's record; entry 0 unused. */
  private readonly rec: Uint32Array;
  private readonly kinds: Uint8Array;
  private readonly strings: string;
  private readonly decoded: (BtfType | undefined)[];

  constructor(blob: Buffer) {
    const h = parseBtfHeader(blob);
    if (blob.length < h.length) throw malformed(`blob of ${blob.length} bytes, header describes ${h.length}`);
    this.header = h;
    const strStart = h.hdrLen + h.strOff;
    if (blob[strStart] !== 0) throw malformed('string section does not start with NUL');
    if (blob[strStart + h.strLen - 1] !== 0) throw malformed('string section does not end with NUL');
    this.strings = blob.toString('latin1', strStart, strStart + h.strLen);

    // An aligned copy lets both passes index words directly instead of calling readUInt32LE.
    this.words = new Uint32Array(h.typeLen / 4);
    const typeStart = h.hdrLen + h.typeOff;
    Buffer.from(this.words.buffer).set(blob.subarray(typeStart, typeStart + h.typeLen));
    if (endianness() !== 'LE') Buffer.from(this.words.buffer).swap32();

    const maxRecords = Math.floor(this.words.length / 3);
    const rec = new Uint32Array(maxRecords + 1);
    const kinds = new Uint8Array(maxRecords + 1);
    const count = this.layout(rec, kinds);
    this.count = count;
    this.rec = rec.subarray(0, count + 1);
    this.kinds = kinds.subarray(0, count + 1);
    this.decoded = new Array<BtfType | undefined>(count + 1);
    this.checkReferences();
  }

  /** Pass 1: find each record, check kind, reserved bits, name offset and record length. */
  private layout(rec: Uint32Array, kinds: Uint8Array): number {
    const w = this.words;
    const strLen = this.header.strLen;
    let i = 0;
    let id = 0;
    while (i < w.length) {
      id++;
      if (id > MAX_TYPES) throw malformed(`more than ${MAX_TYPES} types`);
      if (i + 3 > w.length) throw malformed(`type ${id} truncated at the end of the type section`);
      const nameOff = w[i]!;
      const info = w[i + 1]!;
      const kind = (info >>> 24) & 0x1f;
      if (info & INFO_RESERVED)
        throw malformed(`type ${id}: reserved info bits set (0x${info.toString(16)})`);
      if (nameOff >= strLen) throw malformed(`type ${id}: name offset ${nameOff} beyond strings (${strLen})`);
      const extra = extraWords(kind, info & 0xffff);
      if (extra < 0) throw malformed(`type ${id}: unknown kind ${kind}`);
      const next = i + 3 + extra;
      if (next > w.length) throw malformed(`type ${id} (${KIND_NAMES[kind]}) runs past the type section`);
      rec[id] = i;
      kinds[id] = kind;
      i = next;
    }
    return id;
  }

  /** Pass 2: every referenced type id and string offset must exist; per-kind size rules. */
  private checkReferences(): void {
    const w = this.words;
    const strLen = this.header.strLen;
    const n = this.count;
    const kinds = this.kinds;
    // Helpers take everything as arguments: closures made per type would dominate the pass.
    const fail = (id: number, what: string): never => {
      throw malformed(`type ${id} (${KIND_NAMES[kinds[id]!]}): ${what}`);
    };
    const ref = (id: number, t: number, what: string, allowVoid: boolean): void => {
      if (t > n || (t === 0 && !allowVoid)) fail(id, `${what} refers to type ${t} of ${n}`);
    };
    const names = (id: number, from: number, count: number, step: number): void => {
      for (let k = 0, j = from; k < count; k++, j += step) {
        if (w[j]! >= strLen) fail(id, `name offset ${w[j]} of entry ${k} beyond strings`);
      }
    };
    for (let id = 1; id <= n; id++) {
      const i = this.rec[id]!;
      const kind = kinds[id]!;
      const vlen = w[i + 1]! & 0xffff;
      const st = w[i + 2]!;
      switch (kind) {
        case BTF_KIND.INT: {
          const d = w[i + 3]!;
          const bits = d & 0xff;
          const off = (d >>> 16) & 0xff;
          if (d & INT_RESERVED) fail(id, 'reserved int bits set');
          if (st !== 1 && st !== 2 && st !== 4 && st !== 8 && st !== 16) fail(id, `size ${st}`);
          if (bits === 0 || bits > 128 || off + bits > st * 8) fail(id, `${bits} bits at ${off}`);
          break;
        }
        case BTF_KIND.PTR:
        case BTF_KIND.TYPEDEF:
        case BTF_KIND.VOLATILE:
        case BTF_KIND.CONST:
        case BTF_KIND.RESTRICT:
        case BTF_KIND.TYPE_TAG:
          if (st > n) ref(id, st, 'target', true);
          break;
        case BTF_KIND.ARRAY:
          ref(id, w[i + 3]!, 'element', false);
          ref(id, w[i + 4]!, 'index', false);
          break;
        case BTF_KIND.STRUCT:
        case BTF_KIND.UNION:
          names(id, i + 3, vlen, 3);
          for (let k = 0, j = i + 4; k < vlen; k++, j += 3) {
            const t = w[j]!;
            if (t === 0 || t > n) ref(id, t, `member ${k}`, false);
          }
          break;
        case BTF_KIND.ENUM:
        case BTF_KIND.ENUM64:
          if (st !== 1 && st !== 2 && st !== 4 && st !== 8) fail(id, `size ${st}`);
          names(id, i + 3, vlen, kind === BTF_KIND.ENUM ? 2 : 3);
          break;
        case BTF_KIND.FUNC:
          if (st === 0 || st > n || kinds[st] !== BTF_KIND.FUNC_PROTO)
            fail(id, `type ${st} is not a prototype`);
          break;
        case BTF_KIND.FUNC_PROTO:
          ref(id, st, 'return', true);
          names(id, i + 3, vlen, 2);
          for (let k = 0, j = i + 4; k < vlen; k++, j += 2) {
            // Type 0 (with no name) marks varargs and may only come last.
            const t = w[j]!;
            if (t > n) ref(id, t, `parameter ${k}`, true);
            if (t === 0 && (k !== vlen - 1 || w[j - 1] !== 0)) fail(id, `void parameter ${k}`);
          }
          break;
        case BTF_KIND.VAR:
          ref(id, st, 'variable', false);
          break;
        case BTF_KIND.DATASEC:
          for (let k = 0, j = i + 3; k < vlen; k++, j += 3) {
            const t = w[j]!;
            if (t === 0 || t > n || kinds[t] !== BTF_KIND.VAR) fail(id, `entry ${k} is not a variable`);
          }
          break;
        case BTF_KIND.FLOAT:
          if (st !== 2 && st !== 4 && st !== 8 && st !== 12 && st !== 16) fail(id, `size ${st}`);
          break;
        case BTF_KIND.DECL_TAG:
          ref(id, st, 'target', false);
          if ((w[i + 3]! | 0) < -1) fail(id, `component index ${w[i + 3]! | 0}`);
          break;
        default:
          break;
      }
    }
  }

  /**
   * Map names to ids for the kinds in `kindMask` (bit k set: kind k), straight from the flat arrays:
   * this runs over every type once, so it avoids per-type decoding.
   */
  buildNameIndex(kindMask: number): Map<string, number | number[]> {
    const map = new Map<string, number | number[]>();
    const { words, rec, kinds, strings } = this;
    for (let id = 1; id <= this.count; id++) {
      if (((kindMask >>> kinds[id]!) & 1) === 0) continue;
      const off = words[rec[id]!]!;
      if (off === 0) continue;
      const name = strings.slice(off, strings.indexOf('\0', off));
      const prev = map.get(name);
      if (prev === undefined) map.set(name, id);
      else if (typeof prev === 'number') map.set(name, [prev, id]);
      else prev.push(id);
    }
    return map;
  }

  /** Every enumerator name (ENUM and ENUM64) to its first enum type id and value. */
  buildEnumeratorIndex(): Map<string, { type: number; value: bigint }> {
    const map = new Map<string, { type: number; value: bigint }>();
    const { words: w, rec, kinds, strings } = this;
    for (let id = 1; id <= this.count; id++) {
      const kind = kinds[id]!;
      if (kind !== BTF_KIND.ENUM && kind !== BTF_KIND.ENUM64) continue;
      const i = rec[id]!;
      const info = w[i + 1]!;
      const signed = info >>> 31 === 1;
      const step = kind === BTF_KIND.ENUM ? 2 : 3;
      for (let k = 0, j = i + 3; k < (info & 0xffff); k++, j += step) {
        const off = w[j]!;
        const name = strings.slice(off, strings.indexOf('\0', off));
        if (map.has(name)) continue;
        let value: bigint;
        if (kind === BTF_KIND.ENUM) value = BigInt(signed ? w[j + 1]! | 0 : w[j + 1]!);
        else {
          const u = (BigInt(w[j + 2]!) << 32n) | BigInt(w[j + 1]!);
          value = signed ? BigInt.asIntN(64, u) : u;
        }
        map.set(name, { type: id, value });
      }
    }
    return map;
  }

  /** Throw unless `id` names a type (0 is void). */
  checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id > this.count) {
      throw new VigilError(
        'os',
        'not-found',
        `no BTF type id ${sanitize(String(id), 40)} (${this.count} types)`,
      );
    }
  }

  kindNumber(id: number): number {
    this.checkId(id);
    return this.kinds[id]!;
  }

  kind(id: number): BtfKindName {
    return KIND_NAMES[this.kindNumber(id)]!;
  }

  /** Raw name of a type (no decoding of the whole record). */
  name(id: number): string {
    this.checkId(id);
    return id === 0 ? '' : this.str(this.words[this.rec[id]!]!);
  }

  /** String at an offset into the string section. */
  str(off: number): string {
    if (off === 0) return '';
    if (!(off > 0 && off < this.header.strLen)) throw malformed(`string offset ${off} beyond strings`);
    return this.strings.slice(off, this.strings.indexOf('\0', off));
  }

  /** The `size` or `type` word of a record (kind decides which). */
  sizeOrType(id: number): number {
    this.checkId(id);
    return id === 0 ? 0 : this.words[this.rec[id]! + 2]!;
  }

  /** Decode one type record (cached). */
  type(id: number): BtfType {
    this.checkId(id);
    let t = this.decoded[id];
    if (t === undefined) {
      t = this.decode(id);
      this.decoded[id] = t;
    }
    return t;
  }

  private decode(id: number): BtfType {
    if (id === 0) return { kind: 'void', id: 0, name: 'void' };
    const w = this.words;
    const i = this.rec[id]!;
    const name = this.str(w[i]!);
    const info = w[i + 1]!;
    const kind = this.kinds[id]!;
    const vlen = info & 0xffff;
    const kindFlag = info >>> 31 === 1;
    const st = w[i + 2]!;
    switch (kind) {
      case BTF_KIND.INT: {
        const d = w[i + 3]!;
        const enc = (d >>> 24) & 0x0f;
        return {
          kind: 'int',
          id,
          name,
          size: st,
          signed: (enc & 1) !== 0,
          char: (enc & 2) !== 0,
          bool: (enc & 4) !== 0,
          bitOffset: (d >>> 16) & 0xff,
          bits: d & 0xff,
        };
      }
      case BTF_KIND.PTR:
        return { kind: 'ptr', id, name, type: st };
      case BTF_KIND.ARRAY:
        return { kind: 'array', id, name, type: w[i + 3]!, indexType: w[i + 4]!, nelems: w[i + 5]! };
      case BTF_KIND.STRUCT:
      case BTF_KIND.UNION: {
        const members: BtfMember[] = new Array<BtfMember>(vlen);
        for (let k = 0, j = i + 3; k < vlen; k++, j += 3) {
          const off = w[j + 2]!;
          members[k] = {
            name: this.str(w[j]!),
            type: w[j + 1]!,
            bitOffset: kindFlag ? off & 0xffffff : off,
            bitfieldSize: kindFlag ? off >>> 24 : 0,
          };
        }
        return { kind: kind === BTF_KIND.STRUCT ? 'struct' : 'union', id, name, size: st, kindFlag, members };
      }
      case BTF_KIND.ENUM:
      case BTF_KIND.ENUM64: {
        const values: BtfEnumValue[] = new Array<BtfEnumValue>(vlen);
        if (kind === BTF_KIND.ENUM) {
          for (let k = 0, j = i + 3; k < vlen; k++, j += 2) {
            const raw = w[j + 1]!;
            values[k] = { name: this.str(w[j]!), value: BigInt(kindFlag ? raw | 0 : raw) };
          }
        } else {
          for (let k = 0, j = i + 3; k < vlen; k++, j += 3) {
            const u = (BigInt(w[j + 2]!) << 32n) | BigInt(w[j + 1]!);
            values[k] = { name: this.str(w[j]!), value: kindFlag ? BigInt.asIntN(64, u) : u };
          }
        }
        return {
          kind: kind === BTF_KIND.ENUM ? 'enum' : 'enum64',
          id,
          name,
          size: st,
          signed: kindFlag,
          values,
        };
      }
      case BTF_KIND.FWD:
        return { kind: 'fwd', id, name, union: kindFlag };
      case BTF_KIND.TYPEDEF:
      case BTF_KIND.VOLATILE:
      case BTF_KIND.CONST:
      case BTF_KIND.RESTRICT:
      case BTF_KIND.TYPE_TAG:
        return { kind: KIND_NAMES[kind] as 'typedef', id, name, type: st };
      case BTF_KIND.FUNC:
        return { kind: 'func', id, name, type: st, linkage: vlen };
      case BTF_KIND.FUNC_PROTO: {
        const params: BtfParam[] = [];
        let variadic = false;
        for (let k = 0, j = i + 3; k < vlen; k++, j += 2) {
          const t = w[j + 1]!;
          if (t === 0) variadic = true;
          else params.push({ name: this.str(w[j]!), type: t });
        }
        return { kind: 'func_proto', id, name, returnType: st, params, variadic };
      }
      case BTF_KIND.VAR:
        return { kind: 'var', id, name, type: st, linkage: w[i + 3]! };
      case BTF_KIND.DATASEC: {
        const vars: BtfVarSecinfo[] = new Array<BtfVarSecinfo>(vlen);
        for (let k = 0, j = i + 3; k < vlen; k++, j += 3)
          vars[k] = { type: w[j]!, offset: w[j + 1]!, size: w[j + 2]! };
        return { kind: 'datasec', id, name, size: st, vars };
      }
      case BTF_KIND.FLOAT:
        return { kind: 'float', id, name, size: st };
      case BTF_KIND.DECL_TAG:
        return { kind: 'decl_tag', id, name, type: st, componentIdx: w[i + 3]! | 0 };
      default:
        // layout() admits only the kinds above.
        throw malformed(`type ${id}: unknown kind ${kind}`);
    }
  }
}

/** Parse a BTF blob. Throws VigilError('os', 'malformed') on anything the format does not allow. */
export function parseBtf(blob: Buffer): BtfData {
  return new BtfData(blob);
}
