// Typed, bounds-checked access to a kernel struct in guest memory. A StructView reads its struct once
// (up to a cap) and answers field reads from that snapshot; `->` in a path follows a pointer through
// the reader. Every field comes from BTF by name: no offsets are hard-coded anywhere.
import { VigilError } from '../../../util/errors.js';
import { guestString, sanitize } from '../../../util/sanitize.js';
import { formatSteps, parsePath } from './path.js';
import type { FieldInfo, TypeRef, TypeRegistry } from './registry.js';
import type { BtfType } from './types.js';

/**
 * Virtual-address reads (an AddressSpace fits). Must return exactly `length` bytes or throw, in a buffer
 * the caller may keep: views hold it as their snapshot, so it must not alias live guest memory.
 */
export interface ByteReader {
  read(va: bigint, length: number): Buffer;
}

export interface ViewOptions {
  /** Bytes read eagerly when the view is made; the rest of a larger struct is read on demand. */
  readonly maxSnapshot?: number;
  /** A snapshot already read (nested views reuse their parent's bytes). */
  readonly bytes?: Buffer;
}

export const DEFAULT_SNAPSHOT = 64 * 1024;
/** Largest single field read: bytes()/cstring() of anything bigger is refused. */
export const MAX_FIELD_READ = 1 << 20;
const U64 = (1n << 64n) - 1n;
const PAGE = 4096n;

const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** Where a path ends: the field's address and type, and the snapshot holding it if any. */
interface Location {
  readonly info: FieldInfo;
  readonly address: bigint;
  /** True when the field lies in this view's own struct (no pointer followed): offsets index the snapshot. */
  readonly local: boolean;
  /** The path and how many of its `->` segments lead here: the label for messages is built only on error. */
  readonly path: string;
  readonly segments: number;
}

export class StructView {
  readonly registry: TypeRegistry;
  /** Resolved struct/union type id. */
  readonly typeId: number;
  readonly address: bigint;
  /** sizeof the struct. */
  readonly size: number;
  private readonly reader: ByteReader;
  private readonly snapshot: Buffer;

  constructor(
    registry: TypeRegistry,
    type: TypeRef,
    address: bigint,
    reader: ByteReader,
    options: ViewOptions = {},
  ) {
    this.registry = registry;
    this.typeId = registry.resolve(type);
    const t = registry.data.type(this.typeId);
    if (t.kind !== 'struct' && t.kind !== 'union') {
      const why = t.kind === 'fwd' ? 'is only declared in BTF' : 'is not a struct or union';
      throw new VigilError('os', 'usage', `cannot view ${registry.describe(type)}: it ${why}`);
    }
    if (address < 0n || address > U64)
      throw new VigilError('os', 'usage', `address ${hex(address)} out of range`);
    this.address = address;
    this.size = t.size;
    this.reader = reader;
    const want = Math.min(this.size, options.maxSnapshot ?? DEFAULT_SNAPSHOT);
    if (options.bytes && options.bytes.length >= want) {
      this.snapshot = options.bytes.subarray(0, want);
    } else {
      checkEnd(address, want);
      this.snapshot = readExact(reader, address, want);
    }
  }

  /** 'struct task_struct @ 0xffff…'. */
  toString(): string {
    return `${this.registry.describe(this.typeId)} @ ${hex(this.address)}`;
  }

  /** The raw snapshot (sizeof bytes, or the cap). */
  raw(): Buffer {
    return this.snapshot;
  }

  /** Field metadata for a path without `->` (type, offsets, bitfield width). */
  info(path: string): FieldInfo {
    return this.locate(path).info;
  }

  u8(path: string): number {
    return Number(this.fixed(path, 1, false));
  }
  u16(path: string): number {
    return Number(this.fixed(path, 2, false));
  }
  u32(path: string): number {
    return Number(this.fixed(path, 4, false));
  }
  s8(path: string): number {
    return Number(this.fixed(path, 1, true));
  }
  s16(path: string): number {
    return Number(this.fixed(path, 2, true));
  }
  s32(path: string): number {
    return Number(this.fixed(path, 4, true));
  }
  u64(path: string): bigint {
    return this.fixed(path, 8, false);
  }
  s64(path: string): bigint {
    return this.fixed(path, 8, true);
  }

