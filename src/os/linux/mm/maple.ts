// A bounded, cycle-safe walk of a kernel maple tree (lib/maple_tree.c, 6.1+), which holds a process's
// VMAs in mm->mm_mt. Encoded node pointers ("enodes") carry the node type in bits 3..6 and the 256-byte
// aligned node address above bit 7; the root pointer also has bit 1 set (an xarray "internal" entry), and
// a root without it is a single entry for index 0. Each node splits its [min, max] range at its pivots:
// slot i covers (pivot[i-1], pivot[i]], the last used slot ends at max. Where the data ends comes from
// ma_data_end(): the last pivot, or the node's metadata when that pivot is 0 (always for arange_64).
// Every count and layout comes from BTF; the guest controls every byte, so node types, pivots, depth
// and node count are all checked.
import { hex, offset, readPtr, tryOffset, type KernelReader } from '../fs/reader.js';
import type { TypeRegistry } from '../btf/registry.js';

export interface MapleEntry {
  /** First and last index (inclusive) the entry covers. */
  readonly first: bigint;
  readonly last: bigint;
  readonly entry: bigint;
}

export interface MapleWalkOptions {
  /** Name used in issues (default "maple"). */
  walker?: string;
  /** Entries yielded at most (default 1 Mi). */
  maxEntries?: number;
  /** Node levels below the root at most (default MAPLE_HEIGHT_MAX, 31). */
  maxDepth?: number;
}

export const MAPLE_HEIGHT_MAX = 31;
const ULONG_MAX = (1n << 64n) - 1n;
const NODE_MASK = 0xffn;
const TYPE_SHIFT = 3n;
const TYPE_MASK = 0xfn;

interface NodeKind {
  readonly pivots: number;
  readonly slots: number;
  readonly pivotOff: number;
  readonly slotOff: number;
  /** Offset of maple_metadata.end. */
  readonly metaEndOff: number | undefined;
}

interface MapleLayout {
  readonly nodeSize: number;
  readonly dense: number;
  readonly leaf64: number;
  readonly range64: number;
  readonly arange64: number;
  readonly range: NodeKind;
  readonly arange: NodeKind;
  /** maple_node.slot (dense nodes): offset and count. */
  readonly denseSlotOff: number;
  readonly denseSlots: number;
}

const layouts = new WeakMap<TypeRegistry, MapleLayout>();

function nodeKind(t: TypeRegistry, type: string): NodeKind {
  const pivot = t.member(type, 'pivot');
  const slot = t.member(type, 'slot');
  const meta = tryOffset(t, type, 'meta');
  const end = tryOffset(t, 'maple_metadata', 'end');
  return {
    pivots: Math.floor(pivot.size / 8),
    slots: Math.floor(slot.size / 8),
    pivotOff: pivot.offset,
    slotOff: slot.offset,
    metaEndOff: meta !== undefined && end !== undefined ? meta + end : undefined,
  };
}

function enumOr(t: TypeRegistry, name: string, fallback: number): number {
  try {
    return Number(t.enumValue(name, 'enum maple_type'));
  } catch {
    return fallback;
  }
}

export function mapleLayout(t: TypeRegistry): MapleLayout {
  let l = layouts.get(t);
  if (!l) {
    const slot = t.member('maple_node', 'slot');
    l = {
      nodeSize: Math.min(t.sizeof('maple_node'), 4096),
      dense: enumOr(t, 'maple_dense', 0),
      leaf64: enumOr(t, 'maple_leaf_64', 1),
      range64: enumOr(t, 'maple_range_64', 2),
      arange64: enumOr(t, 'maple_arange_64', 3),
      range: nodeKind(t, 'maple_range_64'),
      arange: nodeKind(t, 'maple_arange_64'),
      denseSlotOff: slot.offset,
      denseSlots: Math.floor(slot.size / 8),
    };
    layouts.set(t, l);
  }
  return l;
}

/** xa_is_internal: the low two bits are 10. */
export const isInternal = (e: bigint): boolean => (e & 3n) === 2n;
/** xa_is_node: an internal entry above the reserved range. */
export const isNode = (e: bigint): boolean => isInternal(e) && e > 4096n;

interface Pending {
  readonly enode: bigint;
  readonly min: bigint;
  readonly max: bigint;
  readonly depth: number;
}

