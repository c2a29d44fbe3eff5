// Benchmark sections beyond the VMM layer (processes, sweeps), kept apart so each layer's owner can add
// one without touching the harness.
import type { BenchContext } from './run.js';

export function sections(_ctx: BenchContext): Record<string, () => Promise<void>> {
  return {};
}
