// Test support shared by the os/linux walker test kits: sparse byte-addressed memory whose 4 KiB pages
// exist once written (or mapped); everything else reads as unmapped, as a hostile or torn guest would.
import { VigilError } from '../../util/errors.js';

const PAGE = 4096n;

export class SparseMemory {
  /** Pages by their base address. */
  readonly pages = new Map<bigint, Buffer>();

  /** Make the pages covering [va, va+length) exist (zero-filled). */
  map(va: bigint, length: number): void {
    for (let p = va - (va % PAGE); p < va + BigInt(Math.max(length, 1)); p += PAGE) {
      if (!this.pages.has(p)) this.pages.set(p, Buffer.alloc(Number(PAGE)));
    }
  }

  unmap(va: bigint): void {
    this.pages.delete(va - (va % PAGE));
  }

  write(va: bigint, data: Buffer): void {
    this.map(va, data.length);
    for (let i = 0; i < data.length;) {
      const at = va + BigInt(i);
      const page = at - (at % PAGE);
      const off = Number(at - page);
      const n = Math.min(data.length - i, Number(PAGE) - off);
      data.copy(this.pages.get(page)!, off, i, i + n);
      i += n;
    }
  }

  writeU64(va: bigint, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    this.write(va, b);
  }

  tryRead(va: bigint, length: number): Buffer | undefined {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length;) {
      const at = va + BigInt(i);
      const page = at - (at % PAGE);
      const p = this.pages.get(page);
      if (!p) return undefined;
      const off = Number(at - page);
      const n = Math.min(length - i, Number(PAGE) - off);
      p.copy(out, i, off, off + n);
      i += n;
    }
    return out;
  }

  read(va: bigint, length: number): Buffer {
    const b = this.tryRead(va, length);
    if (!b) throw new VigilError('arch', 'unmapped', `unmapped read of ${length} at 0x${va.toString(16)}`);
    return b;
  }
}
