// How the memory detectors (signature, program-integrity) read a process: its maps and page tables, read
// again when a live process changes them under the walk, and a map as evidence.
import type { AddressSpace } from '../../arch/types.js';
import type { Kernel } from '../../os/linux/kernel.js';
import {
  mapsBeingChanged,
  processSpace,
  stillOwns,
  type UserProcess,
} from '../../os/linux/mm/address-spaces.js';
import { memoryMaps, type MemoryMap } from '../../os/linux/mm/maps.js';
import { VigilError, isVigilError } from '../../util/errors.js';
import { hex } from './process-facts.js';

export interface ProcessView {
  maps: MemoryMap[];
  space: AddressSpace;
  /** False when the maps were read while the process was changing them (they may be half-updated). */
  settled: boolean;
}

const pause = new Int32Array(new SharedArrayBuffer(4));
/** Let a live guest run on for a moment (synchronously: the sweep is a synchronous walk). */
const letGuestRun = (ms: number): void => void Atomics.wait(pause, 0, 0, ms);

/**
 * A process's maps and page tables. On a live guest a process changes its maps under the walk (mmap,
 * mprotect, exec: the kernel updates VMA and maple tree under mmap_lock, which we cannot take), and
 * cached pages can mix two versions: when the walk reports problems, the cache is dropped and the
 * process read again after a moment, up to three times. What remains is noted, unless the task no longer
 * owns the mm (it exited or exec'd) or is still changing its maps (mmap_lock held for writing): the
 * guest's normal life, not a gap. A dump is read once and everything is noted.
 */
export function readProcess(
  k: Kernel,
  p: UserProcess,
  note: (kind: string, detail: string) => void,
): ProcessView | undefined {
  const pid = p.task.tgid;
  for (let attempt = 0; ; attempt++) {
    const before = k.issues.items.length;
    let view: ProcessView | undefined;
    let failure: VigilError | undefined;
    try {
      view = { maps: memoryMaps(k, p.mm), space: processSpace(k, p.mm), settled: true };
    } catch (e) {
      if (!isVigilError(e)) throw e;
      failure = e;
    }
    const issues = k.issues.items.slice(before);
    if (!failure && issues.length === 0) return view;
    const live = !k.epoch.frozen;
    if (live) {
      k.epoch.bump();
      if (!stillOwns(k, p.task, p.mm)) return undefined;
      if (attempt < 3) {
        letGuestRun(5 << attempt);
        continue;
      }
      if (mapsBeingChanged(k, p.mm)) return view && { ...view, settled: false };
    }
    for (const i of issues) note(i.kind, `pid ${pid} ${i.walker}: ${i.detail}`);
    if (failure) note(failure.kind, `pid ${pid}: ${failure.message}`);
    return view;
  }
}

export function vmaEvidence(m: MemoryMap): Record<string, unknown> {
  return {
    start: hex(m.start),
    end: hex(m.end),
    perms: m.perms,
    offset: hex(m.offset),
    path: m.path,
    ...(m.deleted ? { deleted: true } : {}),
  };
}
