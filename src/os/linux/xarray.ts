// A bounded, cycle-safe walk of a kernel XArray (include/linux/xarray.h; the IDR behind PID numbers is one).
// An xarray is a radix tree of xa_node: each node has 2^XA_CHUNK_SHIFT slots (64) and a `shift` (the index
// bits below it); a slot holds NULL, a user entry, or an internal entry (low bits 10): a child node
// (above 4096), a sibling (a multi-index entry's other slots), or the retry/zero markers. The guest is
// hostile: node shifts must step down by XA_CHUNK_SHIFT to 0, nodes are visited once, and the walk
// stops at its bounds with an issue in kernel.issues.
import { VigilError } from '../../util/errors.js';
import type { TypeRegistry } from './btf/registry.js';
import type { WalkIssues } from './walk.js';

export interface XarrayReader {
  readonly types: TypeRegistry;
  readonly space: { tryRead(va: bigint, length: number): Buffer | undefined };
  readonly issues: WalkIssues;
}

export interface XarrayEntry {
  /** The entry's index in the array. */
  index: bigint;
  /** The entry as stored: a pointer, or a tagged value (low bit set: xa_is_value). */
  entry: bigint;
}

export interface XarrayWalkOptions {
  /** Name used in issues. */
  walker: string;
  /** Stop after this many entries. */
  max: number;
  /** Stop after visiting this many nodes (default: max / 4 + 64, room for a sparse tree). */
  maxNodes?: number;
}

interface NodeLayout {
  shift: number;
  slots: number;
  chunkShift: number;
  span: number;
}

const layouts = new WeakMap<TypeRegistry, { head: number; node: NodeLayout }>();

function layout(types: TypeRegistry): { head: number; node: NodeLayout } {
  let l = layouts.get(types);
  if (!l) {
    const slots = types.field('xa_node', 'slots');
    const { count } = types.arrayInfo(slots.type);
    const chunkShift = Math.log2(count);
    if (!Number.isInteger(chunkShift) || chunkShift < 1 || chunkShift > 8) {
      throw new VigilError('os', 'malformed', `xa_node.slots has ${count} entries: not a power of two`);
    }
    l = {
      head: types.offsetof('xarray', 'xa_head'),
      node: {
        shift: types.offsetof('xa_node', 'shift'),
        slots: slots.offset,
        chunkShift,
        span: slots.offset + count * 8,
      },
    };
    layouts.set(types, l);
  }
  return l;
}

const hex = (v: bigint): string => '0x' + v.toString(16);
const U64_MAX = (1n << 64n) - 1n;
/** A read that treats a range past the top of the address space (a garbage pointer) as unmapped. */
const tryRead = (k: XarrayReader, va: bigint, length: number): Buffer | undefined =>
  va < 0n || va + BigInt(length) - 1n > U64_MAX ? undefined : k.space.tryRead(va, length);
/** xa_is_internal: low two bits 10. */
const isInternal = (e: bigint): boolean => (e & 3n) === 2n;
/** xa_is_node: an internal entry above 4096 (smaller internal entries are siblings and markers). */
const isNode = (e: bigint): boolean => isInternal(e) && e > 4096n;

/**
 * Every present entry of the xarray at `xarrayVa` (a `struct xarray`), in index order. Sibling, retry
 * and zero entries are skipped; user entries (pointers or tagged values) are yielded as stored, a
 * multi-index entry once, at its first index.
 */
export function* xarrayEntries(
  k: XarrayReader,
  xarrayVa: bigint,
  opts: XarrayWalkOptions,
): Generator<XarrayEntry> {
  const L = layout(k.types);
  const N = L.node;
  const maxNodes = opts.maxNodes ?? Math.floor(opts.max / 4) + 64;
  const head = tryRead(k, xarrayVa + BigInt(L.head), 8);
  if (!head) {
    k.issues.add(opts.walker, 'unmapped', `xarray ${hex(xarrayVa)} is not readable`);
    return;
  }
  const root = head.readBigUInt64LE(0);
  if (root === 0n) return;
  if (!isNode(root)) {
    // A single entry at index 0 lives in xa_head itself.
    if (!isInternal(root)) yield { index: 0n, entry: root };
    return;
  }
  const seen = new Set<bigint>();
  const slotCount = 1 << N.chunkShift;
  let yielded = 0;

  /** Read and check a node; undefined (with an issue) when it cannot be entered. */
  const open = (va: bigint, base: bigint, expected: number | undefined): Frame | undefined => {
    if (seen.has(va)) {
      k.issues.add(opts.walker, 'cycle', `xa_node ${hex(va)} is reached twice`);
      return undefined;
    }
    seen.add(va);
    const b = tryRead(k, va, N.span);
    if (!b) {
      k.issues.add(opts.walker, 'unmapped', `xa_node ${hex(va)} is not readable`);
      return undefined;
    }
    const shift = b.readUInt8(N.shift);
    // Indexes are unsigned longs: a node's shift is a whole number of chunks below 64. Each child's shift
    // is its parent's less one chunk, so the depth is bounded too.
    if (shift % N.chunkShift !== 0 || shift >= 64 || (expected !== undefined && shift !== expected)) {
      const want = expected === undefined ? '' : ` (its parent says ${expected})`;
      k.issues.add(opts.walker, 'malformed', `xa_node ${hex(va)} has shift ${shift}${want}`);
      return undefined;
    }
    return { b, base, shift, slot: 0 };
  };

  const first = open(root - 2n, 0n, undefined);
  if (!first) return;
  const stack: Frame[] = [first];
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    if (f.slot >= slotCount) {
      stack.pop();
      continue;
    }
    const slot = f.slot++;
    const e = f.b.readBigUInt64LE(N.slots + slot * 8);
    if (e === 0n) continue;
    const index = f.base + (BigInt(slot) << BigInt(f.shift));
    if (isInternal(e)) {
      if (!isNode(e)) continue; // sibling, retry or zero entry
      if (f.shift === 0) {
        k.issues.add(opts.walker, 'malformed', `a leaf xa_node points to another node (${hex(e)})`);
        continue;
      }
      if (seen.size >= maxNodes) {
        k.issues.add(opts.walker, 'bound', `stopped at the bound of ${maxNodes} nodes`);
        return;
      }
      const child = open(e - 2n, index, f.shift - N.chunkShift);
      if (child) stack.push(child);
      continue;
    }
    if (yielded >= opts.max) {
      k.issues.add(opts.walker, 'bound', `stopped at the bound of ${opts.max} entries`);
      return;
    }
    yielded++;
    yield { index, entry: e };
  }
}

interface Frame {
  /** The node's bytes up to the end of its slots. */
  b: Buffer;
  /** Index of slot 0. */
  base: bigint;
  shift: number;
  /** Next slot to visit. */
  slot: number;
}
