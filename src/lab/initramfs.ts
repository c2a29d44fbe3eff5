// The guest's initramfs: static busybox, the init script and guest scripts from lab/, qemu-guest-agent with
// the shared libraries and loader it needs, and the virtio modules of the kernel (decompressed here, since
// busybox insmod takes plain .ko; modules/order lists them in load order for lab/init). Its file name
// carries a hash of everything that goes in, so a change in lab/, in the kernel or in the agent builds a
// new one and an unchanged input reuses the cached file.
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
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
import { basename, dirname, join } from 'node:path';
import { VigilError } from '../util/errors.js';
import { elfLinkage } from './elf.js';
import { fetchGuestAgent } from './guest-agent.js';
import type { KernelFiles, Progress } from './kernel.js';
import { imageDir, labSourceDir } from './paths.js';
import { requireProgram, run } from './proc.js';

/** virtio-net and its dependencies, in load order (lab/init loads them in the same order). */
export const VIRTIO_NET_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'failover',
  'net_failover',
  'virtio_net',
] as const;

/**
 * Every module the guest loads, in load order: a module comes after those its `depends=` names
 * (virtio_console: virtio, virtio_ring). virtio_console drives the virtio-serial port of qemu-guest-agent.
 */
export const GUEST_MODULES = [...VIRTIO_NET_MODULES, 'virtio_console'] as const;

const MODULE_SUFFIXES = ['.ko', '.ko.xz', '.ko.zst', '.ko.gz'] as const;

/** Module name → file, over a kernel's modules tree ('-' and '_' are the same in module names). */
export function indexModules(modulesDir: string): Map<string, string> {
  const index = new Map<string, string>();
  const stack = [join(modulesDir, 'kernel')];
  let visited = 0;
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    if (++visited > 100_000) throw new VigilError('lab', 'bound', `too many folders under ${modulesDir}`);
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) stack.push(p);
      else {
        const suffix = MODULE_SUFFIXES.find((s) => ent.name.endsWith(s));
        if (suffix) index.set(ent.name.slice(0, -suffix.length).replace(/-/g, '_'), p);
      }
    }
  }
  return index;
}

/** True when an ELF executable has no program interpreter (PT_INTERP), i.e. is statically linked. */
export function isStaticElf(path: string): boolean {
  const elf = elfLinkage(path);
  return elf.elf64 && elf.interpreter === undefined;
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(dir, e.name))
    .sort();
}

interface Layout {
  /** Destination in the initramfs → source on the host. */
  files: [string, string][];
  modules: [string, string][];
}

function layout(kernel: KernelFiles, busybox: string, extra: [string, string][]): Layout {
  const lab = labSourceDir();
  const files: [string, string][] = [['init', join(lab, 'init')], ['bin/busybox', busybox], ...extra];
  for (const f of listFiles(join(lab, 'scripts'))) files.push([`usr/bin/${basename(f)}`, f]);
  for (const f of listFiles(join(lab, 'etc'))) files.push([`etc/${basename(f)}`, f]);
  const index = indexModules(kernel.modulesDir);
  const modules: [string, string][] = [];
  for (const m of GUEST_MODULES) {
    const src = index.get(m);
    if (src) modules.push([`modules/${m}.ko`, src]);
  }
  return { files, modules };
}

function hashLayout(kernel: KernelFiles, l: Layout): string {
  const h = createHash('sha256').update(`vigil-initramfs-v2\0${kernel.release}\0`);
  for (const [dst, src] of [...l.files, ...l.modules]) {
    h.update(`${dst}\0${statSync(src).mode & 0o111 ? 'x' : '-'}\0`);
    h.update(readFileSync(src));
  }
  return h.digest('hex').slice(0, 16);
}

async function decompressModule(src: string, dst: string): Promise<void> {
  if (src.endsWith('.ko')) copyFileSync(src, dst);
  else if (src.endsWith('.xz')) await run('sh', ['-c', 'xz -dc "$1" > "$2"', 'sh', src, dst]);
  else if (src.endsWith('.zst')) await run('sh', ['-c', 'zstd -qdc "$1" > "$2"', 'sh', src, dst]);
  else await run('sh', ['-c', 'gzip -dc "$1" > "$2"', 'sh', src, dst]);
}

export interface Initramfs {
  path: string;
  /** Modules packed in, in load order. */
  modules: string[];
  built: boolean;
}

/** Build (or find cached) the initramfs for a kernel, with `extra` files (destination → host file) added. */
export async function buildInitramfs(
  kernel: KernelFiles,
  progress: Progress = () => {},
  extra: [string, string][] = [],
): Promise<Initramfs> {
  const busybox = requireProgram('busybox', 'busybox-static');
  if (!isStaticElf(busybox)) {
    throw new VigilError('lab', 'not-found', `${busybox} is not statically linked: install "busybox-static"`);
  }
  requireProgram('cpio', 'cpio');
  requireProgram('gzip', 'gzip');
  const agent = await fetchGuestAgent(progress);
  const l = layout(kernel, busybox, [...agent.files, ...extra]);
  const modules = l.modules.map(([dst]) => basename(dst, '.ko'));
  for (const [, src] of l.modules) {
    if (src.endsWith('.xz')) requireProgram('xz', 'xz-utils');
    if (src.endsWith('.zst')) requireProgram('zstd', 'zstd');
  }
  const dir = imageDir(kernel.release);
  const path = join(dir, `initrd-${hashLayout(kernel, l)}.cpio.gz`);
  if (existsSync(path)) return { path, modules, built: false };

  progress(`building initramfs (${modules.length} modules, qemu-guest-agent ${agent.version})…`);
  mkdirSync(dir, { recursive: true });
  const stage = mkdtempSync(join(dir, '.initrd-'));
  try {
    const root = join(stage, 'root');
    for (const d of [
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
      'etc',
      'proc',
      'sys',
      'dev',
      'tmp',
      'root',
      'modules',
    ]) {
      mkdirSync(join(root, d), { recursive: true });
    }
    for (const [dst, src] of l.files) {
      mkdirSync(dirname(join(root, dst)), { recursive: true });
      copyFileSync(src, join(root, dst));
      const executable = (statSync(src).mode & 0o111) !== 0 || dst.startsWith('usr/bin/');
      chmodSync(join(root, dst), executable ? 0o755 : 0o644);
    }
    chmodSync(join(root, 'init'), 0o755);
    chmodSync(join(root, 'bin/busybox'), 0o755);
    for (const [dst, src] of l.modules) await decompressModule(src, join(root, dst));
    writeFileSync(join(root, 'modules/order'), modules.map((m) => `${m}\n`).join(''));
    const out = join(stage, 'initrd.cpio.gz');
    await run('sh', [
      '-c',
      'cd "$1" && find . -print | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -6 > "$2"',
      'sh',
      root,
      out,
    ]);
    renameSync(out, path);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return { path, modules, built: true };
}
