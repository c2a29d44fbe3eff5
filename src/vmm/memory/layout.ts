// Where a RAM backend's bytes appear in guest-physical space. QEMU's PC machines split RAM around the PCI
// hole below 4 GiB; the exact map comes from `info mtree -f` (mtree.ts), and when nothing else is known
// the machine type's default split is the best guess.

import { VigilError } from '../../util/errors.js';
import { hex } from './segments.js';

/** A guest-physical range backed by a RAM backend at `backendOffset`. */
export interface RamSegment {
  readonly start: bigint;
  readonly size: bigint;
  readonly backendOffset: bigint;
}

/** A machine type's default split, 'flat' for 0..size, or an explicit map (e.g. from parseMtree). */
export type RamLayout = 'q35' | 'pc' | 'flat' | readonly RamSegment[];

const FOUR_GIB = 0x1_0000_0000n;

/**
 * RAM below 4 GiB for a PC machine of `ramSize` bytes. QEMU 7.2, without max-ram-below-4g:
 * q35 keeps 2.75 GiB low unless RAM reaches 2.75 GiB, then only 2 GiB (1 GiB-aligned split);
 * i440fx ("pc") keeps 3.5 GiB low unless RAM reaches 3.5 GiB, then 3 GiB. Checked against
 * `info mtree -f` of a 3 GiB q35 guest: 0..2 GiB and 4..5 GiB at backend offset 2 GiB.
 */
export function lowMemory(ramSize: bigint, machine: 'q35' | 'pc'): bigint {
  if (machine === 'q35') return ramSize >= 0xb000_0000n ? 0x8000_0000n : ramSize;
  return ramSize >= 0xe000_0000n ? 0xc000_0000n : ramSize;
}

/**
 * The default layout of a RAM backend of `ramSize` bytes. It maps the legacy VGA window and BIOS area
 * below 1 MiB like RAM (the backend does hold bytes there); pass an mtree map for the exact view.
 */
export function defaultLayout(ramSize: bigint, machine: 'q35' | 'pc' | 'flat' = 'q35'): RamSegment[] {
  if (ramSize <= 0n) throw new VigilError('vmm', 'malformed', 'RAM size is zero');
  if (machine === 'flat') return [{ start: 0n, size: ramSize, backendOffset: 0n }];
  const low = lowMemory(ramSize, machine);
  const out: RamSegment[] = [{ start: 0n, size: low, backendOffset: 0n }];
  if (ramSize > low) out.push({ start: FOUR_GIB, size: ramSize - low, backendOffset: low });
  return out;
}

/** Resolve a RamLayout for a backend of `ramSize` bytes and check every segment lies inside it. */
export function resolveLayout(layout: RamLayout, ramSize: bigint, what: string): RamSegment[] {
  const segments = typeof layout === 'string' ? defaultLayout(ramSize, layout) : [...layout];
  for (const s of segments) {
    if (s.backendOffset < 0n || s.size < 0n || s.backendOffset + s.size > ramSize) {
      throw new VigilError(
        'vmm',
        'malformed',
        `memory map puts guest-physical ${hex(s.start)}+${hex(s.size)} at backend offset ` +
          `${hex(s.backendOffset)}, past the end of ${what} (${hex(ramSize)} bytes)`,
      );
    }
  }
  return segments;
}

export function describeLayout(layout: RamLayout): string {
  return typeof layout === 'string' ? `${layout} default layout` : 'QEMU memory map';
}
