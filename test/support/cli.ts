// Run the vigil CLI the way a user does: a separate `node bin/vigil.js …` process from the repo root.
// VIGIL_BIN points at another entry script while developing (e.g. a runner over a private build).
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The entry script a test runs as `vigil` (read at each call: VIGIL_BIN may be set after import). */
export function vigilBin(): string {
  return process.env.VIGIL_BIN ?? join(repoRoot, 'bin', 'vigil.js');
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runVigil(args: readonly string[], options: { timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [vigilBin(), ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** Run and parse stdout as JSON, failing with the stderr text when the command failed. */
export async function vigilJson<T = unknown>(args: readonly string[]): Promise<T> {
  const r = await runVigil([...args, '--json']);
  if (r.code !== 0) throw new Error(`vigil ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}
