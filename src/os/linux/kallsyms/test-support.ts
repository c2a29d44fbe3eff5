// Test support: guest-physical memory over a Buffer or a raw dump file, and a kallsyms encoder that
// follows scripts/kallsyms.c (token-table compression, ULEB128 lengths, markers, the table layouts of
// the kernel versions we read). Used by the tests of kallsyms, banner and KASLR only.

import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VigilError } from '../../../util/errors.js';
import type { PhysicalMemory, PhysRange } from '../../../vmm/types.js';

/** Guest-physical memory backed by one Buffer at `start`; bytes outside read as zero. */
export function bufferMemory(buf: Buffer, start = 0n): PhysicalMemory {
  const ranges: PhysRange[] = [{ start, size: BigInt(buf.length) }];
  const read = (paddr: bigint, length: number, into?: Buffer): Buffer => {
    const out = into ?? Buffer.alloc(length);
    out.fill(0, 0, length);
    const from = paddr - start;
    const lo = from < 0n ? 0n : from;
    const hi = from + BigInt(length) > BigInt(buf.length) ? BigInt(buf.length) : from + BigInt(length);
    if (hi > lo) buf.copy(out, Number(lo - from), Number(lo), Number(hi));
    return out.subarray(0, length);
  };
  return {
    description: 'test buffer',
    ranges,
    read,
    readStrict(paddr, length) {
      if (paddr < start || paddr + BigInt(length) > start + BigInt(buf.length))
        throw new VigilError('vmm', 'unmapped', `0x${paddr.toString(16)} outside test memory`);
      return read(paddr, length);
    },
    close() {},
  };
}

/** A real guest's raw RAM dump for the opt-in tests: VIGIL_GUEST_RAW, or the dev guest's dump. */
export const GUEST_RAW = process.env.VIGIL_GUEST_RAW ?? '/tmp/dev/a.raw';

/** Guest-physical memory from a raw dump (byte i = guest-physical address i), read with fs.readSync. */
export function rawFileMemory(path: string): PhysicalMemory {
  const fd = openSync(path, 'r');
  const size = BigInt(fstatSync(fd).size);
  const read = (paddr: bigint, length: number, into?: Buffer): Buffer => {
    const out = (into ?? Buffer.allocUnsafe(length)).subarray(0, length);
    const got =
      paddr < size ? readSync(fd, out, 0, Math.min(length, Number(size - paddr)), Number(paddr)) : 0;
    if (got < length) out.fill(0, got);
    return out;
  };
  return {
    description: `raw file ${path}`,
    ranges: [{ start: 0n, size }],
    read,
    readStrict(paddr, length) {
      if (paddr + BigInt(length) > size) throw new VigilError('vmm', 'unmapped', 'past the end of the dump');
      return read(paddr, length);
    },
    close: () => closeSync(fd),
  };
}

export interface SpecSymbol {
  name: string;
  type: string;
  address: bigint;
}

export type SpecLayout =
  /** ≤ 6.1: offsets, relative_base, num_syms, names, markers, token_table, token_index. */
  | 'v6.1'
  /** 6.2–6.3 (and 6.1 stable with the backport): seqs_of_names of 3 bytes between markers and tokens. */
  | 'v6.2'
  /** ≥ 6.4: num_syms, names, markers, token_table, token_index, offsets, relative_base, seqs_of_names. */
  | 'v6.4'
  /** !KALLSYMS_BASE_RELATIVE: absolute addresses where the offsets were (≤ 6.3 order). */
  | 'absolute'
  /** ≥ 7.0: place-relative offsets after the token index, no relative_base. */
  | 'v7.0';

export interface BuiltKallsyms {
  /** The tables, laid out as the kernel's .rodata would hold them (offset 0 is 8-aligned). */
  image: Buffer;
  tokens: string[];
  /** Offsets in `image`. */
  at: {
    numSyms: number;
    names: number;
    markers: number;
    tokenTable: number;
    tokenIndex: number;
    addresses: number;
    seqs?: number;
  };
  relativeBase: bigint;
}

const align8 = (v: number): number => Math.ceil(v / 8) * 8;

/**
 * Compress names as scripts/kallsyms.c does: every character used keeps its own code, then the free
 * codes (from 255 down) take the most profitable adjacent pair, repeatedly.
 */
