// QEMU's ELF core (dump-guest-memory, paging: false): PT_LOAD headers map guest-physical ranges to file
// offsets, and PT_NOTE holds per-vCPU state: an NT_PRSTATUS note ("CORE") with the general registers and
// a "QEMU" note with QEMUCPUState, which also carries CR0–CR4. Layouts from QEMU target/i386/arch_dump.c.
// The file is untrusted: every count, size and offset is bounded before it is used.

import { VigilError } from '../../util/errors.js';
import type { X86Registers } from '../types.js';
import { readUpTo } from './fileio.js';
import { type Segment, hex, normalizeSegments } from './segments.js';

/** Registers of one vCPU recorded in a dump. */
export interface DumpCpu {
  /** vCPU number, 0-based, in the order the dump lists them. */
  readonly index: number;
  readonly registers: X86Registers;
  /**
   * Fields derived rather than read. QEMU's note has no EFER: `efer` is LME|LMA (0x500) when CR0.PG and
   * CR4.PAE are set in a 64-bit core, else 0; NXE and SCE are unknown.
   */
  readonly inferred: readonly (keyof X86Registers)[];
}

export interface ElfCore {
  readonly segments: Segment[];
  readonly cpus: DumpCpu[];
}

const ET_CORE = 4;
const EM_386 = 3;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const PT_NOTE = 4;
const PN_XNUM = 0xffff;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
/** A guest with this many RAM ranges does not exist; a header claiming more is hostile or broken. */
const MAX_PHDRS = 1 << 18;
/** Notes are ~800 bytes per vCPU; 16 MiB covers any real machine. */
const MAX_NOTES = 16 << 20;
const MAX_CPUS = 8192;

/** QEMUCPUState up to cr[4]; QEMU 7.1+ appends kernel_gs_base (440 bytes). */
const QEMU_STATE_MIN = 432;

const malformed = (msg: string) => new VigilError('vmm', 'malformed', msg);

/** Parse the ELF header and program headers of an ELF core open at `fd` (file of `fileSize` bytes). */
export function readElfCore(fd: number, fileSize: number, path: string): ElfCore {
  const eh = readUpTo(fd, EHDR_SIZE, 0);
  if (eh.length < EHDR_SIZE) throw malformed(`truncated ELF header in ${path} (${eh.length} bytes)`);
  if (eh.readUInt32BE(0) !== 0x7f454c46) throw malformed(`${path} is not an ELF file`);
  const cls = eh[4];
  if (cls !== 2) {
    throw new VigilError(
      'vmm',
      'unsupported',
      `${path}: 32-bit ELF cores are not supported (x86-64 guests only)`,
    );
  }
  if (eh[5] !== 1) throw new VigilError('vmm', 'unsupported', `${path}: big-endian ELF is not an x86 core`);
  const type = eh.readUInt16LE(16);
  if (type !== ET_CORE)
    throw malformed(`${path} is an ELF file but not a core dump (e_type ${type}, want 4)`);
  const machine = eh.readUInt16LE(18);
  if (machine === EM_386) {
    throw new VigilError(
      'vmm',
      'unsupported',
      `${path}: i386 core (the guest CPU was not in 64-bit mode when it was dumped)`,
    );
  }
  if (machine !== EM_X86_64) {
    throw new VigilError('vmm', 'unsupported', `${path}: ELF core for machine ${machine}, not x86-64`);
  }
  const phoff = Number(eh.readBigUInt64LE(32));
  const shoff = Number(eh.readBigUInt64LE(40));
  const phentsize = eh.readUInt16LE(54);
  let phnum = eh.readUInt16LE(56);
  if (phentsize !== PHDR_SIZE)
    throw malformed(`${path}: program header size ${phentsize}, want ${PHDR_SIZE}`);
  if (phnum === PN_XNUM) {
    // More than 65534 headers: the real count is sh_info of section header 0.
    if (shoff <= 0 || shoff + 64 > fileSize) throw malformed(`${path}: PN_XNUM without a section header 0`);
    const sh0 = readUpTo(fd, 64, shoff);
    phnum = sh0.readUInt32LE(44);
  }
  if (phnum === 0) throw malformed(`${path}: ELF core has no program headers`);
  if (phnum > MAX_PHDRS)
    throw new VigilError('vmm', 'bound', `${path}: ${phnum} program headers (limit ${MAX_PHDRS})`);
  if (phoff + phnum * PHDR_SIZE > fileSize)
    throw malformed(`truncated dump: program headers end past end of file`);
  const ph = readUpTo(fd, phnum * PHDR_SIZE, phoff);

  const loads: Segment[] = [];
  const notes: Buffer[] = [];
  let noteBytes = 0;
  for (let i = 0; i < phnum; i++) {
    const o = i * PHDR_SIZE;
    const ptype = ph.readUInt32LE(o);
    const offset = ph.readBigUInt64LE(o + 8);
    const paddr = ph.readBigUInt64LE(o + 24);
    const filesz = ph.readBigUInt64LE(o + 32);
    const memsz = ph.readBigUInt64LE(o + 40);
    if (offset + filesz > BigInt(fileSize)) {
      throw malformed(
        `truncated dump: segment ${i} (guest-physical ${hex(paddr)}, ${hex(filesz)} bytes at file offset ` +
          `${hex(offset)}) ends past end of file (${hex(fileSize)} bytes)`,
      );
    }
    if (ptype === PT_LOAD) {
      if (memsz === 0n) continue;
      if (filesz > memsz) throw malformed(`${path}: segment ${i} stores more bytes than it maps`);
      loads.push({ start: paddr, size: memsz, offset, stored: filesz });
    } else if (ptype === PT_NOTE && filesz > 0n) {
      noteBytes += Number(filesz);
      if (noteBytes > MAX_NOTES)
        throw new VigilError('vmm', 'bound', `${path}: notes exceed ${MAX_NOTES} bytes`);
      notes.push(readUpTo(fd, Number(filesz), Number(offset)));
    }
  }
  if (loads.length === 0) throw malformed(`${path}: ELF core has no PT_LOAD segments (no memory)`);
  // paging:true cores can map the same guest-physical page from several virtual addresses: keep one.
  return { segments: normalizeSegments(loads, true), cpus: parseCoreNotes(Buffer.concat(notes)) };
}