  /** A pointer (or a pointer-sized integer such as `unsigned long`), unsigned. */
  ptr(path: string): bigint {
    const loc = this.locate(path);
    const t = this.registry.resolved(loc.info.type);
    const ps = this.registry.pointerSize;
    if (loc.info.bitfieldSize || !((t.kind === 'ptr' || t.kind === 'int') && this.scalarSize(t) === ps)) {
      throw this.mismatch(loc, 'a pointer');
    }
    return this.load(loc, ps, false);
  }

  /** An integer, enum, pointer or bitfield by its declared size and signedness. */
  int(path: string): bigint {
    const loc = this.locate(path);
    const t = this.registry.resolved(loc.info.type);
    if (loc.info.bitfieldSize) return this.loadBits(loc, t);
    if (t.kind !== 'int' && t.kind !== 'enum' && t.kind !== 'enum64' && t.kind !== 'ptr') {
      throw this.mismatch(loc, 'an integer');
    }
    const size = this.scalarSize(t);
    if (size > 16) throw this.mismatch(loc, 'an integer');
    return this.load(loc, size, t.kind !== 'ptr' && t.signed);
  }

  /** int() as a number; 'bound' when the value is not a safe integer. */
  number(path: string): number {
    const v = this.int(path);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new VigilError('os', 'bound', `${this.label(path)} = ${v} does not fit a number`);
    }
    return Number(v);
  }

  /** Any integer-like field (bool, int, bitfield) as true when non-zero. */
  bool(path: string): boolean {
    return this.int(path) !== 0n;
  }

  /** A bitfield (or any integer field), sign-extended when its integer type is signed. */
  bitfield(path: string): bigint {
    return this.int(path);
  }

  /** Name of an enum field's value, or undefined when no enumerator has it. */
  enumName(path: string): string | undefined {
    const loc = this.locate(path);
    const t = this.registry.resolved(loc.info.type);
    if (t.kind !== 'enum' && t.kind !== 'enum64') throw this.mismatch(loc, 'an enum');
    return this.registry.enumName(t.id, this.int(path));
  }

  /** Address of a field (not of a bitfield). */
  addressOf(path: string): bigint {
    const loc = this.locate(path);
    if (loc.info.bitfieldSize)
      throw new VigilError('os', 'usage', `${this.labelOf(loc)} is a bitfield: no address`);
    return loc.address;
  }

  /** A copy of a field's bytes. */
  bytes(path: string): Buffer {
    const loc = this.locate(path);
    if (loc.info.bitfieldSize)
      throw new VigilError('os', 'usage', `${this.labelOf(loc)} is a bitfield: no bytes`);
    if (loc.info.size > MAX_FIELD_READ)
      throw new VigilError('os', 'bound', `${this.labelOf(loc)} is ${loc.info.size} bytes`);
    return Buffer.from(this.fetch(loc, loc.info.size));
  }

  /**
   * A string field, sanitised: a char array (up to its size) or a `char *` (read through the reader up
   * to `max` bytes, page by page, stopping at NUL). A NULL pointer reads as ''.
   */
  cstring(path: string, max = 256): string {
    const loc = this.locate(path);
    const t = this.registry.resolved(loc.info.type);
    if (t.kind === 'array' && this.registry.sizeof(t.type) === 1) {
      return guestString(this.fetch(loc, Math.min(loc.info.size, MAX_FIELD_READ)), max);
    }
    if (t.kind === 'ptr' && !loc.info.bitfieldSize) {
      const p = this.load(loc, this.registry.pointerSize, false);
      return p === 0n ? '' : readGuestString(this.reader, p, max);
    }
    throw this.mismatch(loc, 'a char array or char pointer');
  }

  /** An embedded struct/union member as its own view (shares this view's bytes when it can). */
  field(path: string): StructView {
    const loc = this.locate(path);
    const t = this.registry.resolved(loc.info.type);
    if ((t.kind !== 'struct' && t.kind !== 'union') || loc.info.bitfieldSize) {
      throw this.mismatch(loc, 'an embedded struct or union');
    }
    const bytes = loc.local ? this.snapshot.subarray(loc.info.offset) : undefined;
    return new StructView(this.registry, t.id, loc.address, this.reader, bytes ? { bytes } : {});
  }

  /**
   * The struct a pointer field points to. `as` names the type when the pointer is `void *` or must be
   * cast. A NULL pointer is VigilError('os', 'not-found'); see tryDeref.
   */
  deref(path: string, as?: TypeRef): StructView {
    const v = this.tryDeref(path, as);
    if (!v) throw new VigilError('os', 'not-found', `NULL pointer ${this.label(path)}`);
    return v;
  }

  /** Like deref, but null for a NULL pointer. */
  tryDeref(path: string, as?: TypeRef): StructView | null {
    const loc = this.locate(path);
    const target = this.pointee(loc, as);
    const p = this.load(loc, this.registry.pointerSize, false);
    return p === 0n ? null : new StructView(this.registry, target, p, this.reader);
  }

  /** A view of the struct that embeds the struct at `ptr` as `memberPath` (the kernel's container_of). */
  containerOf(ptr: bigint, type: TypeRef, memberPath: string): StructView {
    return containerOf(this.registry, this.reader, ptr, type, memberPath);
  }

  private pointee(loc: Location, as: TypeRef | undefined): number {
    const t = this.registry.resolved(loc.info.type);
    const ptrSized = t.kind === 'int' && this.scalarSize(t) === this.registry.pointerSize;
    if (loc.info.bitfieldSize || (t.kind !== 'ptr' && !(ptrSized && as !== undefined))) {
      throw this.mismatch(loc, 'a pointer');
    }
    if (as !== undefined) return this.registry.id(as);
    const target = this.registry.resolved((t as { type: number }).type);
    if (target.kind !== 'struct' && target.kind !== 'union') {
      throw new VigilError(
        'os',
        'usage',
        `${this.labelOf(loc)} points to ${this.registry.typeName(target.id)}: name the struct to read it as`,
      );
    }
    return target.id;
  }

  /** Resolve a path to the field's location, following `->` through the reader. */
  private locate(path: string): Location {
    const segments = parsePath(path);
    let typeId = this.typeId;
    let base = this.address;
    let local = true;
    let loc: Location | undefined;
    for (let k = 0; k < segments.length; k++) {
      if (loc) {
        typeId = this.pointee(loc, undefined);
        base = this.load(loc, this.registry.pointerSize, false);
        if (base === 0n) throw new VigilError('os', 'not-found', `NULL pointer ${this.labelOf(loc)}`);
        local = false;
      }
      const info = this.registry.fieldSteps(typeId, segments[k]!);
      const address = base + BigInt(info.offset);
      loc = { info, address, local, path, segments: k + 1 };
      if (address > U64) {
        throw new VigilError(
          'os',
          'malformed',
          `${this.labelOf(loc)} lies past the end of the address space`,
        );
      }
    }
    return loc!;
  }

  /** Bytes of a located field: from the snapshot when inside it, else through the reader. */
  private fetch(loc: Location, length: number): Buffer {
    const off = loc.info.offset;
    if (loc.local && off + length <= this.snapshot.length) return this.snapshot.subarray(off, off + length);
    checkEnd(loc.address, length);
    return readExact(this.reader, loc.address, length);
  }

  private load(loc: Location, size: number, signed: boolean): bigint {
    const off = loc.info.offset;
    // The hot path: a scalar inside the snapshot, read in place.
    if (loc.local && off + size <= this.snapshot.length) return readLE(this.snapshot, off, size, signed);
    return readLE(this.fetch(loc, size), 0, size, signed);
  }

  private loadBits(loc: Location, t: BtfType): bigint {
    const { bitOffset, bitfieldSize } = loc.info;
    const shift = bitOffset % 8;
    const span = Math.ceil((shift + bitfieldSize) / 8);
    const raw = readLE(this.fetch(loc, span), 0, span, false);
    const v = (raw >> BigInt(shift)) & ((1n << BigInt(bitfieldSize)) - 1n);
    const signed = (t.kind === 'int' || t.kind === 'enum' || t.kind === 'enum64') && t.signed;
    return signed ? BigInt.asIntN(bitfieldSize, v) : v;
  }

  private fixed(path: string, size: number, signed: boolean): bigint {
    const loc = this.locate(path);
    const t = this.registry.resolved(loc.info.type);
    const scalar = t.kind === 'int' || t.kind === 'enum' || t.kind === 'enum64' || t.kind === 'ptr';
    if (loc.info.bitfieldSize || !scalar || this.scalarSize(t) !== size) {
      throw this.mismatch(loc, `a ${size}-byte integer`);
    }
    return this.load(loc, size, signed);
  }

  private scalarSize(t: BtfType): number {
    return t.kind === 'ptr' ? this.registry.pointerSize : 'size' in t ? t.size : 0;
  }

  private mismatch(loc: Location, wanted: string): VigilError {
    const what = loc.info.bitfieldSize
      ? `a ${loc.info.bitfieldSize}-bit bitfield`
      : `${this.registry.typeName(loc.info.type)} (${loc.info.size} bytes)`;
    return new VigilError('os', 'usage', `${this.labelOf(loc)} is ${what}, not ${wanted}`);
  }

  /** 'struct task_struct.mm->mmap_base', up to the segment a location reached. */
  private labelOf(loc: Location): string {
    const upTo = parsePath(loc.path).slice(0, loc.segments).map(formatSteps).join('->');
    return this.label(upTo);
  }

  private label(path: string): string {
    return `${this.registry.describe(this.typeId)}.${sanitize(path, 120)}`;
  }
}

