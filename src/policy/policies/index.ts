// Every policy vigil ships, in the order sweeps run them. A policy is one module in this folder; add it
// here to make it available to `vigil check`, `vigil watch` and the demo.
import type { Kernel } from '../../os/linux/kernel.js';
import type { Policy } from '../policy.js';

export type LinuxPolicy = Policy<Kernel>;

export const ALL_POLICIES: readonly LinuxPolicy[] = [];

export function policyById(id: string): LinuxPolicy | undefined {
  return ALL_POLICIES.find((p) => p.id === id);
}
