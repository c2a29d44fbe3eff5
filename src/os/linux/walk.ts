// Bounded walks over guest linked structures. The guest is hostile: a list can loop, point into
// unmapped memory, or be a billion entries long. Every walk here stops at a bound, detects cycles,
// and records why it stopped in a WalkIssues collector, so a policy can turn a truncated walk into a
// finding instead of vigil hanging or silently reporting less.

export type WalkIssueKind = 'bound' | 'cycle' | 'unmapped' | 'malformed';

export interface WalkIssue {
  walker: string;
  kind: WalkIssueKind;
  detail: string;
}

/** Collects why walks stopped early during one sweep. */
export class WalkIssues {
  readonly items: WalkIssue[] = [];
  add(walker: string, kind: WalkIssueKind, detail: string): void {
    // Cap the collector too: a guest could make every walk fail.
    if (this.items.length < 1000) this.items.push({ walker, kind, detail });
  }
}

/** Reads one pointer-sized value; returns undefined when the address is not mapped. */
export type PointerReader = (va: bigint) => bigint | undefined;

export interface WalkOptions {
  /** Name used in issues, e.g. "tasks". */
  walker: string;
  /** Maximum number of entries to yield. */
  max: number;
  issues?: WalkIssues;
}

const hex = (v: bigint) => '0x' + v.toString(16);

/**
 * Walk a circular `struct list_head` list. `head` is the address of the list head; `nextOffset` the
 * offset of `next` inside list_head (0). Yields the address of each entry's list_head (not the head's).
 */
export function* listHeadEntries(read: PointerReader, head: bigint, opts: WalkOptions): Generator<bigint> {
  const seen = new Set<bigint>();
  let node = read(head);
  let count = 0;
  while (node !== undefined && node !== head) {
    if (node === 0n) {
      opts.issues?.add(opts.walker, 'malformed', `NULL next pointer after ${count} entries`);
      return;
    }
    if (seen.has(node)) {
      opts.issues?.add(opts.walker, 'cycle', `list loops back to ${hex(node)} after ${count} entries`);
      return;
    }
    if (count >= opts.max) {
      opts.issues?.add(opts.walker, 'bound', `stopped at the bound of ${opts.max} entries`);
      return;
    }
    seen.add(node);
    count++;
    yield node;
    const next = read(node);
    if (next === undefined) {
      opts.issues?.add(opts.walker, 'unmapped', `entry ${hex(node)} is not readable`);
      return;
    }
    node = next;
  }
  if (node === undefined) opts.issues?.add(opts.walker, 'unmapped', `list head ${hex(head)} is not readable`);
}

/**
 * Walk a singly linked chain whose `next` pointer sits at offset 0 of each node, starting from `first`
 * (the head's first pointer). `isEnd` says which values end the chain: NULL for a plain hlist, also any odd
 * "nulls" marker for an hlist_nulls. Yields each node address.
 */
export function* chainEntries(
  read: PointerReader,
  first: bigint,
  opts: WalkOptions,
  isEnd: (v: bigint) => boolean = (v) => v === 0n,
): Generator<bigint> {
  const seen = new Set<bigint>();
  let node: bigint | undefined = first;
  let count = 0;
  while (!isEnd(node)) {
    if (seen.has(node)) {
      opts.issues?.add(opts.walker, 'cycle', `chain loops back to ${hex(node)} after ${count} entries`);
      return;
    }
    if (count >= opts.max) {
      opts.issues?.add(opts.walker, 'bound', `stopped at the bound of ${opts.max} entries`);
      return;
    }
    seen.add(node);
    count++;
    yield node;
    const at: bigint = node;
    node = read(at);
    if (node === undefined) {
      opts.issues?.add(opts.walker, 'unmapped', `chain node ${hex(at)} is not readable`);
      return;
    }
  }
}

/** Walk a NULL-terminated `struct hlist_head` chain: yields each hlist_node address. */
export function* hlistEntries(read: PointerReader, head: bigint, opts: WalkOptions): Generator<bigint> {
  const first = read(head);
  if (first === undefined) {
    opts.issues?.add(opts.walker, 'unmapped', `hlist head ${hex(head)} is not readable`);
    return;
  }
  yield* chainEntries(read, first, opts);
}

/**
 * In-order walk of a `struct rb_root` tree. `left`/`right` are the offsets of rb_left/rb_right inside
 * rb_node. Yields rb_node addresses. Iterative with an explicit, bounded stack.
 */
export function* rbTreeNodes(
  read: PointerReader,
  root: bigint,
  offsets: { left: number; right: number },
  opts: WalkOptions,
): Generator<bigint> {
  const seen = new Set<bigint>();
  const stack: bigint[] = [];
  let node = read(root) ?? 0n;
  let count = 0;
  while (node !== 0n || stack.length > 0) {
    while (node !== 0n) {
      if (seen.has(node)) {
        opts.issues?.add(opts.walker, 'cycle', `tree revisits ${hex(node)}`);
        return;
      }
      if (stack.length >= 64 || seen.size >= opts.max) {
        opts.issues?.add(opts.walker, 'bound', `tree deeper than 64 or larger than ${opts.max} nodes`);
        return;
      }
      seen.add(node);
      stack.push(node);
      const left = read(node + BigInt(offsets.left));
      if (left === undefined) {
        opts.issues?.add(opts.walker, 'unmapped', `tree node ${hex(node)} is not readable`);
        return;
      }
      node = left;
    }
    const top = stack.pop()!;
    count++;
    yield top;
    node = read(top + BigInt(offsets.right)) ?? 0n;
  }
  void count;
}
