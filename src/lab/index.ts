// The reference guest: build (kernel + initramfs), boot, console commands, stop.
export { buildLab, type LabImage } from './build.js';
export {
  bootGuest,
  ensureGuest,
  guestDiffers,
  execInGuest,
  guestStatus,
  listGuests,
  stopGuest,
  stopGuests,
  DEFAULT_GUEST_NAME,
  READY_MARKER,
  type BootOptions,
  type OnDifferent,
} from './guest.js';
export {
  fetchKernel,
  resolveKernelPackage,
  KERNEL_FLAVOURS,
  type KernelFlavour,
  type KernelFiles,
} from './kernel.js';
export { parseMemorySize, expectedPaging, type Accel } from './qemu.js';
export { serialExec, type ExecResult } from './serial.js';
export type { GuestState } from './state.js';
