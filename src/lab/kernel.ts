// The guest kernel: the current Debian kernel of a flavour, resolved through apt (never a pinned ABI),
// downloaded once with `apt-get download` and unpacked with `dpkg-deb -x` into the cache.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { VigilError } from '../util/errors.js';
import { cacheRoot, imageDir } from './paths.js';
import { requireProgram, run } from './proc.js';

export type KernelFlavour = 'amd64' | 'cloud-amd64';
export const KERNEL_FLAVOURS: readonly KernelFlavour[] = ['amd64', 'cloud-amd64'];

export interface KernelFiles {
  flavour: KernelFlavour;
  /** Debian package, e.g. linux-image-6.1.0-56-amd64. */
  package: string;
  /** Kernel release (uname -r), e.g. 6.1.0-56-amd64. */
  release: string;
  vmlinuz: string;
  /** lib/modules/<release> of the unpacked package. */
  modulesDir: string;
}

export type Progress = (line: string) => void;

export function checkFlavour(flavour: string): KernelFlavour {
  if (!(KERNEL_FLAVOURS as readonly string[]).includes(flavour)) {
    throw new VigilError(
      'lab',
      'usage',
      `unknown kernel flavour "${flavour}": use ${KERNEL_FLAVOURS.join(' or ')}`,
    );
  }
  return flavour as KernelFlavour;
}

/** The versioned package a `linux-image-<flavour>` metapackage depends on, from `apt-cache depends` output. */
export function parseAptDepends(text: string, flavour: KernelFlavour): string | undefined {
  // The ABI part is "6.1.0-56" (bookworm) or "6.12.43+deb13" (trixie); the flavour follows it exactly, so
  // that "-cloud-amd64" is not taken for "-amd64".
  const pkg = new RegExp(`^linux-image-\\d[^-\\s]*(?:-\\d[^-\\s]*)?-${flavour}$`);
  for (const line of text.split('\n')) {
    const m = /^\s*\|?Depends:\s*(\S+)\s*$/.exec(line);
    if (m && pkg.test(m[1])) return m[1];
  }
  return undefined;
}

async function aptDepends(meta: string, flavour: KernelFlavour): Promise<string | undefined> {
  try {
    const { stdout } = await run('apt-cache', ['depends', meta], { timeoutMs: 60_000 });
    return parseAptDepends(stdout, flavour);
  } catch {
    return undefined; // no package lists yet: the caller runs apt-get update
  }
}

const APT_LISTS = '/var/lib/apt/lists';

/** A stamp of apt's package lists: `apt-get update` replaces files there, which changes the folder's mtime. */
function aptListsStamp(): string | undefined {
  try {
    return String(statSync(APT_LISTS).mtimeMs);
  } catch {
    return undefined;
  }
}

// apt-cache takes a second or more on a busy machine: remember each answer until the apt lists change.
const answerFile = (key: string) => join(cacheRoot(), 'lab', `resolved-${key}.json`);

/** An answer apt gave earlier under `key` (e.g. a package name or version), if the apt lists are unchanged. */
export function cachedAptAnswer(key: string): string | undefined {
  try {
    const r = JSON.parse(readFileSync(answerFile(key), 'utf8')) as { stamp?: string; package?: string };
    const stamp = aptListsStamp();
    return stamp !== undefined && r.stamp === stamp && typeof r.package === 'string' ? r.package : undefined;
  } catch {
    return undefined;
  }
}

/** Remember an answer of apt under `key` until the apt lists change. */
export function rememberAptAnswer(key: string, answer: string): void {
  const stamp = aptListsStamp();
  if (stamp === undefined) return;
  try {
    mkdirSync(join(cacheRoot(), 'lab'), { recursive: true });
    const file = answerFile(key);
    writeFileSync(`${file}.${process.pid}`, JSON.stringify({ stamp, package: answer }) + '\n');
    renameSync(`${file}.${process.pid}`, file);
  } catch {
    // only a cache
  }
}

