// A memory file open for reading: a live RAM file or a dump. It says which it is, because caches over a
// live file must expire while a dump never changes.

import type { DumpCpu } from './elfcore.js';
import { type Segment, SegmentedMemory } from './segments.js';

export type MemoryFileFormat = 'ram-file' | 'raw' | 'elf-core' | 'lime';

export interface MemoryFileOptions {
  readonly fd: number;
  readonly path: string;
  readonly format: MemoryFileFormat;
  readonly live: boolean;
  readonly description: string;
  readonly segments: readonly Segment[];
  readonly cpus?: readonly DumpCpu[];
}

export class MemoryFile extends SegmentedMemory {
  readonly path: string;
  readonly format: MemoryFileFormat;
  /** True when a running VM writes these bytes (RAM file): caches over it must expire. */
  readonly live: boolean;
  /** vCPU registers the file recorded (QEMU ELF cores); empty for other formats. */
  readonly cpus: readonly DumpCpu[];

  constructor(o: MemoryFileOptions) {
    super({ fd: o.fd, description: o.description, segments: o.segments, sourceName: o.path });
    this.path = o.path;
    this.format = o.format;
    this.live = o.live;
    this.cpus = Object.freeze([...(o.cpus ?? [])]);
  }
}
