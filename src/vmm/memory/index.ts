// Guest-physical memory sources: live RAM files, /proc/PID/mem of a QEMU, and dumps (ELF core, LiME, raw).

export {
  type Segment,
  type SegmentedMemoryOptions,
  SegmentedMemory,
  normalizeSegments,
  MAX_READ,
} from './segments.js';
export { type RamSegment, type RamLayout, defaultLayout, lowMemory, resolveLayout } from './layout.js';
export { type MtreeSegment, type RamBlock, parseMtree, parseMtreeAll, parseInfoRamblock } from './mtree.js';
export { type MemoryFileFormat, MemoryFile } from './filememory.js';
export { type DumpCpu, parseCoreNotes } from './elfcore.js';
export { type ImageFormat, sniffFormat } from './formats.js';
export { openRamFile } from './ramfile.js';
export { openDump } from './dump.js';
export { type OpenMemoryFileOptions, openMemoryFile, onRamFileSystem, isMappedByAProcess } from './probe.js';
export {
  type HostMapping,
  type RamBlockSize,
  type MemorySample,
  type ProcessMemoryOptions,
  type BlockMapping,
  ProcessMemory,
  openProcessMemory,
  parseMaps,
  checkQemu,
} from './procmem.js';
