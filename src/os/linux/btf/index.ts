// Kernel types from the kernel's own BTF: find it in guest memory, parse it, look types up by name,
// and read structs through typed views.
export * from './types.js';
export { BtfData, parseBtf, parseBtfHeader, type BtfHeader } from './parse.js';
export { parsePath, type ParsedPath, type PathStep } from './path.js';
export { TypeRegistry, type FieldInfo, type TypeRef } from './registry.js';
export { StructView, containerOf, type ByteReader, type ViewOptions } from './view.js';
export {
  findVmlinuxBtf,
  scanBtfHeaders,
  type BtfCandidate,
  type FindBtfOptions,
  type FoundBtf,
} from './find.js';
