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

/** One present leaf mapping of a page-table root. */
export interface Mapping {
  /** Canonical virtual address of the page. */
  va: bigint;
  /** Guest-physical address of the page. */
  paddr: bigint;
  /** Page size: 4 KiB, 2 MiB or 1 GiB on x86-64. */
  size: bigint;
  /** Effective permissions over all levels. */
  writable: boolean;
  user: boolean;
  nx: boolean;
  /** Name of the level whose entry maps the page (x86-64: PT, PD, PDPT). */
  level: string;
}

/** Virtual-address range, start inclusive, end exclusive (2n ** 64n for "to the top"). */
export interface VaRange {
  start: bigint;
  end: bigint;
}

/** Bounds for enumerating mappings: page tables are guest data and may be hostile. */
export interface MappingWalkOptions {
  /** Throw VigilError 'bound' after this many mappings. */
  maxEntries?: number;
  /** Throw VigilError 'bound' after visiting this many tables. */
  maxTables?: number;
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
  /** Fill `buf` from `va` on (crossing pages) and return it; throws like read. */
  readInto(va: bigint, buf: Buffer): Buffer;
  /** Read what is mapped; returns undefined instead of throwing. */
  tryRead(va: bigint, length: number): Buffer | undefined;
  readU64(va: bigint): bigint;
  readU32(va: bigint): number;
  /** Present leaf mappings in ascending VA order, optionally inside `range`; bounded by `options`. */
  walkMappings(range?: VaRange, options?: MappingWalkOptions): Iterable<Mapping>;
}
