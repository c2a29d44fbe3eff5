// Memory dumps, format detected from content: QEMU ELF core, LiME, or raw physical memory.

import { closeSync } from 'node:fs';
import { openReadOnly, readUpTo, regularFileSize } from './fileio.js';
import { MemoryFile } from './filememory.js';
import { readElfCore } from './elfcore.js';
import { SNIFF_BYTES, sniffFormat } from './formats.js';
import type { RamLayout } from './layout.js';
import { readLime } from './lime.js';
import { rawMemoryFile } from './ramfile.js';

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * Open a memory dump read-only. ELF cores and LiME files carry their own map; a raw image is laid out
 * by `layout` (default 'q35': a raw pmemsave of a guest up to 2.75 GiB is flat 0..size either way).
 */
export function openDump(path: string, layout: RamLayout = 'q35'): MemoryFile {
  const fd = openReadOnly(path, 'dump');
  try {
    const size = regularFileSize(fd, path);
    const format = sniffFormat(readUpTo(fd, SNIFF_BYTES, 0), size, path);
    if (format === 'elf-core') {
      const core = readElfCore(fd, size, path);
      const regs =
        core.cpus.length > 0 ? `, registers of ${plural(core.cpus.length, 'vCPU')}` : ', no registers';
      return new MemoryFile({
        fd,
        path,
        format,
        live: false,
        description: `ELF core ${path} (${plural(core.segments.length, 'segment')}${regs})`,
        segments: core.segments,
        cpus: core.cpus,
      });
    }
    if (format === 'lime') {
      const segments = readLime(fd, size, path);
      return new MemoryFile({
        fd,
        path,
        format,
        live: false,
        description: `LiME dump ${path} (${plural(segments.length, 'range')})`,
        segments,
      });
    }
    return rawMemoryFile(fd, path, size, layout, false);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}