export function compressNames(raw: Uint8Array[]): { compressed: number[][]; tokens: string[] } {
  const table: (number[] | undefined)[] = new Array(256).fill(undefined);
  const syms = raw.map((r) => Array.from(r));
  for (const s of syms) for (const c of s) table[c] = [c];
  const profit = new Int32Array(65536);
  for (const s of syms) for (let i = 0; i + 1 < s.length; i++) profit[s[i] | (s[i + 1] << 8)]++;
  for (let code = 255; code >= 0; code--) {
    if (table[code]) continue;
    let best = 0;
    for (let k = 1; k < 65536; k++) if (profit[k] > profit[best]) best = k;
    if (profit[best] <= 0) break;
    const a = best & 0xff;
    const b = best >> 8;
    table[code] = [a, b];
    for (const s of syms) {
      let changed = false;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) {
          if (!changed) for (let j = 0; j + 1 < s.length; j++) profit[s[j] | (s[j + 1] << 8)]--;
          changed = true;
          s.splice(i, 2, code);
        }
      }
      if (changed) for (let j = 0; j + 1 < s.length; j++) profit[s[j] | (s[j + 1] << 8)]++;
    }
  }
  const expand = (code: number): string => {
    const t = table[code];
    if (!t) return '';
    if (t.length === 1 && t[0] === code) return String.fromCharCode(code);
    return t.map(expand).join('');
  };
  return { compressed: syms, tokens: Array.from({ length: 256 }, (_, c) => expand(c)) };
}

/** Encode symbols (sorted by address here) into kallsyms tables in the given layout. */
export function buildKallsyms(
  symbols: readonly SpecSymbol[],
  layout: SpecLayout = 'v6.1',
  options: { relativeBase?: bigint; tableVirt?: bigint } = {},
): BuiltKallsyms {
  const sorted = [...symbols].sort((x, y) => (x.address < y.address ? -1 : x.address > y.address ? 1 : 0));
  const n = sorted.length;
  const { compressed, tokens } = compressNames(sorted.map((s) => Buffer.from(s.type + s.name, 'latin1')));
  const relativeBase = options.relativeBase ?? sorted.find((s) => s.type !== 'A')?.address ?? 0n;

  const names: number[] = [];
  const markers: number[] = [];
  compressed.forEach((c, i) => {
    if ((i & 0xff) === 0) markers.push(names.length);
    if (c.length <= 0x7f) names.push(c.length);
    else names.push((c.length & 0x7f) | 0x80, (c.length >> 7) & 0x7f);
    names.push(...c);
  });
  const tokenBytes = Buffer.from(tokens.map((t) => t + '\0').join(''), 'latin1');
  const tokenIndex = Buffer.alloc(512);
  let off = 0;
  tokens.forEach((t, i) => {
    tokenIndex.writeUInt16LE(off, 2 * i);
    off += t.length + 1;
  });
  const byName = sorted.map((_, i) => i).sort((a, b) => (sorted[a].name < sorted[b].name ? -1 : 1));

  const parts: Buffer[] = [];
  const at: Partial<BuiltKallsyms['at']> = {};
  let size = 0;
  const put = (key: keyof BuiltKallsyms['at'] | undefined, b: Buffer) => {
    size = align8(size);
    if (key) at[key] = size;
    parts.push(b);
    size += b.length;
    const pad = align8(size) - size;
    if (pad) parts.push(Buffer.alloc(pad));
  };
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return b;
  };
  const u64 = (v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return b;
  };
  const offsets = (placeBase?: bigint) => {
    const b = Buffer.alloc(4 * n);
    sorted.forEach((s, i) => {
      let v: bigint;
      if (placeBase !== undefined) v = s.address - (placeBase + BigInt(4 * i));
      else if (s.type === 'A') v = s.address;
      else v = relativeBase - s.address - 1n;
      b.writeInt32LE(Number(BigInt.asIntN(32, v)), 4 * i);
    });
    return b;
  };
  const absolute = () => Buffer.concat(sorted.map((s) => u64(s.address)));
  const seqs = (width: 3 | 4) => {
    const b = Buffer.alloc(width * n);
    byName.forEach((seq, i) => (width === 4 ? b.writeUInt32LE(seq, 4 * i) : b.writeUIntBE(seq, 3 * i, 3)));
    return b;
  };
  const head = () => {
    put('numSyms', u32(n));
    put('names', Buffer.from(names));
    put('markers', Buffer.concat(markers.map(u32)));
  };
  const tokenTables = () => {
    put('tokenTable', tokenBytes);
    put('tokenIndex', tokenIndex);
  };
  if (layout === 'v6.4' || layout === 'v7.0') {
    head();
    tokenTables();
    if (layout === 'v6.4') {
      put('addresses', offsets());
      put(undefined, u64(relativeBase));
    } else {
      // The offsets' own virtual address: the table virtual address + their offset in the image.
      const tableVirt = options.tableVirt ?? relativeBase + 0x1000000n;
      put('addresses', offsets(tableVirt + BigInt(align8(size))));
    }
    put('seqs', seqs(4));
  } else {
    if (layout === 'absolute') put('addresses', absolute());
    else {
      put('addresses', offsets());
      put(undefined, u64(relativeBase));
    }
    head();
    if (layout === 'v6.2') put('seqs', seqs(3));
    tokenTables();
  }
  return { image: Buffer.concat(parts), tokens, at: at as BuiltKallsyms['at'], relativeBase };
}

