// `npm run bench`: vigil's speed measured against this machine's own limits in the same run.
// Boots lab guests (vigil-bench-256m, vigil-bench-3g), measures, prints a report (Markdown tables) and
// writes JSON to bench/results.json. A benchmark, not a test: it asserts nothing.
//
//   node dist/bench/run.js [--only memory,bootstrap,ps,sweep,live] [--keep]   (--keep leaves the guests up)

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Epoch } from '../src/arch/epoch.js';
import { CachedPhysicalMemory } from '../src/arch/page-cache.js';
import { PageTableAddressSpace, PagingCache } from '../src/arch/x86_64/index.js';
import { ensureGuest, stopGuest, type GuestState } from '../src/lab/index.js';
import { Kernel } from '../src/os/linux/kernel.js';
import { connectQemu } from '../src/vmm/qemu/machine.js';
import type { PhysicalMemory } from '../src/vmm/types.js';
import { sections } from './sections.js';

export interface BenchContext {
  guest(name: 'vigil-bench-256m' | 'vigil-bench-3g'): Promise<GuestState>;
  record(section: string, metric: string, value: number, unit: string, note?: string): void;
  repoRoot: string;
}

const results: { section: string; metric: string; value: number; unit: string; note?: string }[] = [];
const guests = new Map<string, GuestState>();
const repoRoot = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..');

const ctx: BenchContext = {
  async guest(name) {
    const have = guests.get(name);
    if (have) return have;
    const memory = name === 'vigil-bench-3g' ? '3G' : '256M';
    process.stderr.write(`bench: booting ${name} (${memory})…\n`);
    const { state } = await ensureGuest({ name, memory, onDifferent: 'reboot' });
    guests.set(name, state);
    return state;
  },
  record(section, metric, value, unit, note) {
    results.push({ section, metric, value, unit, ...(note ? { note } : {}) });
    process.stderr.write(`  ${section} · ${metric}: ${fmt(value)} ${unit}${note ? ` (${note})` : ''}\n`);
  },
  repoRoot,
};

export function fmt(v: number): string {
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** Best (minimum) wall time of `runs` runs of a shell command, in seconds. */
export function timeShell(cmd: string, runs = 3): number {
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = spawnSync('sh', ['-c', cmd], { stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`bench: "${cmd}" failed`);
    best = Math.min(best, (performance.now() - t) / 1000);
  }
  return best;
}

/** Bulk read every RAM range in 1 MiB chunks into one reused buffer; seconds for the best of 3. */
export function timeBulkRead(mem: PhysicalMemory): { seconds: number; bytes: number } {
  const buf = Buffer.allocUnsafe(1 << 20);
  let best = Infinity;
  let bytes = 0;
  for (let i = 0; i < 3; i++) {
    bytes = 0;
    const t = performance.now();
    for (const r of mem.ranges) {
      for (let off = 0n; off < r.size; off += 1n << 20n) {
        const n = Number(r.size - off < 1n << 20n ? r.size - off : 1n << 20n);
        mem.read(r.start + off, n, n === buf.length ? buf : undefined);
        bytes += n;
      }
    }
    best = Math.min(best, (performance.now() - t) / 1000);
  }
  return { seconds: best, bytes };
}

async function memorySection(): Promise<void> {
  const g = await ctx.guest('vigil-bench-256m');
  const machine = await connectQemu(g.qmp);
  try {
    const cat = timeShell(`cat ${g.memoryFile} > /dev/null`);
    const catRate = g.memoryBytes / cat / 1e9;
    ctx.record('memory', 'cat of the RAM file', catRate, 'GB/s', 'the machine limit for this file');
    const bulk = timeBulkRead(machine.memory);
    const ours = bulk.bytes / bulk.seconds / 1e9;
    ctx.record('memory', 'vigil bulk guest-physical read (1 MiB chunks)', ours, 'GB/s');
    ctx.record('memory', 'bulk read vs cat', (100 * ours) / catRate, '%', 'target ≥ 80 %');

    // Random 8-byte reads, uncached (one pread each) and through the per-sweep page cache.
    const ram = machine.memory.ranges;
    const total = ram.reduce((a, r) => a + Number(r.size), 0);
    const addrs: bigint[] = [];
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < 200_000; i++) {
      let off = Math.floor(rand() * (total - 8));
      for (const r of ram) {
        if (off < Number(r.size) - 8) {
          addrs.push(r.start + BigInt(off & ~7));
          break;
        }
        off -= Number(r.size);
      }
    }
    let t = performance.now();
    for (const a of addrs) machine.memory.read(a, 8);
    ctx.record(
      'memory',
      'random 8-byte reads, uncached',
      addrs.length / ((performance.now() - t) / 1000) / 1e6,
      'M/s',
    );
    const cached = new CachedPhysicalMemory(machine.memory, new Epoch(), 1 << 17);
    const hot = addrs.slice(0, 20_000);
    for (const a of hot) cached.read(a, 8);
    t = performance.now();
    for (let k = 0; k < 10; k++) for (const a of hot) cached.read(a, 8);
    ctx.record(
      'memory',
      'random 8-byte reads, page cache warm',
      (hot.length * 10) / ((performance.now() - t) / 1000) / 1e6,
      'M/s',
    );

    // Translations of mapped kernel addresses: cold (every cache dropped before each) and warm.
    const kernel = Kernel.bootstrap(machine.memory, { live: false });
    const vas: bigint[] = [];
    for (const m of kernel.space.walkMappings(undefined, { maxEntries: 1 << 20 })) {
      vas.push(m.va);
      if (vas.length >= 100_000) break;
    }
    const epoch = new Epoch();
    const space = new PageTableAddressSpace(
      machine.memory,
      kernel.kaslr.kernelPgd,
      kernel.space.mode,
      new PagingCache(epoch),
    );
    const coldN = Math.min(20_000, vas.length);
    t = performance.now();
    for (let i = 0; i < coldN; i++) {
      epoch.bump();
      space.translate(vas[i]!);
    }
    ctx.record(
      'memory',
      'translations, cold (all caches dropped each time)',
      coldN / ((performance.now() - t) / 1000) / 1e3,
      'k/s',
    );
    for (const va of vas) space.translate(va);
    t = performance.now();
    for (let k = 0; k < 5; k++) for (const va of vas) space.translate(va);
    ctx.record(
      'memory',
      'translations, warm',
      (vas.length * 5) / ((performance.now() - t) / 1000) / 1e6,
      'M/s',
    );
  } finally {
    await machine.close();
  }
}

