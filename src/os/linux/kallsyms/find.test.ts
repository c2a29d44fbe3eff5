import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../../../util/errors.js';
import { findKallsyms } from './find.js';
import {
  bufferMemory,
  buildKallsyms,
  percpuSymbols,
  type SpecLayout,
  type SpecSymbol,
  syntheticKernel,
} from './test-support.js';

const TEXT = 0xffffffff9a000000n;

/** A kernel-like symbol set: per-CPU absolutes, functions, data, a big name, duplicate names. */
function kernelSymbols(n: number, percpu = true): SpecSymbol[] {
  const list: SpecSymbol[] = percpu ? percpuSymbols() : [];
  list.push({ name: '_text', type: 'T', address: TEXT }, { name: 'startup_64', type: 'T', address: TEXT });
  const words = ['do_', 'sys_', 'ext4_', 'tcp_', 'vfs_', '__x64_', 'kmem_', 'init_'];
  for (let i = 0; i < n; i++) {
    const type = 'tTtTdDrb'[i % 8];
    list.push({
      name: `${words[i % 8]}${words[(i >> 3) % 8]}item${i}`,
      type,
      address: TEXT + 0x1000n + BigInt(i * 0x30),
    });
  }
  list.push(
    { name: 'helper', type: 't', address: TEXT + 0x800000n },
    { name: 'helper', type: 't', address: TEXT + 0x800100n },
  );
  list.push({ name: 'big_' + 'abcdefghij'.repeat(20), type: 'T', address: TEXT + 0x900000n });
  return list;
}

/** Guest RAM: noise, decoys, then the tables somewhere in the middle. */
function placeInRam(image: Buffer, at = 0x123000): Buffer {
  const ram = Buffer.alloc(at + image.length + 0x20000);
  let seed = 7;
  for (let i = 0; i < at; i++) ram[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  // A UTF-16 digit run and the bare digit tokens: the search must look past both.
  ram.write('0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00:\x00', 0x1000, 'latin1');
  ram.write('0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00', 0x3000, 'latin1');
  image.copy(ram, at);
  return ram;
}

const sortedByAddress = (list: SpecSymbol[]) =>
  [...list].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));

const isVigil = (e: unknown) => e instanceof VigilError;

describe('findKallsyms on spec-built tables', () => {
  const cases: [SpecLayout, string, string][] = [
    ['v6.1', 'absolute-percpu', 'before-num-syms'],
    ['v6.2', 'absolute-percpu', 'before-num-syms'],
    ['v6.4', 'absolute-percpu', 'after-token-index'],
    ['absolute', 'absolute', 'before-num-syms'],
  ];
  for (const [layout, mode, placement] of cases) {
    it(`decodes the ${layout} layout (${mode}, ${placement})`, () => {
      const list = kernelSymbols(1500);
      const built = buildKallsyms(list, layout, { relativeBase: TEXT });
      const base = 0x123000;
      const r = findKallsyms(bufferMemory(placeInRam(built.image, base)));
      const want = sortedByAddress(list);
      assert.equal(r.symbols.size, want.length);
      assert.deepEqual([...r.symbols], want);
      assert.equal(r.layout.addressMode, mode);
      assert.equal(r.layout.addressesPlacement, placement);
      assert.equal(r.layout.numSyms, want.length);
      assert.equal(r.layout.tokenTableAddr, BigInt(base + built.at.tokenTable));
      assert.equal(r.layout.namesAddr, BigInt(base + built.at.names));
      assert.equal(r.layout.markersAddr, BigInt(base + built.at.markers));
      assert.equal(r.layout.addressesAddr, BigInt(base + built.at.addresses));
      if (built.at.seqs !== undefined && layout === 'v6.2')
        assert.equal(r.layout.seqsOfNames?.addr, BigInt(base + built.at.seqs));
      if (mode !== 'absolute') assert.equal(r.layout.base, TEXT);
      assert.equal(r.symbols.address('helper'), TEXT + 0x800000n);
      assert.equal(r.symbols.symbolize(TEXT + 0x800104n), 'helper+0x4');
      assert.equal(r.stats.inversions, 0);
    });
  }

  it('widens the search for num_syms when the first window is too small', () => {
    const list = kernelSymbols(600);
    const built = buildKallsyms(list, 'v6.2', { relativeBase: TEXT });
    const mem = bufferMemory(placeInRam(built.image, 0x200000));
    const r = findKallsyms(mem, { initialSpan: 4096 });
    assert.ok(built.at.tokenTable - built.at.numSyms > 4096);
    assert.deepEqual([...r.symbols], sortedByAddress(list));
  });

  it('decodes plain base-relative offsets (no per-CPU absolutes)', () => {
    const list = kernelSymbols(600, false);
    const built = buildKallsyms(list, 'v6.1', { relativeBase: TEXT });
    // The builder writes absolute-percpu encodings; rewrite them as plain u32 offsets from the base.
    const sorted = sortedByAddress(list);
    sorted.forEach((s, i) => built.image.writeUInt32LE(Number(s.address - TEXT), built.at.addresses + 4 * i));
    const r = findKallsyms(bufferMemory(placeInRam(built.image)));
    assert.equal(r.layout.addressMode, 'base-relative');
    assert.deepEqual([...r.symbols], sorted);
  });

  it('decodes place-relative (7.0) tables, anchoring them through the kernel page tables', () => {
    for (const levels of [4, 5] as const) {
      const k = syntheticKernel({ levels, kallsyms: 'v7.0', fillers: 700 });
      const r = findKallsyms(k.mem);
      assert.equal(r.layout.addressMode, 'place-relative');
      assert.deepEqual([...r.symbols], sortedByAddress(k.symbols));
      assert.equal(r.symbols.address('_text'), k.textVirt);
    }
  });

  it('uses the index-based fallback when some digit never occurs in a symbol', () => {
    const list: SpecSymbol[] = Array.from({ length: 400 }, (_, i) => ({
      name: `fn_${[...i.toString(5)].map((d) => 'abcde'[Number(d)]).join('')}_01234`,
      type: 'T',
      address: TEXT + BigInt(i * 16),
    }));
    const built = buildKallsyms(list, 'v6.4', { relativeBase: TEXT });
    assert.ok(!built.tokens.includes('9'));
    const r = findKallsyms(bufferMemory(placeInRam(built.image)));
    assert.deepEqual([...r.symbols], sortedByAddress(list));
  });
});