/** Bytes of test/fixtures/kallsyms/<name>, found from the working directory or above this file. */
export function readFixture(name: string): Buffer {
  const tries = [join(process.cwd(), 'test/fixtures/kallsyms', name)];
  for (let d = dirname(fileURLToPath(import.meta.url)); d !== dirname(d); d = dirname(d))
    tries.push(join(d, 'test/fixtures/kallsyms', name));
  const found = tries.find((p) => existsSync(p));
  if (!found) throw new Error(`fixture ${name} not found (run from the repository root)`);
  return readFileSync(found);
}

const KMAP = 0xffffffff80000000n;
const MB2 = 0x200000n;

export interface SyntheticKernelOptions {
  levels: 4 | 5;
  /** Physical load address of _text (2 MiB aligned). */
  textPhys?: bigint;
  /** Virtual KASLR offset (2 MiB multiple). */
  virtualOffset?: bigint;
  /** Map the image's second 2 MiB with 4 KiB pages, as the kernel does after splitting a large page. */
  split4k?: boolean;
  /** Embed kallsyms tables in the image in this layout. */
  kallsyms?: SpecLayout;
  /** Functions to add (for several marker groups). */
  fillers?: number;
  cpus?: number;
  /** Leave these symbols out. */
  omit?: readonly string[];
}

export interface SyntheticKernel {
  mem: PhysicalMemory;
  ram: Buffer;
  symbols: SpecSymbol[];
  textVirt: bigint;
  textPhys: bigint;
  pgdPhys: bigint;
  bannerPhys: bigint;
  banner: string;
  pageOffsetBase: bigint;
  perCpuOffsets: bigint[];
}

/**
 * A 16 MiB guest with a small x86-64 kernel image: page tables mapping the image at
 * __START_KERNEL_map + offset (4- or 5-level), linux_banner, the layout variables, per-CPU offsets
 * and, optionally, kallsyms tables describing it all.
 */
