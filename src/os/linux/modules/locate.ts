// Which module's memory holds an address: attributes a syscall-table entry, an IDT handler or a hook to
// the module that owns the code it points at.
import type { KernelAccess } from './access.js';
import type { ModuleRegion } from './layout.js';
import { listModules, type KernelModule } from './list.js';

export interface ModuleHit {
  module: KernelModule;
  region: ModuleRegion;
  /** Offset of the address from the region's base. */
  offset: bigint;
}

/** The module whose memory contains `va`; walks the module list unless `modules` is given. */
export function moduleAt(
  kernel: KernelAccess,
  va: bigint,
  modules: readonly KernelModule[] = listModules(kernel),
): ModuleHit | undefined {
  for (const module of modules) {
    for (const region of module.regions) {
      if (va >= region.base && va - region.base < region.size) {
        return { module, region, offset: va - region.base };
      }
    }
  }
  return undefined;
}
