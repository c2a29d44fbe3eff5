// Bounded walk of a `struct hlist_nulls_head` chain. The kernel ends these lists not with NULL but with an
// odd "nulls" marker (the bucket number shifted left, low bit set), so a lockless reader can tell that a
// socket moved to another bucket under it. A node pointer is even; any odd value ends the chain.
import { chainEntries, type PointerReader, type WalkOptions } from '../walk.js';

/** True when a value read from an hlist_nulls chain is an end marker rather than a node. */
export const isNullsMarker = (v: bigint): boolean => (v & 1n) === 1n;

/**
 * Walk an hlist_nulls chain starting from `first` (the value of the head's `first` pointer). Yields each
 * hlist_nulls_node address; `next` sits at offset 0 of the node. A NULL pointer also ends the chain (plain
 * hlist heads share this walker), so it serves both list kinds.
 */
export function hlistNullsChain(read: PointerReader, first: bigint, opts: WalkOptions): Generator<bigint> {
  return chainEntries(read, first, opts, (v) => v === 0n || isNullsMarker(v));
}