/** The kernel's container_of: the `type` whose `memberPath` lies at `ptr`. */
export function containerOf(
  registry: TypeRegistry,
  reader: ByteReader,
  ptr: bigint,
  type: TypeRef,
  memberPath: string,
): StructView {
  const off = BigInt(registry.offsetof(type, memberPath));
  if (ptr < off) {
    throw new VigilError(
      'os',
      'malformed',
      `container_of(${hex(ptr)}): below offset ${off} of ${sanitize(memberPath, 80)}`,
    );
  }
  return new StructView(registry, type, ptr - off, reader);
}

function checkEnd(address: bigint, length: number): void {
  if (address + BigInt(length) - 1n > U64) {
    throw new VigilError(
      'os',
      'malformed',
      `read of ${length} bytes at ${hex(address)} wraps the address space`,
    );
  }
}

function readExact(reader: ByteReader, address: bigint, length: number): Buffer {
  const b = reader.read(address, length);
  if (b.length < length)
    throw new VigilError('os', 'unmapped', `short read at ${hex(address)}: ${b.length}/${length}`);
  return b.length === length ? b : b.subarray(0, length);
}

/** Little-endian integer of 1..16 bytes. */
function readLE(b: Buffer, at: number, size: number, signed: boolean): bigint {
  switch (size) {
    case 1:
      return BigInt(signed ? b.readInt8(at) : b.readUInt8(at));
    case 2:
      return BigInt(signed ? b.readInt16LE(at) : b.readUInt16LE(at));
    case 4:
      return BigInt(signed ? b.readInt32LE(at) : b.readUInt32LE(at));
    case 8:
      return signed ? b.readBigInt64LE(at) : b.readBigUInt64LE(at);
    default: {
      let v = 0n;
      for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[at + i]!);
      return signed ? BigInt.asIntN(size * 8, v) : v;
    }
  }
}

/** A NUL-terminated guest string, read page by page so an unmapped page after it does not matter. */
function readGuestString(reader: ByteReader, address: bigint, max: number): string {
  const limit = Math.min(Math.max(max, 0), MAX_FIELD_READ);
  const parts: Buffer[] = [];
  let got = 0;
  let at = address;
  while (got < limit) {
    const n = Math.min(Number(PAGE - (at % PAGE)), limit - got);
    checkEnd(at, n);
    const chunk = readExact(reader, at, n);
    const nul = chunk.indexOf(0);
    parts.push(nul >= 0 ? chunk.subarray(0, nul) : chunk);
    if (nul >= 0) break;
    got += n;
    at += BigInt(n);
  }
  return guestString(Buffer.concat(parts), max);
}
