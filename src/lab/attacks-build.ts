// The attack suite's guest files, built on the host from lab/attacks/: static programs (gcc), the rootkit
// modules (kbuild, against the Debian kernel headers of the guest's exact release, installed with apt-get
// on first use), the runner scripts. Cached under the kernel's image folder, keyed by a hash of the sources
// and the release: an unchanged suite is never rebuilt.
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { VigilError } from '../util/errors.js';
import type { KernelFiles, Progress } from './kernel.js';
import { imageDir, labSourceDir } from './paths.js';
import { requireProgram, run } from './proc.js';

/** Where the suite lands in the guest: /attacks/{bin,modules,run}, /attacks/lib.sh. */
export const GUEST_ATTACK_DIR = 'attacks';

export interface AttackBuild {
  /** The cached output folder (bin/, modules/, run/, lib.sh). */
  dir: string;
  /** Destination in the initramfs → file on the host. */
  files: [string, string][];
  /** Module names built (vigilkit, vk_hide…). */
  modules: string[];
  built: boolean;
  /** Milliseconds spent installing kernel headers (0 when they were there). */
  headersMs: number;
  /** Milliseconds spent compiling (0 when cached). */
  compileMs: number;
}

/** Source files of the suite, relative to lab/attacks, sorted; kbuild leftovers and documentation are skipped. */
export function attackSources(root: string): string[] {
  const out: string[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) stack.push(p);
      else if (ent.isFile() && !/\.(o|ko|mod|mod\.c|cmd|order|symvers|md)$|^\./.test(ent.name)) {
        out.push(relative(root, p));
      }
      if (out.length > 1000) throw new VigilError('lab', 'bound', `more than 1000 files under ${root}`);
    }
  }
  return out.sort();
}

export function hashAttackSources(root: string, release: string): string {
  const h = createHash('sha256').update(`vigil-attacks-v1\0${release}\0`);
  for (const rel of attackSources(root)) {
    const p = join(root, rel);
    h.update(`${rel}\0${statSync(p).mode & 0o111 ? 'x' : '-'}\0`);
    h.update(readFileSync(p));
  }
  return h.digest('hex').slice(0, 16);
}

/** The `vermagic=` string of a kernel module file, or undefined. */
export function moduleVermagic(ko: Buffer): string | undefined {
  const at = ko.indexOf('vermagic=');
  if (at < 0) return undefined;
  const end = ko.indexOf(0, at);
  if (end < 0 || end - at > 512) return undefined;
  return ko.subarray(at + 'vermagic='.length, end).toString('latin1');
}

export const headersPackage = (release: string): string => `linux-headers-${release}`;
export const headersDir = (release: string): string => `/usr/src/linux-headers-${release}`;

/** Install the Debian kernel headers of `release` when missing; returns the milliseconds it took. */
async function ensureHeaders(release: string, progress: Progress): Promise<number> {
  const dir = headersDir(release);
  if (existsSync(join(dir, 'Makefile'))) return 0;
  const pkg = headersPackage(release);
  requireProgram('apt-get', 'apt');
  const t0 = performance.now();
  progress(`installing ${pkg} for the rootkit module (apt-get, about a minute)…`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () =>
    run('apt-get', ['install', '-y', '-o', 'DPkg::Lock::Timeout=300', pkg], { env, timeoutMs: 1_200_000 });
  try {
    try {
      await install();
    } catch {
      progress('apt-get update…');
      await run('apt-get', ['update'], { env, timeoutMs: 300_000 });
      await install();
    }
  } catch (e) {
    const why = e instanceof VigilError ? e.message : String(e);
    throw new VigilError(
      'lab',
      'not-found',
      `the attack suite's rootkit needs ${pkg} (the headers of the guest kernel) and apt-get could not ` +
        `install it: ${why}. Install it as root ("apt-get install ${pkg}") and try again`,
      { cause: e },
    );
  }
  if (!existsSync(join(dir, 'Makefile'))) {
    throw new VigilError('lab', 'not-found', `${pkg} is installed but ${dir}/Makefile is missing`);
  }
  return Math.round(performance.now() - t0);
}

function listOutput(dir: string): { files: [string, string][]; modules: string[] } {
  const files: [string, string][] = [];
  const modules: string[] = [];
  for (const sub of ['bin', 'modules', 'run']) {
    const d = join(dir, sub);
    if (!existsSync(d)) continue;
    for (const f of readdirSync(d).sort()) {
      files.push([`${GUEST_ATTACK_DIR}/${sub}/${f}`, join(d, f)]);
      if (sub === 'modules' && f.endsWith('.ko')) modules.push(f.slice(0, -3));
    }
  }
  files.push([`${GUEST_ATTACK_DIR}/lib.sh`, join(dir, 'lib.sh')]);
  return { files, modules };
}

/** Build (or find cached) the attack suite for a kernel. */
export async function buildAttacks(kernel: KernelFiles, progress: Progress = () => {}): Promise<AttackBuild> {
  const src = join(labSourceDir(), 'attacks');
  if (!existsSync(join(src, 'Makefile'))) {
    throw new VigilError('lab', 'not-found', `no attack suite at ${src} (lab/attacks/Makefile missing)`);
  }
  const base = imageDir(kernel.release);
  const out = join(base, `attacks-${hashAttackSources(src, kernel.release)}`);
  if (existsSync(out)) return { dir: out, ...listOutput(out), built: false, headersMs: 0, compileMs: 0 };

  const make = requireProgram('make', 'make');
  requireProgram('gcc', 'gcc');
  requireProgram('strip', 'binutils');
  const headersMs = await ensureHeaders(kernel.release, progress);
  mkdirSync(base, { recursive: true });
  const stage = mkdtempSync(join(base, '.attacks-'));
  try {
    // kbuild writes its objects next to the sources: build a copy, never in the repository.
    const tree = join(stage, 'src');
    cpSync(src, tree, { recursive: true });
    const built = join(stage, 'out');
    const t0 = performance.now();
    progress('compiling the attack programs…');
    await run(make, ['-C', tree, `OUT=${built}`, 'programs'], { timeoutMs: 600_000 });
    progress(`building the rootkit modules against ${headersDir(kernel.release)}…`);
    await run(make, ['-C', tree, `OUT=${built}`, `KDIR=${headersDir(kernel.release)}`, '-j2', 'module'], {
      timeoutMs: 900_000,
    });
    const compileMs = Math.round(performance.now() - t0);
    for (const ko of readdirSync(join(built, 'modules'))) {
      const magic = moduleVermagic(readFileSync(join(built, 'modules', ko)));
      if (!magic?.startsWith(`${kernel.release} `)) {
        throw new VigilError(
          'lab',
          'malformed',
          `${ko} was built for "${magic ?? '?'}", not for kernel ${kernel.release}`,
        );
      }
    }
    mkdirSync(join(built, 'run'));
    for (const f of readdirSync(join(tree, 'run'))) {
      copyFileSync(join(tree, 'run', f), join(built, 'run', f));
      chmodSync(join(built, 'run', f), 0o755);
    }
    copyFileSync(join(tree, 'lib.sh'), join(built, 'lib.sh'));
    rmSync(join(built, 'gen'), { recursive: true, force: true });
    try {
      renameSync(built, out);
    } catch (e) {
      if (!existsSync(out)) throw e; // else a parallel build got there first
    }
    progress(`attack suite built in ${(compileMs / 1000).toFixed(1)} s`);
    return { dir: out, ...listOutput(out), built: true, headersMs, compileMs };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}
