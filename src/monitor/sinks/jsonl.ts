// The jsonl sink: one ECS alert document (schema.ts) per line, appended to a file, rotated by size.
//
// Crash safety. Each line is handed to the kernel by one write call on an O_APPEND descriptor and, by
// default, fdatasync'd before write() resolves, so an alert whose write() resolved survives a crash of
// vigil or of the host. A `kill -9` can still land while a write is in progress: Linux checks for a fatal
// signal between the pages it copies, so a line that spans a page boundary of the file can be cut short.
// Such a torn tail never ends in "\n" and is always the last thing in the file; this sink truncates it when
// it opens the file again (and reports the bytes it dropped), and readers of a live file should ignore a
// final line without its newline. Every newline-terminated line is a complete JSON document. The sink
// assumes it is the only writer of the file.

import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Alert } from '../../policy/types.js';
import { VigilError } from '../../util/errors.js';
import type { JsonlSinkConfig } from './config.js';
import { stringifyJson } from './json.js';
import { toSchema } from './schema.js';
import { MONITOR_ORIGIN, type SinkDeps, type SinkStatus, type VigilSink } from './types.js';

export const JSONL_DEFAULTS = { keep: 5, fsync: true } as const;

const SCAN_CHUNK = 64 * 1024;

/** Cut a torn last line (one without a trailing "\n"); returns the bytes removed. */
async function repairTail(fh: FileHandle): Promise<number> {
  const { size } = await fh.stat();
  if (size === 0) return 0;
  const buf = Buffer.alloc(Math.min(SCAN_CHUNK, size));
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - buf.length);
    const { bytesRead } = await fh.read(buf, 0, end - start, start);
    const nl = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (nl >= 0) {
      const keep = start + nl + 1;
      if (keep < size) await fh.truncate(keep);
      return size - keep;
    }
    end = start;
  }
  await fh.truncate(0);
  return size;
}

export class JsonlSink implements VigilSink {
  readonly name: string;
  private readonly path: string;
  private readonly maxBytes: number | undefined;
  private readonly keep: number;
  private readonly sync: boolean;
  private readonly hostname: string | undefined;
  private fh: FileHandle | undefined;
  private size = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private pending = 0;
  private failures = 0;
  private lastError: string | undefined;
  private closed = false;
  /** Bytes of a torn last line removed when the file was opened. */
  repairedBytes = 0;

  private constructor(config: JsonlSinkConfig, deps: SinkDeps) {
    this.name = config.name ?? `jsonl:${config.path}`;
    this.path = config.path;
    this.maxBytes = config.maxBytes;
    this.keep = config.keep ?? JSONL_DEFAULTS.keep;
    this.sync = config.fsync ?? JSONL_DEFAULTS.fsync;
    this.hostname = deps.hostname;
  }

  /** Open (creating it and its directory if needed) and repair a torn tail left by a killed writer. */
  static async open(config: JsonlSinkConfig, deps: SinkDeps = {}): Promise<JsonlSink> {
    const sink = new JsonlSink(config, deps);
    try {
      await mkdir(dirname(sink.path), { recursive: true });
      await sink.openFile();
      sink.repairedBytes = await repairTail(sink.fh!);
      sink.size = (await sink.fh!.stat()).size;
    } catch (e) {
      await sink.fh?.close().catch(() => {});
      throw new VigilError(MONITOR_ORIGIN, 'io', `${sink.name}: cannot open ${sink.path}`, { cause: e });
    }
    return sink;
  }

  private async openFile(): Promise<void> {
    // 0600: alerts carry evidence about the guest (process names, addresses) that not every local user should read.
    // 'a+': appends (O_APPEND) and can read back the tail to repair it.
    this.fh = await open(this.path, 'a+', 0o600);
  }

  write(alert: Alert): Promise<void> {
    if (this.closed)
      return Promise.reject(new VigilError(MONITOR_ORIGIN, 'state', `${this.name}: sink closed`));
    // Serialise before queueing so the caller's alert may change afterwards without affecting the line.
    const line = Buffer.from(stringifyJson(toSchema(alert, { hostname: this.hostname })) + '\n', 'utf8');
    this.pending++;
    const p = this.chain.then(() => this.append(line)).finally(() => this.pending--);
    this.chain = p.catch(() => {});
    return p;
  }

  private async append(line: Buffer): Promise<void> {
    try {
      if (!this.fh) {
        // A rotation that failed to reopen left no file: try again now.
        await this.openFile();
        this.size = (await this.fh!.stat()).size;
      }
      if (this.maxBytes !== undefined && this.size > 0 && this.size + line.length > this.maxBytes)
        await this.rotate();
      const fh = this.fh!;
      const before = this.size;
      try {
        // One write call for the whole line; the loop only continues a short write (disk nearly full).
        let off = 0;
        while (off < line.length) {
          const { bytesWritten } = await fh.write(line, off, line.length - off, null);
          if (bytesWritten <= 0) throw new Error('write returned 0');
          off += bytesWritten;
        }
        if (this.sync) await fh.datasync();
      } catch (e) {
        // Leave no partial line behind: cut back to where this line began.
        await fh.truncate(before).catch(() => {});
        throw e;
      }
      this.size = before + line.length;
      this.lastError = undefined;
    } catch (e) {
      this.failures++;
      this.lastError = e instanceof Error ? e.message : String(e);
      throw new VigilError(MONITOR_ORIGIN, 'io', `${this.name}: append to ${this.path} failed`, { cause: e });
    }
  }

  /** path.keep-1 → path.keep … path → path.1, then a fresh path. */
  private async rotate(): Promise<void> {
    await this.fh!.close();
    this.fh = undefined;
    const ignoreMissing = (e: unknown) => {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    };
    if (this.keep === 0) {
      await unlink(this.path).catch(ignoreMissing);
    } else {
      for (let i = this.keep - 1; i >= 1; i--) {
        await rename(`${this.path}.${i}`, `${this.path}.${i + 1}`).catch(ignoreMissing);
      }
      await rename(this.path, `${this.path}.1`).catch(ignoreMissing);
    }
    await this.openFile();
    this.size = 0;
  }

  status(): SinkStatus {
    return {
      healthy: this.lastError === undefined,
      pending: this.pending,
      dropped: 0,
      failures: this.failures,
      lastError: this.lastError,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chain;
    await this.fh?.close();
    this.fh = undefined;
  }
}
