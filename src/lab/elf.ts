// The one thing the lab asks of a host executable's ELF header: which dynamic loader (PT_INTERP) it names,
// if any. A static binary names none; a dynamic one needs that loader in the guest at that very path.
import { closeSync, openSync, readSync } from 'node:fs';

const PT_INTERP = 3;

export interface ElfLinkage {
  /** A 64-bit ELF file at all. */
  elf64: boolean;
  /** The program interpreter's path, for a dynamically linked executable. */
  interpreter?: string;
}

export function elfLinkage(path: string): ElfLinkage {
  const fd = openSync(path, 'r');
  try {
    const hdr = Buffer.alloc(64);
    if (readSync(fd, hdr, 0, 64, 0) < 64 || hdr.readUInt32BE(0) !== 0x7f454c46 || hdr[4] !== 2) {
      return { elf64: false };
    }
    const phoff = Number(hdr.readBigUInt64LE(32));
    const phentsize = hdr.readUInt16LE(54);
    const phnum = Math.min(hdr.readUInt16LE(56), 64);
    if (phentsize < 56) return { elf64: true };
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const at = i * phentsize;
      if (ph.readUInt32LE(at) !== PT_INTERP) continue;
      const size = Math.min(Number(ph.readBigUInt64LE(at + 32)), 4096);
      const buf = Buffer.alloc(size);
      readSync(fd, buf, 0, size, Number(ph.readBigUInt64LE(at + 8)));
      const nul = buf.indexOf(0);
      return { elf64: true, interpreter: buf.toString('utf8', 0, nul < 0 ? size : nul) };
    }
    return { elf64: true };
  } finally {
    closeSync(fd);
  }
}
