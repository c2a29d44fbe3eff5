// The reference guest image: the current Debian kernel of a flavour plus the lab initramfs, both cached.
import { performance } from 'node:perf_hooks';
import { buildInitramfs } from './initramfs.js';
import { fetchKernel, type KernelFlavour, type Progress } from './kernel.js';

export interface LabImage {
  flavour: KernelFlavour;
  package: string;
  release: string;
  kernel: string;
  initrd: string;
  modules: string[];
  /** Milliseconds the build took (near zero when everything was cached). */
  buildMs: number;
}

export async function buildLab(
  opts: { flavour?: KernelFlavour; progress?: Progress } = {},
): Promise<LabImage> {
  const t0 = performance.now();
  const progress = opts.progress ?? (() => {});
  const kernel = await fetchKernel(opts.flavour ?? 'amd64', progress);
  const initrd = await buildInitramfs(kernel, progress);
  return {
    flavour: kernel.flavour,
    package: kernel.package,
    release: kernel.release,
    kernel: kernel.vmlinuz,
    initrd: initrd.path,
    modules: initrd.modules,
    buildMs: Math.round(performance.now() - t0),
  };
}
