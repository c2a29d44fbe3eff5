// A disk spool: one file per pending alert, named by alert id, written atomically (temporary file, fsync,
// rename, fsync of the directory) so that a crash leaves either the whole file or none. Files that can never
// be delivered move to failed/, where an operator can inspect them and move them back to resend.

import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';

const TMP_PREFIX = '.tmp-';
const SUFFIX = '.json';
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** A file-system-safe key for an alert id: the id itself when it is plain (UUIDs are), else a hash. */
export function spoolKey(id: string): string {
  return SAFE_ID.test(id) ? id : `h-${createHash('sha256').update(id).digest('hex').slice(0, 40)}`;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class Spool {
  readonly failedDir: string;

  constructor(readonly dir: string) {
    this.failedDir = join(dir, 'failed');
  }

  private file(key: string): string {
    return join(this.dir, key + SUFFIX);
  }

  /** Create the directories (0700: spooled alerts carry evidence) and remove temporaries of a crashed write. */
  async open(): Promise<void> {
    await mkdir(this.failedDir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.dir)) {
      if (name.startsWith(TMP_PREFIX)) await unlink(join(this.dir, name)).catch(() => {});
    }
  }

  /** Keys of the spooled alerts, oldest first. */
  async list(): Promise<string[]> {
    const found: { key: string; mtime: number }[] = [];
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith(SUFFIX) || name.startsWith('.')) continue;
      try {
        const st = await stat(join(this.dir, name));
        if (st.isFile()) found.push({ key: name.slice(0, -SUFFIX.length), mtime: st.mtimeMs });
      } catch {
        // removed meanwhile
      }
    }
    return found.sort((a, b) => a.mtime - b.mtime || (a.key < b.key ? -1 : 1)).map((f) => f.key);
  }

  async put(key: string, body: Buffer): Promise<void> {
    const tmp = join(this.dir, `${TMP_PREFIX}${key}-${process.pid}-${randomBytes(4).toString('hex')}`);
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(body);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await rename(tmp, this.file(key));
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw e;
    }
    await fsyncDir(this.dir);
  }

  /** The spooled body, or undefined if the file is gone. */
  async read(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.file(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async remove(key: string): Promise<void> {
    await unlink(this.file(key)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  async fail(key: string): Promise<void> {
    await rename(this.file(key), join(this.failedDir, key + SUFFIX));
  }
}
