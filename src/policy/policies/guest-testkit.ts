// Test support for the guest-agent lie detector: the real guest outputs kept in test/fixtures/guest-views
// (see its README for where each was captured), and a GuestAgent whose answers a test scripts — what
// qemu-guest-agent would return, including its failures.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GuestAgent, GuestExecResult } from '../../vmm/types.js';

/** A file of test/fixtures/guest-views, found from the working directory or from this module. */
export function guestFixture(name: string): Buffer {
  const rel = join('test', 'fixtures', 'guest-views', name);
  const tries = [join(process.cwd(), rel)];
  for (let d = dirname(fileURLToPath(import.meta.url)), i = 0; i < 8; d = dirname(d), i++)
    tries.push(join(d, rel));
  const found = tries.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`fixture ${rel} not found (looked in ${tries.join(', ')})`);
  return readFileSync(found);
}

export type ExecHandler = (
  path: string,
  args: readonly string[],
  call: number,
) => GuestExecResult | Promise<GuestExecResult>;
export type FileHandler = (path: string, call: number) => Buffer | Promise<Buffer>;

/** A successful run printing `stdout`. */
export const ran = (stdout: Buffer | string, exitCode = 0, stderr = ''): GuestExecResult => ({
  exitCode,
  stdout: Buffer.isBuffer(stdout) ? stdout : Buffer.from(stdout),
  stderr: Buffer.from(stderr),
  truncated: false,
});

/** A GuestAgent answering through handlers, counting and recording every call. */
export class FakeAgent implements GuestAgent {
  readonly calls: string[] = [];
  execCalls = 0;
  fileCalls = 0;
  constructor(
    public onExec: ExecHandler,
    public onFile: FileHandler = () => Buffer.alloc(0),
  ) {}

  async exec(path: string, args: readonly string[]): Promise<GuestExecResult> {
    this.calls.push(`exec ${[path, ...args].join(' ')}`);
    return this.onExec(path, args, ++this.execCalls);
  }

  async readFile(path: string): Promise<Buffer> {
    this.calls.push(`read ${path}`);
    return this.onFile(path, ++this.fileCalls);
  }

  async close(): Promise<void> {}
}