interface Note {
  name: string;
  type: number;
  desc: Buffer;
}

/** Split a PT_NOTE payload into notes (ELF64 core notes use 4-byte alignment, as QEMU writes them). */
function splitNotes(buf: Buffer): Note[] {
  const out: Note[] = [];
  let o = 0;
  while (o + 12 <= buf.length) {
    const namesz = buf.readUInt32LE(o);
    const descsz = buf.readUInt32LE(o + 4);
    const type = buf.readUInt32LE(o + 8);
    if (namesz > buf.length || descsz > buf.length) {
      throw malformed(`ELF note at offset ${o} runs past the end of the notes`);
    }
    const nameAt = o + 12;
    const descAt = nameAt + align4(namesz);
    const next = descAt + align4(descsz);
    if (next > buf.length) throw malformed(`ELF note at offset ${o} runs past the end of the notes`);
    const nameBytes = buf.subarray(nameAt, nameAt + namesz);
    const nul = nameBytes.indexOf(0);
    out.push({
      name: nameBytes.subarray(0, nul >= 0 ? nul : namesz).toString('latin1'),
      type,
      desc: buf.subarray(descAt, descAt + descsz),
    });
    if (out.length > MAX_CPUS * 4)
      throw new VigilError('vmm', 'bound', `more than ${MAX_CPUS * 4} ELF notes`);
    o = next;
  }
  return out;
}

const align4 = (n: number) => (n + 3) & ~3;

const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME_LMA = 0x500n;

/** QEMUCPUState → registers. Segment records are 24 bytes: selector, limit, flags, pad (u32), base (u64). */
function parseQemuState(d: Buffer, index: number): DumpCpu | undefined {
  if (d.length < QEMU_STATE_MIN) return undefined;
  const version = d.readUInt32LE(0);
  const size = d.readUInt32LE(4);
  if (version !== 1 || size < QEMU_STATE_MIN || size > d.length) return undefined;
  const q = (o: number) => d.readBigUInt64LE(o);
  const seg = (n: number) => 152 + n * 24; // cs ds es fs gs ss ldt tr gdt idt
  const cr0 = q(392);
  const cr4 = q(424);
  const registers: X86Registers = {
    rax: q(8),
    rbx: q(16),
    rcx: q(24),
    rdx: q(32),
    rsi: q(40),
    rdi: q(48),
    rsp: q(56),
    rbp: q(64),
    rip: q(136),
    eflags: q(144),
    cs: BigInt(d.readUInt32LE(seg(0))),
    fsBase: q(seg(3) + 16),
    gsBase: q(seg(4) + 16),
    cr0,
    cr2: q(408),
    cr3: q(416),
    cr4,
    efer: (cr0 & CR0_PG) !== 0n && (cr4 & CR4_PAE) !== 0n ? EFER_LME_LMA : 0n,
  };
  if (size >= QEMU_STATE_MIN + 8) registers.kernelGsBase = q(432);
  return { index, registers, inferred: ['efer'] };
}

/**
 * Per-vCPU registers from a core's notes. QEMU writes every vCPU's NT_PRSTATUS ("CORE"), then every
 * vCPU's "QEMU" note, in the same order. The QEMU note holds all that NT_PRSTATUS holds plus the control
 * registers, so it alone is used; a core from another writer (no QEMU notes) yields no DumpCpu, since
 * without CR3 its registers cannot anchor address translation.
 */
export function parseCoreNotes(buf: Buffer): DumpCpu[] {
  const out: DumpCpu[] = [];
  let index = 0;
  for (const note of splitNotes(buf)) {
    if (note.name !== 'QEMU' || note.type !== 0) continue;
    const cpu = parseQemuState(note.desc, index++);
    if (cpu) out.push(cpu);
    if (index >= MAX_CPUS) break;
  }
  return out;
}
