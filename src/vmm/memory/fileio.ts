// Small helpers for the memory sources: open read-only with errors that say what went wrong, and read an
// exact number of bytes at a position.

import { constants, fstatSync, openSync, readSync } from 'node:fs';
import { VigilError, describeSysError } from '../../util/errors.js';

/** Open `path` read-only (O_RDONLY): vigil never writes guest memory through these sources. */
export function openReadOnly(path: string, what: string): number {
  try {
    return openSync(path, constants.O_RDONLY);
  } catch (e) {
    const code = (e as { code?: string }).code;
    const kind = code === 'ENOENT' ? 'not-found' : code === 'EACCES' || code === 'EPERM' ? 'denied' : 'io';
    throw new VigilError('vmm', kind, `cannot open ${what} ${path} (${describeSysError(e)})`, { cause: e });
  }
}

/** Size of a regular file; anything else (directory, device, FIFO) is rejected. */
export function regularFileSize(fd: number, path: string): number {
  const st = fstatSync(fd);
  if (!st.isFile()) {
    throw new VigilError('vmm', 'usage', `${path} is not a regular file`);
  }
  return st.size;
}

/** Read up to `length` bytes at `position`; fewer only at end of file. */
export function readUpTo(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const got = readSync(fd, buf, done, length - done, position + done);
    if (got === 0) break;
    done += got;
  }
  return done === length ? buf : buf.subarray(0, done);
}