export function syntheticKernel(o: SyntheticKernelOptions): SyntheticKernel {
  const ram = Buffer.alloc(16 << 20);
  const textPhys = o.textPhys ?? 0x400000n;
  const textVirt = 0xffffffff81000000n + (o.virtualOffset ?? 0x2200000n);
  const va = (off: number) => textVirt + BigInt(off);
  const pa = (off: number) => Number(textPhys) + off;
  const symbols: SpecSymbol[] = [];
  const sym = (name: string, type: string, off: number) => {
    if (!o.omit?.includes(name)) symbols.push({ name, type, address: va(off) });
  };
  sym('_text', 'T', 0);
  sym('startup_64', 'T', 0);
  for (let i = 0; i < (o.fillers ?? 600); i++)
    sym(`func_${i.toString().padStart(4, '0')}`, i % 3 ? 't' : 'T', 0x1000 + i * 0x40);
  // Page tables inside the image's data, as init_top_pgt and level*_kernel_pgt are.
  const pgdOff = 0x100000;
  sym('init_top_pgt', 'D', pgdOff);
  const page = (k: number) => pgdOff + 0x1000 * k;
  const entry = (off: number, index: number, value: bigint) =>
    ram.writeBigUInt64LE(value, pa(off) + 8 * index);
  const TABLE = 0x63n; // present, writable, accessed, dirty
  let next = 1;
  let top = pgdOff;
  if (o.levels === 5) {
    const p4d = page(next++);
    entry(top, 511, BigInt(pa(p4d)) | TABLE);
    top = p4d;
  }
  const pud = page(next++);
  const pmd = page(next++);
  entry(top, 511, BigInt(pa(pud)) | TABLE);
  entry(pud, 510, BigInt(pa(pmd)) | TABLE);
  const first = Number((textVirt - KMAP) / MB2);
  for (let k = 0; k < 4; k++) {
    const phys = textPhys + BigInt(k) * MB2;
    if (k === 1 && o.split4k) {
      const pt = page(next++);
      entry(pmd, first + k, BigInt(pa(pt)) | TABLE);
      for (let j = 0; j < 512; j++) entry(pt, j, (phys + BigInt(j) * 0x1000n) | TABLE);
    } else entry(pmd, first + k, phys | TABLE | 0x80n);
  }
  // Data the KASLR step reads, in the second 2 MiB (the split one when split4k).
  const banner = 'Linux version 6.1.0-test (vigil@test) (gcc (Test) 12.2.0) #1 SMP PREEMPT_DYNAMIC Test';
  const bannerOff = 0x200100;
  ram.write(banner + '\n\0', pa(bannerOff), 'latin1');
  sym('linux_banner', 'D', bannerOff);
  const pageOffsetBase = o.levels === 5 ? 0xff3a87f380000000n : 0xffff9a5c40000000n;
  const vars: [string, bigint, 4 | 8][] = [
    ['page_offset_base', pageOffsetBase, 8],
    ['vmalloc_base', o.levels === 5 ? 0xff7c775780000000n : 0xffffb1a3c0000000n, 8],
    ['vmemmap_base', o.levels === 5 ? 0xfffda81ec0000000n : 0xffffe5e080000000n, 8],
    ['__pgtable_l5_enabled', o.levels === 5 ? 1n : 0n, 4],
    ['nr_cpu_ids', BigInt(o.cpus ?? 2), 4],
  ];
  vars.forEach(([name, value, size], i) => {
    const off = 0x201000 + 16 * i;
    if (size === 8) ram.writeBigUInt64LE(value, pa(off));
    else ram.writeUInt32LE(Number(value), pa(off));
    sym(name, 'D', off);
  });
  const perCpuOffsets = Array.from(
    { length: o.cpus ?? 2 },
    (_, i) => pageOffsetBase + 0x800000n + BigInt(i) * 0x40000n,
  );
  perCpuOffsets.forEach((v, i) => ram.writeBigUInt64LE(v, pa(0x202000) + 8 * i));
  sym('__per_cpu_offset', 'D', 0x202000);
  sym('init_task', 'D', 0x203000);
  sym('sys_call_table', 'R', 0x204000);
  sym('_end', 'B', 0x3ff000);
  if (o.kallsyms) {
    const tablesOff = 0x210000;
    const list = o.kallsyms === 'v7.0' ? symbols : [...symbols, ...percpuSymbols()];
    const built = buildKallsyms(list, o.kallsyms, { relativeBase: textVirt, tableVirt: va(tablesOff) });
    if (built.image.length > 0x3ff000 - tablesOff)
      throw new Error('kallsyms too big for the synthetic image');
    built.image.copy(ram, pa(tablesOff));
  }
  return {
    mem: bufferMemory(ram),
    ram,
    symbols,
    textVirt,
    textPhys,
    pgdPhys: BigInt(pa(pgdOff)),
    bannerPhys: BigInt(pa(bannerOff)),
    banner,
    pageOffsetBase,
    perCpuOffsets,
  };
}

/** Absolute per-CPU symbols as x86-64 kernels before 6.15 list them (type 'A', small addresses). */
export function percpuSymbols(): SpecSymbol[] {
  return [
    { name: 'fixed_percpu_data', type: 'A', address: 0n },
    { name: '__per_cpu_start', type: 'A', address: 0n },
    { name: 'cpu_debug_store', type: 'A', address: 0x1000n },
    { name: 'irq_stack_backing_store', type: 'A', address: 0x2000n },
    { name: 'cpu_tss_rw', type: 'A', address: 0x6000n },
    { name: '__per_cpu_end', type: 'A', address: 0x2c000n },
  ];
}
