// Every policy vigil ships, in the order sweeps run them. A policy is one module in this folder; add it
// here to make it available to `vigil check`, `vigil watch` and the demo.
import type { Kernel } from '../../os/linux/kernel.js';
import type { Policy } from '../policy.js';
import { lieDetectorPolicy } from './lie-detector.js';
import { lieDetectorGuestPolicy } from './lie-detector-guest.js';
import { rawSocketPolicy } from './raw-socket.js';
import { nicAccessPolicy } from './nic-access.js';
import { privilegeEscalationPolicy } from './privilege-escalation.js';
import { filelessPolicy } from './fileless.js';
import { reverseShellPolicy } from './reverse-shell.js';
import { memoryAccessPolicy } from './memory-access.js';
import { hiddenModulePolicy } from './hidden-module.js';
import { kernelHooksPolicy } from './kernel-hooks.js';
import { signaturePolicy } from './signature.js';
import { programIntegrityPolicy } from './program-integrity.js';

export type LinuxPolicy = Policy<Kernel>;

export const ALL_POLICIES: readonly LinuxPolicy[] = [
  lieDetectorPolicy,
  lieDetectorGuestPolicy,
  rawSocketPolicy,
  nicAccessPolicy,
  privilegeEscalationPolicy,
  filelessPolicy,
  reverseShellPolicy,
  memoryAccessPolicy,
  hiddenModulePolicy,
  kernelHooksPolicy,
  signaturePolicy,
  programIntegrityPolicy,
];

export function policyById(id: string): LinuxPolicy | undefined {
  return ALL_POLICIES.find((p) => p.id === id);
}
