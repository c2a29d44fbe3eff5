// What the fs and mm walkers need from a Kernel: its types, its address space, its symbols and the
// issue collector. A Kernel fits as is; unit tests pass a small fake with synthetic BTF and memory.
// Walkers read whole structs once (tryRead) and pick fields at BTF offsets cached per type registry:
// a path or maple-tree walk makes thousands of reads, so per-field views would dominate.
import { VigilError } from '../../../util/errors.js';
import type { TypeRegistry } from '../btf/registry.js';
import type { WalkIssues } from '../walk.js';

export interface KernelReader {
  readonly types: TypeRegistry;
  readonly space: { tryRead(va: bigint, length: number): Buffer | undefined };
  readonly symbols: { address(name: string): bigint | undefined };
  /** Read at call time: Kernel.refresh() replaces the collector per sweep. */
  readonly issues: WalkIssues;
}

export const hex = (v: bigint): string => '0x' + v.toString(16);

const offsetCache = new WeakMap<TypeRegistry, Map<string, number | null>>();

/** Byte offset of `type.path` from BTF, or undefined when this kernel has no such field. Cached. */
export function tryOffset(types: TypeRegistry, type: string, path: string): number | undefined {
  let m = offsetCache.get(types);
  if (!m) offsetCache.set(types, (m = new Map()));
  const key = `${type}\0${path}`;
  const hit = m.get(key);
  if (hit !== undefined) return hit ?? undefined;
  let v: number | null = null;
  try {
    v = types.offsetof(type, path);
  } catch (e) {
    if (!(e instanceof VigilError)) throw e;
  }
  m.set(key, v);
  return v ?? undefined;
}

/** Byte offset of `type.path`; VigilError 'unsupported' naming the field when the kernel lacks it. */
export function offset(types: TypeRegistry, type: string, path: string): number {
  const v = tryOffset(types, type, path);
  if (v === undefined) {
    throw new VigilError('os', 'unsupported', `this kernel's BTF has no ${type}.${path}`);
  }
  return v;
}

const sizeCache = new WeakMap<TypeRegistry, Map<string, number>>();

/** sizeof a struct, cached; capped so a hostile BTF cannot make us read megabytes per object. */
export function sizeOf(types: TypeRegistry, type: string, cap = 8192): number {
  let m = sizeCache.get(types);
  if (!m) sizeCache.set(types, (m = new Map()));
  let v = m.get(type);
  if (v === undefined) {
    v = Math.min(types.sizeof(type), cap);
    m.set(type, v);
  }
  return v;
}

/** Little-endian reads from a struct snapshot; undefined past its end (a capped or short snapshot). */
export function u64(b: Buffer, off: number): bigint {
  return off + 8 <= b.length ? b.readBigUInt64LE(off) : 0n;
}
export function u32(b: Buffer, off: number): number {
  return off + 4 <= b.length ? b.readUInt32LE(off) : 0;
}
export function u16(b: Buffer, off: number): number {
  return off + 2 <= b.length ? b.readUInt16LE(off) : 0;
}

/** Read a struct of `type` at `va` whole (sizeof bytes), or undefined when any of it is unmapped. */
export function readStruct(k: KernelReader, type: string, va: bigint): Buffer | undefined {
  if (va === 0n || va >= 1n << 64n) return undefined;
  return k.space.tryRead(va, sizeOf(k.types, type));
}

/** A kernel pointer at `va`, or undefined when unmapped. */
export function readPtr(k: KernelReader, va: bigint): bigint | undefined {
  const b = k.space.tryRead(va, 8);
  return b ? b.readBigUInt64LE(0) : undefined;
}

/** Per-reader memo of symbol addresses (symbols never change within a boot). */
const symCache = new WeakMap<object, Map<string, bigint | undefined>>();
export function symbolAddress(k: KernelReader, name: string): bigint | undefined {
  let m = symCache.get(k.symbols);
  if (!m) symCache.set(k.symbols, (m = new Map()));
  if (!m.has(name)) m.set(name, k.symbols.address(name));
  return m.get(name);
}

/** Raw bytes of a NUL-terminated kernel string (up to `max`), read page by page; undefined if unmapped. */
export function readCBytes(k: KernelReader, va: bigint, max: number): Buffer | undefined {
  if (va === 0n) return undefined;
  const parts: Buffer[] = [];
  let got = 0;
  let at = va;
  while (got < max) {
    const n = Math.min(4096 - Number(at & 0xfffn), max - got);
    const chunk = k.space.tryRead(at, n);
    if (!chunk) return got > 0 ? Buffer.concat(parts) : undefined;
    const nul = chunk.indexOf(0);
    if (nul >= 0) {
      parts.push(chunk.subarray(0, nul));
      break;
    }
    parts.push(chunk);
    got += n;
    at += BigInt(n);
  }
  return Buffer.concat(parts);
}

const layoutCache = new WeakMap<TypeRegistry, Map<string, unknown>>();

/**
 * A walker's field offsets, resolved once per type registry by `build` and cached under `key`: hot
 * loops then read plain numbers instead of looking fields up by name for every object.
 */
export function layout<T>(types: TypeRegistry, key: string, build: (t: TypeRegistry) => T): T {
  let m = layoutCache.get(types);
  if (!m) layoutCache.set(types, (m = new Map()));
  let v = m.get(key) as T | undefined;
  if (v === undefined) {
    v = build(types);
    m.set(key, v);
  }
  return v;
}
