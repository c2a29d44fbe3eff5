// Microbenchmark of x86-64 address translation: cold and warm translations per second, TLB misses over
// cached tables, 4 KiB virtual reads, readU64 and a full mapping walk.
//
//   node dist/bench/paging.js [--memory FILE --cr3 HEX --cr4 HEX | --synthetic] [--seconds S] [--json]
//
// Without --memory it uses the dev guest's RAM file (/dev/shm/vigil-dev-a, then /tmp/dev/a.raw) with the
// dev guest's kernel page tables (CR3 0x2a58000, CR4 0x751ef0: 5-level), else synthetic page tables.
// The file is read with the file offset as the guest-physical address (flat RAM below 4 GiB).

import fs from 'node:fs';

import { Epoch } from '../src/arch/epoch.js';
import { PageTableAddressSpace } from '../src/arch/x86_64/address-space.js';
import { PagingCache } from '../src/arch/x86_64/cache.js';
import { pagingModeFromCr4 } from '../src/arch/x86_64/paging.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../src/arch/x86_64/test-memory.js';
import type { PhysicalMemory } from '../src/vmm/types.js';

const DEV_FILES = ['/dev/shm/vigil-dev-a', '/tmp/dev/a.raw'];
const DEV_CR3 = 0x2a58000n;
const DEV_CR4 = 0x751ef0n;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** Guest RAM in a file, offset = guest-physical address; positioned reads on a kept-open descriptor. */
class FlatFileMemory implements PhysicalMemory {
  readonly description: string;
  readonly ranges;
  readonly #fd: number;