/** Bootstrap in a fresh Node process: nothing cached but what the OS caches for the RAM file. */
function coldBootstrap(memoryFile: string): { totalMs: number; processMs: number } {
  const script = `
    const { openMemoryFile } = await import(${JSON.stringify(join(repoRoot, 'dist/src/vmm/memory/index.js'))});
    const { Kernel } = await import(${JSON.stringify(join(repoRoot, 'dist/src/os/linux/kernel.js'))});
    const k = Kernel.bootstrap(openMemoryFile(${JSON.stringify(memoryFile)}, undefined, { live: true }), { live: true });
    process.stdout.write(JSON.stringify(k.timings));`;
  const t = performance.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  const processMs = performance.now() - t;
  if (r.status !== 0) throw new Error(`bench: bootstrap failed: ${r.stderr}`);
  return { totalMs: JSON.parse(r.stdout).totalMs, processMs };
}

async function bootstrapSection(): Promise<void> {
  for (const name of ['vigil-bench-256m', 'vigil-bench-3g'] as const) {
    const g = await ctx.guest(name);
    let best = { totalMs: Infinity, processMs: Infinity };
    for (let i = 0; i < 3; i++) {
      const r = coldBootstrap(g.memoryFile);
      if (r.totalMs < best.totalMs) best = r;
    }
    ctx.record(
      'bootstrap',
      `cold bootstrap, ${g.memory} guest`,
      best.totalMs,
      'ms',
      `whole node process ${fmt(best.processMs)} ms`,
    );
  }
}

const all: Record<string, () => Promise<void>> = {
  memory: memorySection,
  bootstrap: bootstrapSection,
  ...sections(ctx),
};

async function main(): Promise<void> {
  const onlyArg = process.argv.indexOf('--only');
  const only = onlyArg >= 0 ? process.argv[onlyArg + 1]!.split(',') : Object.keys(all);
  const t = performance.now();
  try {
    for (const name of only) {
      const run = all[name];
      if (!run) throw new Error(`bench: no section ${name} (have ${Object.keys(all).join(', ')})`);
      process.stderr.write(`bench: ${name}\n`);
      await run();
    }
  } finally {
    if (!process.argv.includes('--keep')) for (const g of guests.keys()) await stopGuest(g);
  }
  let out = `# vigil benchmark — ${new Date().toISOString()}\n\n| section | metric | value | note |\n| --- | --- | --- | --- |\n`;
  for (const r of results)
    out += `| ${r.section} | ${r.metric} | ${fmt(r.value)} ${r.unit} | ${r.note ?? ''} |\n`;
  out += `\n(${((performance.now() - t) / 1000).toFixed(0)} s, ${(await import('node:os')).cpus().length} cores)\n`;
  process.stdout.write(out);
  writeFileSync(join(repoRoot, 'bench', 'results.json'), JSON.stringify(results, null, 2) + '\n');
}

await main();
