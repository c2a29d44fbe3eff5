// Bounded walk of a `struct hlist_nulls_head` chain. The kernel ends these lists not with NULL but with an
// odd "nulls" marker (the bucket number shifted left, low bit set), so a lockless reader can tell that a
// socket moved to another bucket under it. A node pointer is even; any odd value ends the chain.
import type { PointerReader, WalkOptions } from '../walk.js';

const hex = (v: bigint) => '0x' + v.toString(16);

/** True when a value read from an hlist_nulls chain is an end marker rather than a node. */
export const isNullsMarker = (v: bigint): boolean => (v & 1n) === 1n;

/**
 * Walk an hlist_nulls chain starting from `first` (the value of the head's `first` pointer). Yields each
 * hlist_nulls_node address; `next` sits at offset 0 of the node. A NULL pointer also ends the chain (plain
 * hlist heads share this walker), so it serves both list kinds.
 */
export function* hlistNullsChain(read: PointerReader, first: bigint, opts: WalkOptions): Generator<bigint> {
  const seen = new Set<bigint>();
  let node: bigint | undefined = first;
  let count = 0;
  while (node !== undefined && node !== 0n && !isNullsMarker(node)) {
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
