import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { findBanner, readBannerAt } from './banner.js';
import { findKallsyms } from './kallsyms/find.js';
import { SymbolTable } from './kallsyms/symbol-table.js';
import { GUEST_RAW, rawFileMemory, syntheticKernel } from './kallsyms/test-support.js';
import {
  bannerAnchors,
  deriveKaslr,
  imageAnchors,
  kernelImageVirtOf,
  kernelPhysToVirt,
  kernelVirtToPhys,
  START_KERNEL,
  START_KERNEL_MAP,
} from './kaslr.js';

const U64 = (1n << 64n) - 1n;

describe('deriveKaslr', () => {
  for (const levels of [4, 5] as const) {
    for (const split4k of [false, true]) {
      it(`places a ${levels}-level kernel${split4k ? ' with split 4 KiB pages' : ''}`, () => {
        const k = syntheticKernel({ levels, split4k, cpus: 3 });
        const symbols = SymbolTable.fromSymbols(k.symbols);
        // Decoys first: a copy of the banner elsewhere (a terminal buffer) must not be chosen.
        const decoy = 0x10003n;
        const info = deriveKaslr(k.mem, symbols, bannerAnchors([decoy, k.bannerPhys]));
        assert.equal(info.anchor.paddr, k.bannerPhys);
        assert.equal(info.textVirt, k.textVirt);
        assert.equal(info.virtualOffset, k.textVirt - START_KERNEL);
        assert.equal(info.physicalBase, k.textPhys);
        // __pa_symbol(x) = x - __START_KERNEL_map + phys_base, modulo 2^64.
        assert.equal((k.textVirt - START_KERNEL_MAP + info.physBase) & U64, k.textPhys);
        assert.equal(info.kernelPgd, k.pgdPhys);
        assert.equal(info.la57, levels === 5);
        assert.equal(info.pageOffsetBase, k.pageOffsetBase);
        assert.deepEqual(info.perCpuOffsets, k.perCpuOffsets);
        assert.deepEqual(info.notes, []);
        assert.equal(kernelVirtToPhys(info.physBase, symbols.require('linux_banner')), k.bannerPhys);
        assert.equal(kernelPhysToVirt(info.physBase, k.bannerPhys), symbols.require('linux_banner'));
        assert.equal(
          kernelImageVirtOf(k.mem, k.pgdPhys, k.bannerPhys, levels),
          symbols.require('linux_banner'),
        );
      });
    }
  }

  it('finds its own anchor from an address inside the image (no banner scan)', () => {
    for (const levels of [4, 5] as const) {
      const k = syntheticKernel({ levels, kallsyms: 'v6.1', textPhys: 0x600000n });
      const { symbols, layout } = findKallsyms(k.mem);
      const anchors = imageAnchors(k.mem, symbols, layout.tokenTableAddr);
      assert.deepEqual(anchors, [{ symbol: 'linux_banner', paddr: k.bannerPhys }]);
      const info = deriveKaslr(k.mem, symbols, anchors);
      assert.equal(info.physicalBase, 0x600000n);
      assert.equal(info.la57, levels === 5);
    }
  });

  it('handles a physical load address below the virtual offset (phys_base wraps)', () => {
    const k = syntheticKernel({ levels: 4, textPhys: 0x200000n, virtualOffset: 0x3e000000n });
    const info = deriveKaslr(k.mem, SymbolTable.fromSymbols(k.symbols), {
      symbol: 'linux_banner',
      paddr: k.bannerPhys,
    });
    assert.ok(info.physBase > 0x8000000000000000n, 'phys_base is "negative"');
    assert.equal(info.physicalBase, 0x200000n);
  });

  it('falls back to defaults and says so when layout variables are missing', () => {
    const k = syntheticKernel({
      levels: 4,
      omit: ['vmalloc_base', '__pgtable_l5_enabled', '__per_cpu_offset'],
    });
    const info = deriveKaslr(k.mem, SymbolTable.fromSymbols(k.symbols), bannerAnchors([k.bannerPhys]));
    assert.equal(info.vmallocBase, 0xffffc90000000000n);
    assert.equal(info.la57, false, 'the page tables decide when the variable is missing');
    assert.deepEqual(info.perCpuOffsets, []);
    assert.equal(info.notes.length, 2);
  });

  it('refuses anchors the page tables do not confirm, and absurd CPU counts', () => {
    const k = syntheticKernel({ levels: 5 });
    const symbols = SymbolTable.fromSymbols(k.symbols);
    const notFound = (e: unknown) => e instanceof VigilError && e.kind === 'not-found';
    assert.throws(() => deriveKaslr(k.mem, symbols, bannerAnchors([k.bannerPhys + 0x200000n])), notFound);
    assert.throws(() => deriveKaslr(k.mem, symbols, []), notFound);
    // Break the page tables: the right anchor no longer checks out.
    const broken = syntheticKernel({ levels: 5 });
    broken.ram.fill(0, Number(broken.pgdPhys), Number(broken.pgdPhys) + 4096);
    assert.throws(() => deriveKaslr(broken.mem, symbols, bannerAnchors([broken.bannerPhys])), notFound);
    const cpus = syntheticKernel({ levels: 4, cpus: 2 });
    const nr = kernelVirtToPhys(
      deriveKaslr(cpus.mem, SymbolTable.fromSymbols(cpus.symbols), bannerAnchors([cpus.bannerPhys])).physBase,
      SymbolTable.fromSymbols(cpus.symbols).require('nr_cpu_ids'),
    );
    cpus.ram.writeUInt32LE(1 << 30, Number(nr));
    assert.throws(
      () => deriveKaslr(cpus.mem, SymbolTable.fromSymbols(cpus.symbols), bannerAnchors([cpus.bannerPhys])),
      (e: unknown) => e instanceof VigilError && e.kind === 'bound',
    );
    const noText = SymbolTable.fromSymbols(
      k.symbols.filter((s) => s.name !== '_text' && s.name !== 'startup_64'),
    );
    assert.throws(() => deriveKaslr(k.mem, noText, bannerAnchors([k.bannerPhys])), notFound);
  });
});

describe('deriveKaslr on a real guest', { skip: !existsSync(GUEST_RAW) && `no ${GUEST_RAW}` }, () => {
  it('places the kernel and reads its memory layout', () => {
    const mem = rawFileMemory(GUEST_RAW);
    try {
      const banner = findBanner(mem);
      const { symbols, layout } = findKallsyms(mem);
      const info = deriveKaslr(mem, symbols, bannerAnchors(banner.terminatedPaddrs.concat(banner.paddrs)));
      assert.equal(info.anchor.symbol, 'linux_banner');
      const own = deriveKaslr(mem, symbols, imageAnchors(mem, symbols, layout.tokenTableAddr));
      assert.deepEqual(own, info, 'the banner scan and the image anchors agree');
      assert.equal(readBannerAt(mem, info.anchor.paddr).text, banner.text);
      assert.equal(info.textVirt, symbols.require('_text'));
      assert.equal(info.physicalBase % 0x200000n, 0n);
      assert.equal(info.virtualOffset % 0x200000n, 0n);
      assert.ok(info.pageOffsetBase >= 0xff00000000000000n);
      assert.ok(info.perCpuOffsets.length >= 1);
      for (const off of info.perCpuOffsets)
        assert.ok(off >= info.pageOffsetBase, 'per-CPU areas are in the direct map');
      const levels = info.la57 ? 5 : 4;
      assert.equal(kernelImageVirtOf(mem, info.kernelPgd, info.physicalBase, levels), info.textVirt);
    } finally {
      mem.close();
    }
  });
});
