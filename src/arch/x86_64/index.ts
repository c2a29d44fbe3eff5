// x86-64 address translation: paging as data, the page-table address space, its caches and mapping walks.

export { PageTableAddressSpace, MAX_READ_LENGTH } from './address-space.js';
export { PagingCache, type PagingCacheOptions, type PagingCacheStats } from './cache.js';
export { coalesceMappings, type Mapping, type Region, type VaRange, type WalkOptions } from './mappings.js';
export {
  PAGING,
  PTE,
  PAGE_SIZE_4K,
  PAGE_SIZE_2M,
  PAGE_SIZE_1G,
  canonicalize,
  isCanonical,
  pagingModeFromCr4,
  rootFromCr3,
  type LevelName,
  type PagingDef,
  type PagingLevel,
} from './paging.js';
