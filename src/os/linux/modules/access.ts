// The slice of a Kernel that the module and table walkers use. Walkers take this rather than the class so
// that unit tests can hand them a small synthetic kernel (test-kernel.ts); a real Kernel fits as is.
import type { Kernel } from '../kernel.js';

export type KernelAccess = Pick<
  Kernel,
  'symbols' | 'types' | 'space' | 'issues' | 'view' | 'sym' | 'readPointer' | 'symbolize'
>;

const memberCache = new WeakMap<object, Map<string, boolean>>();

/**
 * True when the kernel's BTF has `type` with a member `name` (searching anonymous members). Remembered
 * per type registry: walkers ask once per object.
 */
export function hasMember(kernel: KernelAccess, type: string, name: string): boolean {
  let cache = memberCache.get(kernel.types);
  if (!cache) memberCache.set(kernel.types, (cache = new Map()));
  const key = `${type}.${name}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  let found = false;
  if (kernel.types.find(type) !== undefined) {
    try {
      kernel.types.member(type, name);
      found = true;
    } catch {
      found = false;
    }
  }
  cache.set(key, found);
  return found;
}

export const hex = (v: bigint): string => '0x' + v.toString(16);
