// Running host programs for the lab: one promise per command, failures as VigilError with the program's
// own last words, and a check that the programs the lab needs are installed.
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { VigilError, describeSysError } from '../util/errors.js';

export interface RunResult {
  stdout: string;
  stderr: string;
}

export function run(
  file: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      file,
      args,
      {
        cwd: opts.cwd,
        timeout: opts.timeoutMs ?? 300_000,
        maxBuffer: 64 << 20,
        env: opts.env ?? process.env,
      },
      (err, stdout, stderr) => {
        if (err) {
          const tail = String(stderr).trim().split('\n').slice(-3).join(' | ') || describeSysError(err);
          reject(new VigilError('lab', 'io', `${file} ${args.join(' ')} failed: ${tail}`, { cause: err }));
        } else {
          resolvePromise({ stdout: String(stdout), stderr: String(stderr) });
        }
      },
    );
  });
}

/** The absolute path of a program on PATH (also searching the sbin folders root uses), or undefined. */
export function which(program: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
  for (const dir of dirs) {
    if (!dir) continue;
    const p = join(dir, program);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Demand a program, naming the Debian package that provides it when it is missing. */
export function requireProgram(program: string, debianPackage: string): string {
  const p = which(program);
  if (!p) {
    throw new VigilError(
      'lab',
      'not-found',
      `${program} is not installed: install it with "apt-get install ${debianPackage}"`,
    );
  }
  return p;
}
