// What the task walkers need from a Kernel. A Kernel fits as is; unit tests pass a small fake with
// synthetic BTF and sparse memory (testkit.ts). Reads never throw for unmapped memory: tryRead returns
// undefined, and the walkers turn that into an issue or a note on the task.
import type { KernelReader } from '../fs/reader.js';

/** Virtual reads that report unmapped memory as undefined. */
export interface TryReader {
  tryRead(va: bigint, length: number): Buffer | undefined;
}

export interface TaskKernel extends KernelReader {
  readonly space: TryReader;
  /** A process's address space from its mm->pgd (kernel virtual); throws VigilError when unusable. */
  userSpace(pgdVa: bigint): TryReader;
  /**
   * On a live guest: drop cached guest memory so the next reads are fresh, and return true. On a dump
   * (nothing can change) return false. Walks use it to re-read a list that changed under them.
   */
  rereadLive?(): boolean;
}

export const hex = (v: bigint): string => '0x' + v.toString(16);

const U64_MAX = (1n << 64n) - 1n;

/** Bytes at `va`, or undefined when unmapped or when the range leaves the 64-bit address space (garbage). */
export function tryReadAt(r: TryReader, va: bigint, length: number): Buffer | undefined {
  if (va < 0n || va + BigInt(length) - 1n > U64_MAX) return undefined;
  return r.tryRead(va, length);
}

/** A kernel pointer at `va`, or undefined when unmapped. */
export function readPointer(k: TaskKernel, va: bigint): bigint | undefined {
  const b = tryReadAt(k.space, va, 8);
  return b ? b.readBigUInt64LE(0) : undefined;
}