describe('findKallsyms on hostile input', () => {
  const list = kernelSymbols(400);
  const built = buildKallsyms(list, 'v6.1', { relativeBase: TEXT });
  const at = 0x8000;
  const template = placeInRam(built.image, at);
  const fresh = () => Buffer.from(template);
  const expectVigil = (ram: Buffer) => {
    try {
      const r = findKallsyms(bufferMemory(ram));
      return r; // corruption the checks tolerate must still give a sane table
    } catch (e) {
      assert.ok(isVigil(e), `unexpected ${String(e)}`);
      return undefined;
    }
  };

  it('throws not-found on memory without kallsyms', () => {
    assert.throws(
      () => findKallsyms(bufferMemory(Buffer.alloc(1 << 20))),
      (e: unknown) => isVigil(e) && (e as VigilError).kind === 'not-found',
    );
  });

  it('rejects truncated names, lengths past the end, a broken index and a huge num_syms', () => {
    const truncated = fresh();
    truncated.fill(0, at + (built.at.names + built.at.markers) / 2, at + built.at.markers);
    assert.equal(expectVigil(truncated), undefined);

    const longLength = fresh();
    longLength[at + built.at.names] = 0x7f; // first entry claims 127 tokens: every later entry shifts
    assert.equal(expectVigil(longLength), undefined);

    const index = fresh();
    index.writeUInt16LE(0xfff0, at + built.at.tokenIndex + 2 * 0x80);
    assert.equal(expectVigil(index), undefined);

    const huge = fresh();
    huge.writeUInt32LE(0xfffffff0, at + built.at.numSyms);
    assert.equal(expectVigil(huge), undefined);

    const plausible = fresh();
    plausible.writeUInt32LE(list.length + 300, at + built.at.numSyms);
    assert.equal(expectVigil(plausible), undefined);
  });

  it('rejects addresses that do not decode sorted', () => {
    const ram = fresh();
    for (let i = 10; i < 400; i += 3) ram.writeInt32LE(-1 - i * 0x100000, at + built.at.addresses + 4 * i);
    assert.throws(
      () => findKallsyms(bufferMemory(ram)),
      (e: unknown) => isVigil(e) && (e as VigilError).kind === 'malformed',
    );
  });

  it('survives 2000 random mutations and random memory with only VigilErrors, quickly', () => {
    let seed = 0x9e3779b9;
    const rand = (n: number) => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % n;
    const started = Date.now();
    for (let iter = 0; iter < 2000; iter++) {
      let ram: Buffer;
      if (iter % 10 === 0) {
        ram = Buffer.alloc(64 << 10);
        for (let i = 0; i < ram.length; i++) ram[i] = rand(256);
        // Sprinkle the search key so the validators run on garbage.
        for (let k = 0; k < 4; k++)
          ram.write('0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00', rand(ram.length - 32), 'latin1');
      } else {
        ram = fresh();
        const span = built.image.length;
        for (let k = 0, m = 1 + rand(8); k < m; k++) {
          const off = at + rand(span);
          if (rand(2)) ram[off] = rand(256);
          else ram.fill(rand(256), off, Math.min(ram.length, off + rand(64)));
        }
      }
      const r = expectVigil(ram);
      if (r) {
        assert.ok(r.symbols.size <= 2_000_000);
        assert.equal(r.stats.inversions <= r.symbols.size / 1000, true);
      }
    }
    assert.ok(Date.now() - started < 60_000, 'fuzzing took too long');
  });
});
