// Synthetic memory images for tests, written to the formats' specifications: QEMU ELF cores (ELF64
// header, program headers, CORE and QEMU notes as target/i386/arch_dump.c writes them) and LiME files.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface SyntheticLoad {
  readonly paddr: bigint;
  readonly data: Buffer;
  /** p_memsz; default data.length. Larger than data: the tail reads as zero. */
  readonly memsz?: bigint;
}

export interface SyntheticCpu {
  readonly rip: bigint;
  readonly rsp: bigint;
  readonly cr0: bigint;
  readonly cr3: bigint;
  readonly cr4: bigint;
  readonly gsBase?: bigint;
  readonly kernelGsBase?: bigint;
}

export interface SyntheticElf {
  readonly loads: readonly SyntheticLoad[];
  readonly cpus?: readonly SyntheticCpu[];
  readonly type?: number;
  readonly machine?: number;
  /** Write e_phnum as PN_XNUM and the count in section header 0 (as for > 65534 segments). */
  readonly xnum?: boolean;
  /** QEMUCPUState size: 440 (QEMU 7.1+, with kernel_gs_base) or 432 (older). */
  readonly stateSize?: 432 | 440;
}

function note(name: string, type: number, desc: Buffer): Buffer {
  const nameBuf = Buffer.alloc((name.length + 1 + 3) & ~3);
  nameBuf.write(name, 'latin1');
  const head = Buffer.alloc(12);
  head.writeUInt32LE(name.length + 1, 0);
  head.writeUInt32LE(desc.length, 4);
  head.writeUInt32LE(type, 8);
  return Buffer.concat([head, nameBuf, desc, Buffer.alloc(((desc.length + 3) & ~3) - desc.length)]);
}

function prstatus(cpu: SyntheticCpu, id: number): Buffer {
  const d = Buffer.alloc(336);
  d.writeUInt32LE(id, 32);
  d.writeBigUInt64LE(cpu.rip, 112 + 16 * 8);
  d.writeBigUInt64LE(cpu.rsp, 112 + 19 * 8);
  return d;
}

function qemuState(cpu: SyntheticCpu, size: number): Buffer {
  const d = Buffer.alloc(size);
  d.writeUInt32LE(1, 0);
  d.writeUInt32LE(size, 4);
  d.writeBigUInt64LE(cpu.rsp, 56);
  d.writeBigUInt64LE(cpu.rip, 136);
  d.writeUInt32LE(0x10, 152); // cs selector
  d.writeBigUInt64LE(cpu.gsBase ?? 0n, 152 + 4 * 24 + 16);
  d.writeBigUInt64LE(cpu.cr0, 392);
  d.writeBigUInt64LE(cpu.cr3, 416);
  d.writeBigUInt64LE(cpu.cr4, 424);
  if (size >= 440) d.writeBigUInt64LE(cpu.kernelGsBase ?? 0n, 432);
  return d;
}

/** Bytes of an ELF core as QEMU's dump-guest-memory (paging: false) lays it out. */
export function buildElfCore(spec: SyntheticElf): Buffer {
  const cpus = spec.cpus ?? [];
  const notes = Buffer.concat([
    ...cpus.map((c, i) => note('CORE', 1, prstatus(c, i + 1))),
    ...cpus.map((c) => note('QEMU', 0, qemuState(c, spec.stateSize ?? 440))),
  ]);
  const phnum = spec.loads.length + 1;
  const phoff = 64;
  const shoff = phoff + phnum * 56;
  const noteOff = shoff + (spec.xnum ? 64 : 0);
  let dataOff = noteOff + notes.length;
  const eh = Buffer.alloc(64);
  eh.writeUInt32BE(0x7f454c46, 0);
  eh[4] = 2; // ELFCLASS64
  eh[5] = 1; // little-endian
  eh[6] = 1;
  eh.writeUInt16LE(spec.type ?? 4, 16);
  eh.writeUInt16LE(spec.machine ?? 62, 18);
  eh.writeUInt32LE(1, 20);
  eh.writeBigUInt64LE(BigInt(phoff), 32);
  eh.writeBigUInt64LE(spec.xnum ? BigInt(shoff) : 0n, 40);
  eh.writeUInt16LE(64, 52);
  eh.writeUInt16LE(56, 54);
  eh.writeUInt16LE(spec.xnum ? 0xffff : phnum, 56);
  eh.writeUInt16LE(64, 58);
  eh.writeUInt16LE(spec.xnum ? 1 : 0, 60);
  const ph = Buffer.alloc(phnum * 56);
  ph.writeUInt32LE(4, 0); // PT_NOTE
  ph.writeBigUInt64LE(BigInt(noteOff), 8);
  ph.writeBigUInt64LE(BigInt(notes.length), 32);
  ph.writeBigUInt64LE(BigInt(notes.length), 40);
  spec.loads.forEach((l, i) => {
    const o = (i + 1) * 56;
    ph.writeUInt32LE(1, o); // PT_LOAD
    ph.writeBigUInt64LE(BigInt(dataOff), o + 8);
    ph.writeBigUInt64LE(l.paddr, o + 24);
    ph.writeBigUInt64LE(BigInt(l.data.length), o + 32);
    ph.writeBigUInt64LE(l.memsz ?? BigInt(l.data.length), o + 40);
    dataOff += l.data.length;
  });
  const sh = Buffer.alloc(spec.xnum ? 64 : 0);
  if (spec.xnum) sh.writeUInt32LE(phnum, 44);
  return Buffer.concat([eh, ph, sh, notes, ...spec.loads.map((l) => l.data)]);
}

/** Bytes of a LiME file: per range a 32-byte header (magic, version 1, start, inclusive end) and data. */
export function buildLime(ranges: readonly { start: bigint; data: Buffer }[]): Buffer {
  return Buffer.concat(
    ranges.flatMap((r) => {
      const h = Buffer.alloc(32);
      h.writeUInt32LE(0x4c694d45, 0);
      h.writeUInt32LE(1, 4);
      h.writeBigUInt64LE(r.start, 8);
      h.writeBigUInt64LE(r.start + BigInt(r.data.length) - 1n, 16);
      return [h, r.data];
    }),
  );
}

/** Deterministic pseudo-random bytes (xorshift), so tests can tell every page from every other. */
export function patternBytes(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** A scratch directory removed by the returned cleanup. */
export function scratchDir(base = tmpdir()): {
  dir: string;
  file: (name: string, data: Buffer | string) => string;
  done: () => void;
} {
  const dir = mkdtempSync(join(base, 'vigil-mem-'));
  return {
    dir,
    file: (name, data) => {
      const p = join(dir, name);
      writeFileSync(p, data);
      return p;
    },
    done: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Text of test/fixtures/memory/<name>, found from the working directory or above this file. */
export function readFixture(name: string): string {
  const tries = [join(process.cwd(), 'test/fixtures/memory', name)];
  for (let d = dirname(fileURLToPath(import.meta.url)); d !== dirname(d); d = dirname(d)) {
    tries.push(join(d, 'test/fixtures/memory', name));
  }
  const found = tries.find((p) => existsSync(p));
  if (!found) throw new Error(`fixture ${name} not found (run from the repository root)`);
  return readFileSync(found, 'utf8');
}