/** Resolve linux-image-<flavour> to the current versioned kernel package, updating apt lists if needed. */
export async function resolveKernelPackage(
  flavour: KernelFlavour,
  progress: Progress = () => {},
): Promise<string> {
  const cached = cachedAptAnswer(flavour);
  if (cached) return cached;
  requireProgram('apt-cache', 'apt');
  const meta = `linux-image-${flavour}`;
  let pkg = await aptDepends(meta, flavour);
  if (!pkg) {
    progress('apt-get update…');
    await run('apt-get', ['update'], { timeoutMs: 300_000 });
    pkg = await aptDepends(meta, flavour);
  }
  if (!pkg) {
    throw new VigilError(
      'lab',
      'not-found',
      `apt knows no kernel package behind ${meta} (is this a Debian host?)`,
    );
  }
  rememberAptAnswer(flavour, pkg);
  return pkg;
}

function kernelFilesIn(root: string, flavour: KernelFlavour, pkg: string): KernelFiles | undefined {
  const release = pkg.slice('linux-image-'.length);
  const vmlinuz = join(root, 'boot', `vmlinuz-${release}`);
  const modulesDir = join(root, 'lib', 'modules', release);
  if (!existsSync(vmlinuz) || !existsSync(modulesDir)) return undefined;
  return { flavour, package: pkg, release, vmlinuz, modulesDir };
}

/** The unpacked kernel of a flavour, downloading it on first use. Idempotent; safe against a concurrent run. */
export async function fetchKernel(
  flavour: KernelFlavour,
  progress: Progress = () => {},
): Promise<KernelFiles> {
  const pkg = await resolveKernelPackage(flavour, progress);
  const release = pkg.slice('linux-image-'.length);
  const dir = imageDir(release);
  const root = join(dir, 'root');
  const cached = kernelFilesIn(root, flavour, pkg);
  if (cached) return cached;

  await fetchDeb(pkg, root, progress, (unpacked) => {
    if (!kernelFilesIn(unpacked, flavour, pkg)) {
      throw new VigilError(
        'lab',
        'malformed',
        `${pkg} holds no boot/vmlinuz-${release} and lib/modules/${release}`,
      );
    }
  });
  const files = kernelFilesIn(root, flavour, pkg);
  if (!files) throw new VigilError('lab', 'io', `kernel cache ${root} is incomplete`);
  return files;
}

/**
 * Download a Debian package (`name` or `name=version`) with `apt-get download` and unpack it with
 * `dpkg-deb -x` into `dest`, which appears whole or not at all. `check` may reject the unpacked tree. Safe
 * against a concurrent run: whoever renames first wins, the other finds `dest` in place.
 */
export async function fetchDeb(
  pkg: string,
  dest: string,
  progress: Progress,
  check: (unpacked: string) => void = () => {},
): Promise<void> {
  requireProgram('apt-get', 'apt');
  requireProgram('dpkg-deb', 'dpkg');
  const dir = dirname(dest);
  mkdirSync(dir, { recursive: true });
  const tmp = mkdtempSync(join(dir, '.fetch-'));
  try {
    progress(`fetching ${pkg}…`);
    const download = () => run('apt-get', ['download', pkg], { cwd: tmp, timeoutMs: 600_000 });
    try {
      await download();
    } catch {
      progress('apt-get update…');
      await run('apt-get', ['update'], { timeoutMs: 300_000 });
      await download();
    }
    const deb = readdirSync(tmp).find((f) => f.endsWith('.deb'));
    if (!deb) throw new VigilError('lab', 'not-found', `apt-get download ${pkg} produced no .deb`);
    progress(`unpacking ${deb}…`);
    const unpacked = join(tmp, 'root');
    await run('dpkg-deb', ['-x', join(tmp, deb), unpacked]);
    check(unpacked);
    try {
      renameSync(unpacked, dest);
    } catch (e) {
      if (!existsSync(dest)) throw e; // else another run got there first
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
