// A cross-process lock per guest name (a file created exclusively, holding the owner's PID), so that test
// processes running in parallel do not boot the same guest twice. A lock whose owner died is taken over.
import { mkdirSync, openSync, closeSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { VigilError } from '../util/errors.js';
import { checkGuestName, runRoot } from './paths.js';

function ownerAlive(path: string): boolean {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return false;
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM';
  }
}

export async function withGuestLock<T>(name: string, timeoutMs: number, job: () => Promise<T>): Promise<T> {
  mkdirSync(runRoot(), { recursive: true });
  const path = join(runRoot(), `.${checkGuestName(name)}.lock`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as { code?: string }).code !== 'EEXIST') throw e;
      if (!ownerAlive(path)) {
        rmSync(path, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new VigilError(
          'lab',
          'timeout',
          `guest ${name} stayed locked by another process for ${timeoutMs} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    return await job();
  } finally {
    rmSync(path, { force: true });
  }
}
