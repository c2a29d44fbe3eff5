// Where guest RAM is, as plain Numbers for the hot path: guest-physical addresses are below 2^52, so a
// double holds them exactly and range checks cost no BigInt arithmetic.

import type { PhysRange } from '../../vmm/types.js';

export class RamRanges {
  readonly #starts: number[] = [];
  readonly #ends: number[] = [];

  constructor(ranges: readonly PhysRange[]) {
    const sorted = [...ranges].filter((r) => r.size > 0n).sort((a, b) => (a.start < b.start ? -1 : 1));
    for (const r of sorted) {
      const start = Number(r.start);
      const end = Number(r.start + r.size);
      const last = this.#ends.length - 1;
      // Adjacent ranges merge so a read spanning both is one range.
      if (last >= 0 && start <= this.#ends[last]!) this.#ends[last] = Math.max(this.#ends[last]!, end);
      else {
        this.#starts.push(start);
        this.#ends.push(end);
      }
    }
  }

  /** True when all of [pa, pa + length) is RAM. */
  contains(pa: number, length: number): boolean {
    const starts = this.#starts;
    for (let i = 0; i < starts.length; i++) {
      if (pa < starts[i]!) return false;
      if (pa + length <= this.#ends[i]!) return true;
    }
    return false;
  }
}