  constructor(path: string) {
    this.#fd = fs.openSync(path, 'r');
    const size = fs.fstatSync(this.#fd).size;
    this.ranges = [{ start: 0n, size: BigInt(size) }];
    this.description = `${path} (${size >> 20} MiB)`;
  }

  read(paddr: bigint, length: number, into?: Buffer): Buffer {
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    fs.readSync(this.#fd, out, 0, length, Number(paddr));
    return out;
  }

  readStrict(paddr: bigint, length: number): Buffer {
    return this.read(paddr, length);
  }

  close(): void {
    fs.closeSync(this.#fd);
  }
}

interface Source {
  memory: PhysicalMemory;
  cr3: bigint;
  cr4: bigint;
  label: string;
}

function openSource(): Source {
  const path = arg('memory');
  const cr3 = arg('cr3');
  const cr4 = arg('cr4');
  if (process.argv.includes('--synthetic')) return synthetic();
  if (path !== undefined) {
    return {
      memory: new FlatFileMemory(path),
      cr3: BigInt(cr3 ?? DEV_CR3),
      cr4: BigInt(cr4 ?? DEV_CR4),
      label: path,
    };
  }
  for (const file of DEV_FILES) {
    try {
      fs.accessSync(file, fs.constants.R_OK);
      return { memory: new FlatFileMemory(file), cr3: DEV_CR3, cr4: DEV_CR4, label: `dev guest ${file}` };
    } catch {
      // next candidate
    }
  }
  return synthetic();
}

/** 64 MiB of synthetic RAM: 5-level tables mapping 8192 scattered 4 KiB pages and a 2 MiB-page direct map. */
function synthetic(): Source {
  const MiB = 1024 * 1024;
  const memory = new BufferPhysicalMemory(64 * MiB);
  const builder = new PageTableBuilder(memory, 5, 48n * BigInt(MiB));
  for (let i = 0n; i < 8192n; i++) {
    builder.map(0xffff_ffff_c000_0000n + i * 0x3000n, ((i * 7919n) % 8192n) * 0x1000n, 0x1000n);
  }
  for (let i = 0n; i < 24n; i++)
    builder.map(0xff11_0000_0000_0000n + i * 0x20_0000n, i * 0x20_0000n, 0x20_0000n);
  return { memory, cr3: builder.root, cr4: 0x1020n, label: 'synthetic page tables' };
}

/** Run `fn` in rounds until `seconds` pass; returns operations per second. */
function rate(seconds: number, opsPerRound: number, fn: () => void): number {
  fn(); // warm the JIT
  let ops = 0;
  const start = performance.now();
  let now = start;
  while (now - start < seconds * 1000) {
    fn();
    ops += opsPerRound;
    now = performance.now();
  }
  return (ops * 1000) / (now - start);
}

function main(): void {
  const seconds = Number(arg('seconds') ?? '1');
  const src = openSource();
  const mode = pagingModeFromCr4(src.cr4);
  const epoch = new Epoch();
  const space = new PageTableAddressSpace(src.memory, src.cr3, mode, new PagingCache(epoch));

  // The pages to translate: every mapped 4 KiB page of the kernel half, sampled evenly.
  const walkStart = performance.now();
  const leaves = [...space.walkMappings({ start: 1n << 63n, end: 1n << 64n })];
  const walkMs = performance.now() - walkStart;
  const ramEnd = src.memory.ranges.reduce((m, r) => (r.start + r.size > m ? r.start + r.size : m), 0n);
  const inRam = leaves.filter((m) => m.paddr + m.size <= ramEnd);
  if (inRam.length === 0)
    throw new Error(`no mappings found from CR3 ${src.cr3.toString(16)} in ${src.label}`);
  const SAMPLE = 4096;
  const vas: bigint[] = [];
  for (let i = 0; i < SAMPLE; i++) {
    const m = inRam[Math.floor((i * inRam.length) / SAMPLE)]!;
    vas.push(m.va + ((BigInt(i) * 0x1000n) % m.size));
  }
  const allLeaves = [...space.walkMappings()].length;
  const walkRate = rate(seconds, allLeaves, () => {
    for (const _ of space.walkMappings()) {
      // count only
    }
  });

  const cold = rate(seconds, vas.length, () => {
    for (const va of vas) {
      epoch.bump();
      space.translate(va);
    }
  });
  const warm = rate(seconds, vas.length * 16, () => {
    for (let r = 0; r < 16; r++) for (const va of vas) space.translate(va);
  });
  // The same with an epoch that has a time limit: every translation reads the clock.
  const agedSpace = new PageTableAddressSpace(
    src.memory,
    src.cr3,
    mode,
    new PagingCache(new Epoch({ maxAgeMs: 60_000 })),
  );
  const warmAged = rate(seconds, vas.length * 16, () => {
    for (let r = 0; r < 16; r++) for (const va of vas) agedSpace.translate(va);
  });
  const detailed = rate(seconds, vas.length, () => {
    for (const va of vas) space.translateDetailed(va);
  });
  // TLB misses over cached page-table pages: a one-entry TLB misses on every new page.
  const missCache = new PagingCache(epoch, { tlbEntries: 1 });
  const missSpace = new PageTableAddressSpace(src.memory, src.cr3, mode, missCache);
  const tlbMiss = rate(seconds, vas.length, () => {
    for (const va of vas) missSpace.translate(va);
  });
  const page = Buffer.alloc(4096);
  const read4k = rate(seconds, vas.length, () => {
    for (const va of vas) space.readInto(va & ~0xfffn, page);
  });
  const read4kAlloc = rate(seconds, vas.length, () => {
    for (const va of vas) space.read(va & ~0xfffn, 4096);
  });
  const u64 = rate(seconds, vas.length, () => {
    for (const va of vas) space.readU64(va & ~7n);
  });
  // One 1 MiB read across contiguous kernel mappings (gathers physical runs).
  const big = inRam.find((m) => m.size >= 0x20_0000n) ?? inRam[0]!;
  const bigLen = Number(big.size < 0x10_0000n ? big.size : 0x10_0000n);
  const bigBuf = Buffer.alloc(bigLen);
  const readBig = rate(seconds, 1, () => space.readInto(big.va, bigBuf));

  const results = {
    source: src.label,
    mode,
    kernelLeaves: leaves.length,
    allLeaves,
    firstWalkMs: Math.round(walkMs),
    walkLeavesPerSec: Math.round(walkRate),
    coldTranslatePerSec: Math.round(cold),
    warmTranslatePerSec: Math.round(warm),
    warmTranslateMaxAgeEpochPerSec: Math.round(warmAged),
    warmTranslateDetailedPerSec: Math.round(detailed),
    tlbMissTablesCachedPerSec: Math.round(tlbMiss),
    read4kIntoPerSec: Math.round(read4k),
    read4kIntoMBps: Math.round((read4k * 4096) / 1e6),
    read4kAllocPerSec: Math.round(read4kAlloc),
    readU64PerSec: Math.round(u64),
    [`read${bigLen >> 10}KiBMBps`]: Math.round((readBig * bigLen) / 1e6),
  };
  if (process.argv.includes('--json')) console.log(JSON.stringify(results));
  else
    for (const [k, v] of Object.entries(results))
      console.log(`${k.padEnd(30)} ${typeof v === 'number' ? v.toLocaleString('en-US') : v}`);
  src.memory.close();
}

main();
