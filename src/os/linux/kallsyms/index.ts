// kallsyms from guest-physical memory: find the tables, decode every symbol, look symbols up.
export {
  findKallsyms,
  decodeAround,
  tokenTableCandidates,
  MAX_SYMBOLS,
  type FindKallsymsOptions,
  type FoundTokenTable,
  type KallsymsLayout,
  type KallsymsResult,
} from './find.js';
export type { AddressMode } from './addresses.js';
export {
  SymbolTable,
  poolOf,
  DEFAULT_MAX_SYMBOL_OFFSET,
  type KernelSymbol,
  type NamePool,
  type SymbolLocation,
} from './symbol-table.js';
