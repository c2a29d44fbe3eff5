// The kernel's symbols, in address order, with look-ups by name and by address. The table does not care
// where the symbols came from (kallsyms in guest memory today, a System.map or vmlinux later).
//
// Names live in one latin1 pool (offsets into it per symbol) and a hash index over its bytes: a
// distribution kernel's 100k names cost 2 MB and no JavaScript string until one is asked for.

import { VigilError } from '../../../util/errors.js';
import { inversions } from './addresses.js';

export interface KernelSymbol {
  name: string;
  /** nm-style type character: T/t text, D/d data, R/r read-only, B/b bss, A absolute (per-CPU), W/w weak… */
  type: string;
  address: bigint;
}

export interface SymbolLocation {
  symbol: KernelSymbol;
  offset: bigint;
}

/** Names as one pool: name i is pool[starts[i] … starts[i+1]). */
export interface NamePool {
  pool: Buffer;
  starts: Uint32Array;
}

/** Past this distance from the nearest symbol, an address is not "inside" it (large gaps exist). */
export const DEFAULT_MAX_SYMBOL_OFFSET = 0x100000n;

const hex = (v: bigint): string => '0x' + v.toString(16);

/** FNV-1a over pool bytes [s, e), from a per-table seed (names come from the guest: no planted collisions). */
function hashBytes(seed: number, pool: Uint8Array, s: number, e: number): number {
  let h = seed;
  for (let i = s; i < e; i++) h = Math.imul(h ^ pool[i], 0x01000193);
  return h >>> 0;
}

/** FNV-1a over a string's latin1 codes, or -1 if it has a character latin1 cannot hold. */
function hashString(seed: number, s: string): number {
  let h = seed;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) return -1;
    h = Math.imul(h ^ c, 0x01000193);
  }
  return h >>> 0;
}

/** Build a pool from strings (latin1). */
export function poolOf(names: readonly string[]): NamePool {
  const starts = new Uint32Array(names.length + 1);
  let total = 0;
  names.forEach((n, i) => {
    starts[i] = total;
    total += n.length;
  });
  starts[names.length] = total;
  const pool = Buffer.allocUnsafe(total);
  names.forEach((n, i) => pool.write(n, starts[i], 'latin1'));
  return { pool, starts };
}

export class SymbolTable implements Iterable<KernelSymbol> {
  readonly #pool: Buffer;
  readonly #starts: Uint32Array;
  readonly #types: Uint8Array;
  readonly #addresses: BigUint64Array;
  /** Open-addressing hash of names: slot → symbol index + 1 (0 = empty); the lowest index per name. */
  #slots: Int32Array | undefined;
  readonly #seed = (Math.random() * 0x100000000) >>> 0;

