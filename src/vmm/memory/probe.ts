// Point vigil at a file and get memory: a live RAM file (/dev/shm, hugetlbfs) or a dump of any format
// we read. ELF and LiME announce themselves by content; a raw image is live RAM when it sits on a RAM
// file system. Content is trusted only when no process maps the file: the first bytes of a live RAM
// file are guest-physical page 0, which the guest writes, so a hostile guest could plant an ELF or LiME
// header there and have vigil parse a forged view of its memory.

import { closeSync, readFileSync, readdirSync, statSync, statfsSync } from 'node:fs';
import { VigilError, describeSysError } from '../../util/errors.js';
import { openDump } from './dump.js';
import { openReadOnly, readUpTo, regularFileSize } from './fileio.js';
import type { MemoryFile } from './filememory.js';
import { SNIFF_BYTES, sniffFormat } from './formats.js';
import type { RamLayout } from './layout.js';
import { rawMemoryFile } from './ramfile.js';

const TMPFS_MAGIC = 0x01021994;
const HUGETLBFS_MAGIC = 0x958458f6;

export interface OpenMemoryFileOptions {
  /**
   * Whether a raw image is a running VM's RAM (its bytes change, caches must expire). Default: yes when
   * the file is on tmpfs or hugetlbfs, where QEMU memory backends live.
   */
  readonly live?: boolean;
  /** Where procfs is mounted (tests). */
  readonly procRoot?: string;
}

const MAX_PROCESSES = 1 << 16;

/**
 * True when some process maps the file at `path` (a running QEMU maps its RAM file). Processes whose
 * maps we may not read are skipped: run as root to see them all.
 */
export function isMappedByAProcess(path: string, procRoot = '/proc'): boolean {
  let st;
  try {
    st = statSync(path, { bigint: true });
  } catch (e) {
    throw new VigilError('vmm', 'not-found', `cannot stat ${path} (${describeSysError(e)})`, { cause: e });
  }
  // Linux dev_t: major in bits 8-19 and 32+, minor in bits 0-7 and 20+; maps prints them in hex.
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  const needle = ` ${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')} ${st.ino} `;
  let entries: string[];
  try {
    entries = readdirSync(procRoot);
  } catch {
    return false;
  }
  let seen = 0;
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    if (++seen > MAX_PROCESSES) break;
    try {
      if (readFileSync(`${procRoot}/${e}/maps`, 'latin1').includes(needle)) return true;
    } catch {
      // gone, or not ours to read
    }
  }
  return false;
}

/** True when `path` is on a RAM file system (tmpfs, hugetlbfs). */
export function onRamFileSystem(path: string): boolean {
  try {
    const type = statfsSync(path).type;
    return type === TMPFS_MAGIC || type === HUGETLBFS_MAGIC;
  } catch (e) {
    throw new VigilError('vmm', 'io', `cannot stat the file system of ${path} (${describeSysError(e)})`, {
      cause: e,
    });
  }
}

/**
 * Open any memory file read-only. A file some process maps on a RAM file system, or any file with
 * `options.live`, is live RAM laid out by `layout` (default 'q35') whatever its bytes say. Otherwise
 * the content decides: ELF core, LiME, or a raw image (live when on a RAM file system).
 */
export function openMemoryFile(
  path: string,
  layout?: RamLayout,
  options: OpenMemoryFileOptions = {},
): MemoryFile {
  const fd = openReadOnly(path, 'memory file');
  try {
    const size = regularFileSize(fd, path);
    const ramFs = options.live === undefined && onRamFileSystem(path);
    if (options.live === true || (ramFs && isMappedByAProcess(path, options.procRoot))) {
      return rawMemoryFile(fd, path, size, layout ?? 'q35', true);
    }
    if (sniffFormat(readUpTo(fd, SNIFF_BYTES, 0), size, path) === 'raw') {
      return rawMemoryFile(fd, path, size, layout ?? 'q35', ramFs);
    }
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  closeSync(fd);
  return openDump(path, layout);
}
