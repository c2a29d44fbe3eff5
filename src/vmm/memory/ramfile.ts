// A live VM's RAM as a file: QEMU `-object memory-backend-file,share=on` (or memfd/hugetlbfs) puts guest
// RAM in a file laid out as the backend sees it; the layout maps it into guest-physical space. A raw dump
// is the same thing frozen.

import { closeSync } from 'node:fs';
import { openReadOnly, regularFileSize } from './fileio.js';
import { MemoryFile } from './filememory.js';
import { type RamLayout, describeLayout, resolveLayout } from './layout.js';

/**
 * Open a shared-memory RAM file read-only. `layout`: the backend's guest-physical map (parseMtree of
 * `info mtree -f`), or a machine type's default split of the file size ('q35' unless told).
 */
export function openRamFile(path: string, layout: RamLayout = 'q35'): MemoryFile {
  const fd = openReadOnly(path, 'RAM file');
  try {
    return rawMemoryFile(fd, path, regularFileSize(fd, path), layout, true);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Memory over a raw image of `size` bytes open at `fd`: a live RAM file, or a dump when not `live`. */
export function rawMemoryFile(
  fd: number,
  path: string,
  size: number,
  layout: RamLayout,
  live: boolean,
): MemoryFile {
  const segments = resolveLayout(layout, BigInt(size), `${live ? 'RAM file' : 'dump'} ${path}`).map((s) => ({
    start: s.start,
    size: s.size,
    offset: s.backendOffset,
  }));
  return new MemoryFile({
    fd,
    path,
    format: live ? 'ram-file' : 'raw',
    live,
    description: `${live ? 'RAM file' : 'raw dump'} ${path} (${describeLayout(layout)})`,
    segments,
  });
}