  /**
   * Take names (a pool), type character codes and addresses, one per symbol. They are sorted here by
   * address if they are not already (stable: equal addresses keep their order).
   */
  constructor(names: NamePool, types: Uint8Array, addresses: BigUint64Array) {
    const n = types.length;
    if (names.starts.length !== n + 1 || addresses.length !== n || names.starts[n] > names.pool.length)
      throw new VigilError('os', 'malformed', 'symbol table arrays differ in length');
    for (let i = 0; i < n; i++)
      if (names.starts[i] > names.starts[i + 1])
        throw new VigilError('os', 'malformed', 'symbol name offsets go backwards');
    if (inversions(addresses) === 0) {
      this.#pool = names.pool;
      this.#starts = names.starts;
      this.#types = types;
      this.#addresses = addresses;
      return;
    }
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) =>
      addresses[a] < addresses[b] ? -1 : addresses[a] > addresses[b] ? 1 : a - b,
    );
    const sorted = poolOf(
      order.map((i) => names.pool.toString('latin1', names.starts[i], names.starts[i + 1])),
    );
    this.#pool = sorted.pool;
    this.#starts = sorted.starts;
    this.#types = Uint8Array.from(order, (i) => types[i]);
    this.#addresses = BigUint64Array.from(order, (i) => addresses[i]);
  }

  static fromSymbols(symbols: Iterable<KernelSymbol>): SymbolTable {
    const list = [...symbols];
    return new SymbolTable(
      poolOf(list.map((s) => s.name)),
      Uint8Array.from(list, (s) => s.type.charCodeAt(0) || 0x3f),
      BigUint64Array.from(list, (s) => s.address),
    );
  }

  get size(): number {
    return this.#types.length;
  }

  /** Name of symbol `index` (no bounds check: callers pass valid indices). */
  #name(index: number): string {
    return this.#pool.toString('latin1', this.#starts[index], this.#starts[index + 1]);
  }

  at(index: number): KernelSymbol | undefined {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) return undefined;
    return {
      name: this.#name(index),
      type: String.fromCharCode(this.#types[index]),
      address: this.#addresses[index],
    };
  }

  #sameName(index: number, name: string): boolean {
    const s = this.#starts[index];
    if (this.#starts[index + 1] - s !== name.length) return false;
    for (let k = 0; k < name.length; k++) if (this.#pool[s + k] !== name.charCodeAt(k)) return false;
    return true;
  }

  #index(): Int32Array {
    if (this.#slots) return this.#slots;
    const n = this.size;
    let cap = 16;
    while (cap < 2 * n) cap *= 2;
    const slots = new Int32Array(cap);
    const mask = cap - 1;
    const pool = this.#pool;
    const starts = this.#starts;
    // Linear probing at load <= 1/2 averages under three probes; far more means a degenerate table.
    let probes = 0;
    for (let i = 0; i < n; i++) {
      const s = starts[i];
      const e = starts[i + 1];
      for (let h = hashBytes(this.#seed, pool, s, e) & mask; ; h = (h + 1) & mask) {
        if (++probes > 64 * n + 1024)
          throw new VigilError('os', 'bound', 'symbol name index degenerates (colliding names)');
        const j = slots[h] - 1;
        if (j < 0) {
          slots[h] = i + 1;
          break;
        }
        if (starts[j + 1] - starts[j] === e - s && pool.compare(pool, s, e, starts[j], starts[j + 1]) === 0)
          break;
      }
    }
    this.#slots = slots;
    return slots;
  }

  /** Index of the first (lowest-address) symbol called `name`, or -1. */
  indexOf(name: string): number {
    const slots = this.#index();
    const h0 = hashString(this.#seed, name);
    if (h0 < 0) return -1;
    const mask = slots.length - 1;
    for (let h = h0 & mask; ; h = (h + 1) & mask) {
      const j = slots[h] - 1;
      if (j < 0) return -1;
      if (this.#sameName(j, name)) return j;
    }
  }

  has(name: string): boolean {
    return this.indexOf(name) >= 0;
  }

  /** Address of `name` (the lowest if several symbols share it), or undefined. */
  address(name: string): bigint | undefined {
    const i = this.indexOf(name);
    return i < 0 ? undefined : this.#addresses[i];
  }

  /** Address of `name`, or throw VigilError('not-found'). */
  require(name: string): bigint {
    const a = this.address(name);
    if (a === undefined) throw new VigilError('os', 'not-found', `kernel symbol ${name} not found`);
    return a;
  }

  /** The symbol called `name` (the lowest address if several), or undefined. */
  get(name: string): KernelSymbol | undefined {
    const i = this.indexOf(name);
    return i < 0 ? undefined : this.at(i);
  }

  /** Every symbol called `name` (static functions of different files may share one). */
  all(name: string): KernelSymbol[] {
    const out: KernelSymbol[] = [];
    const first = this.indexOf(name);
    if (first < 0) return out;
    for (let i = first; i < this.size; i++) if (this.#sameName(i, name)) out.push(this.at(i)!);
    return out;
  }

  /**
   * The symbol containing `address`: the last symbol at or below it (the first of several aliases),
   * provided it is not absolute (per-CPU offsets are not addresses) and not farther than `maxOffset`.
   */
  nearest(address: bigint, maxOffset = DEFAULT_MAX_SYMBOL_OFFSET): SymbolLocation | undefined {
    const a = this.#addresses;
    if (a.length === 0 || address < a[0]) return undefined;
    let lo = 0;
    let hi = a.length; // invariant: a[lo] <= address, a[hi] > address (or hi = length)
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] <= address) lo = mid;
      else hi = mid;
    }
    while (lo > 0 && a[lo - 1] === a[lo]) lo--;
    const type = this.#types[lo];
    if (type === 0x41 || type === 0x61) return undefined; // 'A' / 'a'
    const offset = address - a[lo];
    if (offset > maxOffset) return undefined;
    return { symbol: this.at(lo)!, offset };
  }

  /** "name+0x12" for an address inside a symbol, undefined otherwise. */
  symbolize(address: bigint, maxOffset = DEFAULT_MAX_SYMBOL_OFFSET): string | undefined {
    const loc = this.nearest(address, maxOffset);
    return loc && `${loc.symbol.name}+${hex(loc.offset)}`;
  }

  /** Symbols whose address lies in [start, end). */
  *range(start: bigint, end: bigint): IterableIterator<KernelSymbol> {
    const a = this.#addresses;
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid] < start) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < a.length && a[i] < end; i++) yield this.at(i)!;
  }

  *[Symbol.iterator](): IterableIterator<KernelSymbol> {
    for (let i = 0; i < this.size; i++) yield this.at(i)!;
  }

  /** Number of symbols of each type character. */
  countsByType(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const t of this.#types) {
      const c = String.fromCharCode(t);
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    return counts;
  }
}