/** Entries of the maple tree at `treeVa` (a struct maple_tree), in index order. */
export function* mapleEntries(
  k: KernelReader,
  treeVa: bigint,
  options: MapleWalkOptions = {},
): Generator<MapleEntry> {
  const walker = options.walker ?? 'maple';
  const maxEntries = options.maxEntries ?? 1 << 20;
  const maxDepth = options.maxDepth ?? MAPLE_HEIGHT_MAX;
  const issue = (kind: 'bound' | 'cycle' | 'unmapped' | 'malformed', detail: string): void =>
    k.issues.add(walker, kind, `maple tree ${hex(treeVa)}: ${detail}`);

  const root = readPtr(k, treeVa + BigInt(offset(k.types, 'maple_tree', 'ma_root')));
  if (root === undefined) return issue('unmapped', 'ma_root is not readable');
  if (root === 0n) return;
  if (!isNode(root)) {
    // A lone entry for index 0 is stored in the root itself; reserved internal values mean nothing.
    if (!isInternal(root)) yield { first: 0n, last: 0n, entry: root };
    return;
  }

  const L = mapleLayout(k.types);
  const seen = new Set<bigint>();
  const stack: Pending[] = [{ enode: root, min: 0n, max: ULONG_MAX, depth: 0 }];
  let yielded = 0;
  while (stack.length > 0) {
    const { enode, min, max, depth } = stack.pop()!;
    const type = Number((enode >> TYPE_SHIFT) & TYPE_MASK);
    const node = enode & ~NODE_MASK;
    // A broken node is skipped with its subtree (the rest of the tree is still worth reading); a bound
    // on the whole walk ends it.
    if (type !== L.dense && type !== L.leaf64 && type !== L.range64 && type !== L.arange64) {
      issue('malformed', `node ${hex(node)} has type ${type}`);
      continue;
    }
    if (depth > maxDepth) {
      issue('bound', `node ${hex(node)} is deeper than ${maxDepth} levels`);
      continue;
    }
    if (seen.has(node)) {
      issue('cycle', `node ${hex(node)} is reached twice`);
      continue;
    }
    // Every node holds at least one entry or child: more nodes than entries allowed is garbage.
    if (seen.size >= maxEntries) return issue('bound', `more than ${maxEntries} nodes`);
    seen.add(node);
    const b = k.space.tryRead(node, L.nodeSize);
    if (!b) {
      issue('unmapped', `node ${hex(node)} is not readable`);
      continue;
    }

    const ranges = type === L.dense ? denseRanges(L, min, max) : slotRanges(L, type, b, min, max);
    if (typeof ranges === 'string') {
      issue('malformed', `node ${hex(node)}: ${ranges}`);
      continue;
    }
    const isLeaf = type < L.range64;
    const slotOff =
      type === L.dense ? L.denseSlotOff : type === L.arange64 ? L.arange.slotOff : L.range.slotOff;
    const children: Pending[] = [];
    for (let i = 0; i < ranges.length; i++) {
      const [first, last] = ranges[i]!;
      const slot = b.readBigUInt64LE(slotOff + i * 8);
      if (isLeaf) {
        if (slot === 0n || isInternal(slot)) continue; // empty, or XA_ZERO_ENTRY and other reserved values
        if (yielded >= maxEntries) return issue('bound', `more than ${maxEntries} entries`);
        yielded++;
        yield { first, last, entry: slot };
      } else {
        if (slot === 0n) continue;
        // Children are plain enodes (node | type << 3 | MAPLE_ENODE_NULL); only the root carries bit 1.
        if ((slot & ~NODE_MASK) <= 4096n) {
          issue('malformed', `child ${i} of ${hex(node)} is not a node (${hex(slot)})`);
          continue;
        }
        children.push({ enode: slot, min: first, max: last, depth: depth + 1 });
      }
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
  }
}

/** Dense nodes: one index per slot from min on. */
function denseRanges(L: MapleLayout, min: bigint, max: bigint): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  for (let i = 0; i < L.denseSlots && min + BigInt(i) <= max; i++)
    out.push([min + BigInt(i), min + BigInt(i)]);
  return out;
}

/** The ranges of a range/arange node's used slots, or why they make no sense. */
function slotRanges(
  L: MapleLayout,
  type: number,
  b: Buffer,
  min: bigint,
  max: bigint,
): [bigint, bigint][] | string {
  const K = type === L.arange64 ? L.arange : L.range;
  const pivot = (i: number): bigint => b.readBigUInt64LE(K.pivotOff + i * 8);
  let end: number;
  const lastPivot = pivot(K.pivots - 1);
  if (type === L.arange64 || lastPivot === 0n) {
    if (K.metaEndOff === undefined) return 'no metadata in this kernel to find the data end';
    end = b[K.metaEndOff]!;
  } else {
    end = lastPivot === max ? K.pivots - 1 : K.pivots;
  }
  if (end >= K.slots) return `data end ${end} beyond ${K.slots} slots`;
  const out: [bigint, bigint][] = [];
  let first = min;
  for (let i = 0; i <= end; i++) {
    // mas_logical_pivot: past the pivots, or a 0 pivot after the first slot, means the node's max.
    let last = i < K.pivots ? pivot(i) : max;
    if (last === 0n && i > 0) last = max;
    if (last < first || last > max) return `pivot ${i} (${hex(last)}) outside ${hex(first)}..${hex(max)}`;
    out.push([first, last]);
    if (last === max) break;
    first = last + 1n;
  }
  return out;
}
