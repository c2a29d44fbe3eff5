// What the network walkers need from a Kernel: typed views, pointer reads, bulk reads for hash-bucket
// arrays, symbols and the issue collector. A Kernel fits as is; unit tests hand in a fake over synthetic
// BTF and memory.
import { isVigilError, VigilError } from '../../../util/errors.js';
import type { StructView, TypeRef, TypeRegistry } from '../btf/index.js';
import type { WalkIssueKind, WalkIssues } from '../walk.js';

export interface NetKernel {
  readonly types: TypeRegistry;
  readonly issues: WalkIssues;
  readonly symbols: { address(name: string): bigint | undefined };
  readonly space: { tryRead(va: bigint, length: number): Buffer | undefined };
  view(type: TypeRef, va: bigint): StructView;
  readPointer(va: bigint): bigint | undefined;
  symbolize(va: bigint): string | undefined;
}

export const hex = (v: bigint): string => '0x' + v.toString(16);

/** Map a VigilError's kind onto the kinds a walk issue can have. */
function issueKind(e: VigilError): WalkIssueKind {
  return e.kind === 'unmapped' || e.kind === 'bound' ? e.kind : 'malformed';
}

/**
 * Run `fn`; on a VigilError (unmapped, malformed, a field missing from this kernel's BTF…) record an
 * issue for `walker` and return undefined. Anything else is a bug and propagates.
 */
export function attempt<T>(k: NetKernel, walker: string, what: string, fn: () => T): T | undefined {
  try {
    return fn();
  } catch (e) {
    if (!isVigilError(e)) throw e;
    k.issues.add(walker, issueKind(e), `${what}: ${e.message}`);
    return undefined;
  }
}

/** True when `type` has a member `name` in this kernel's BTF (fields move between kernel versions). */
export function hasMember(types: TypeRegistry, type: TypeRef, name: string): boolean {
  try {
    types.field(type, name);
    return true;
  } catch (e) {
    if (isVigilError(e)) return false;
    throw e;
  }
}

const CHUNK = 64 * 1024;
/** Unreadable stretches of one bucket array reported one by one, before a single summary. */
const MAX_UNMAPPED_REPORTS = 4;

/**
 * The non-empty heads of a hash-bucket array: word `offset` of each of `count` elements of `stride` bytes
 * at `va`, read a chunk of whole elements at a time. Empty heads (NULL, or an odd hlist_nulls end marker)
 * are skipped; a chunk that is not mapped is reported and skipped. `count` must be bounded by the caller.
 */
export function* bucketHeads(
  k: NetKernel,
  walker: string,
  va: bigint,
  count: number,
  stride: number,
  offset = 0,
): Generator<bigint> {
  check(stride >= offset + 8, `bucket stride ${stride} too small`);
  const perChunk = Math.max(1, Math.floor(CHUNK / stride));
  let unmapped = 0;
  for (let i0 = 0; i0 < count; i0 += perChunk) {
    const n = Math.min(perChunk, count - i0);
    const at = va + BigInt(i0 * stride);
    const buf = k.space.tryRead(at, n * stride);
    if (buf) {
      yield* heads(buf, n, stride, offset);
      continue;
    }
    // Part of the chunk is unreadable: take what is readable, a page's worth of buckets at a time.
    if (++unmapped <= MAX_UNMAPPED_REPORTS) {
      k.issues.add(walker, 'unmapped', `bucket array at ${hex(at)} is not fully readable`);
    }
    const perPage = Math.max(1, Math.floor(4096 / stride));
    for (let j = 0; j < n; j += perPage) {
      const m = Math.min(perPage, n - j);
      const part = k.space.tryRead(at + BigInt(j * stride), m * stride);
      if (part) yield* heads(part, m, stride, offset);
    }
  }
  if (unmapped > MAX_UNMAPPED_REPORTS) {
    k.issues.add(
      walker,
      'unmapped',
      `${unmapped} chunks of the bucket array at ${hex(va)} are not fully readable`,
    );
  }
}

function* heads(buf: Buffer, n: number, stride: number, offset: number): Generator<bigint> {
  for (let i = 0; i < n; i++) {
    const head = buf.readBigUInt64LE(i * stride + offset);
    if (head !== 0n && (head & 1n) === 0n) yield head;
  }
}

/** Throw a 'malformed' VigilError unless `cond` holds. */
export function check(cond: boolean, message: string): asserts cond {
  if (!cond) throw new VigilError('os', 'malformed', message);
}
