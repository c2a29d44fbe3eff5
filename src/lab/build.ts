// The reference guest image: the current Debian kernel of a flavour plus the lab initramfs, both cached.
import { performance } from 'node:perf_hooks';
import { buildAttacks } from './attacks-build.js';
import { buildInitramfs } from './initramfs.js';
import { fetchKernel, type KernelFlavour, type Progress } from './kernel.js';

export interface LabImage {
  flavour: KernelFlavour;
  package: string;
  release: string;
  kernel: string;
  initrd: string;
  modules: string[];
  /** Whether the initramfs holds the attack suite (/attacks: lab/attacks, built for this kernel). */
  attacks: boolean;
  /** Milliseconds the build took (near zero when everything was cached). */
  buildMs: number;
}

export async function buildLab(
  opts: { flavour?: KernelFlavour; progress?: Progress; attacks?: boolean } = {},
): Promise<LabImage> {
  const t0 = performance.now();
  const progress = opts.progress ?? (() => {});
  const kernel = await fetchKernel(opts.flavour ?? 'amd64', progress);
  // The attack suite needs a compiler and the kernel headers: only built when asked for.
  const extra = opts.attacks ? (await buildAttacks(kernel, progress)).files : [];
  const initrd = await buildInitramfs(kernel, progress, extra);
  return {
    flavour: kernel.flavour,
    package: kernel.package,
    release: kernel.release,
    kernel: kernel.vmlinuz,
    initrd: initrd.path,
    modules: initrd.modules,
    attacks: opts.attacks === true,
    buildMs: Math.round(performance.now() - t0),
  };
}
