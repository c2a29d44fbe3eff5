// The arch layer: virtual addresses over guest-physical memory, through one page-table root.

export type PagingMode = 4 | 5;

export interface Translation {
  /** Guest-physical address the virtual address maps to. */
  paddr: bigint;
  /** Size of the page that maps it: 4 KiB, 2 MiB or 1 GiB. */
  pageSize: bigint;
  writable: boolean;
  user: boolean;
  nx: boolean;
}

export interface AddressSpace {
  readonly root: bigint;
  readonly mode: PagingMode;
  /** Translate or return undefined when a level's entry is not present. */
  translate(va: bigint): bigint | undefined;
  /** Full translation with permissions, or throw VigilError(kind 'unmapped') naming the level. */
  translateDetailed(va: bigint): Translation;
  /** Read `length` bytes at `va`, crossing pages; throws 'unmapped' on a non-present page. */
  read(va: bigint, length: number): Buffer;
  /** Read what is mapped; returns undefined instead of throwing. */
  tryRead(va: bigint, length: number): Buffer | undefined;
  readU64(va: bigint): bigint;
  readU32(va: bigint): number;
}
