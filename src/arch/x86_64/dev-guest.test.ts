// Translation on real page tables: the pages a few walks touch in the dev guest (Debian 6.1, 5-level
// paging under TCG), copied from a RAM dump, with the bytes QEMU's own monitor showed at those addresses.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { VigilError } from '../../util/errors.js';
import type { PhysicalMemory } from '../../vmm/types.js';
import { Epoch } from '../epoch.js';
import { PageTableAddressSpace } from './address-space.js';
import { PagingCache } from './cache.js';
import { pagingModeFromCr4 } from './paging.js';

interface Fixture {
  cr3: string;
  cr4: string;
  pages: Record<string, string>;
  expect: {
    what: string;
    va: string;
    paddr: string;
    pageSize: string;
    writable: boolean;
    user: boolean;
    nx: boolean;
    bytes: string;
  }[];
  unmapped: { va: string; level: string }[];
}

function loadFixture(): Fixture {
  const rel = 'test/fixtures/arch/dev-guest-la57.json';
  const tries = [join(process.cwd(), rel)];
  for (let d = dirname(fileURLToPath(import.meta.url)), i = 0; i < 8; d = dirname(d), i++)
    tries.push(join(d, rel));
  const found = tries.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`fixture ${rel} not found (looked in ${tries.join(', ')})`);
  return JSON.parse(readFileSync(found, 'utf8')) as Fixture;
}

/** 256 MiB of guest RAM of which only the fixture's pages are known; the rest reads as zero. */
function sparseMemory(pages: Record<string, string>): PhysicalMemory & { reads: number } {
  const known = new Map(Object.entries(pages).map(([pa, b64]) => [Number(pa), Buffer.from(b64, 'base64')]));
  return {
    description: 'dev guest fixture',
    ranges: [{ start: 0n, size: 256n << 20n }],
    reads: 0,
    read(paddr: bigint, length: number, into?: Buffer): Buffer {
      this.reads++;
      const out = into ? into.subarray(0, length) : Buffer.alloc(length);
      for (let off = 0; off < length;) {
        const pa = Number(paddr) + off;
        const n = Math.min(length - off, 0x1000 - (pa & 0xfff));
        const page = known.get(pa - (pa & 0xfff));
        if (page) page.copy(out, off, pa & 0xfff, (pa & 0xfff) + n);
        else out.fill(0, off, off + n);
        off += n;
      }
      return out;
    },
    readStrict(paddr: bigint, length: number): Buffer {
      return this.read(paddr, length);
    },
    close() {},
  };
}

test('dev guest: kernel text, IDT and GDT translate to what QEMU shows', () => {
  const fx = loadFixture();
  const mode = pagingModeFromCr4(BigInt(fx.cr4));
  assert.equal(mode, 5);
  const space = new PageTableAddressSpace(
    sparseMemory(fx.pages),
    BigInt(fx.cr3),
    mode,
    new PagingCache(Epoch.frozen()),
  );
  assert.ok(fx.expect.length >= 3);
  for (const e of fx.expect) {
    const t = space.translateDetailed(BigInt(e.va));
    assert.deepEqual(
      t,
      { paddr: BigInt(e.paddr), pageSize: BigInt(e.pageSize), writable: e.writable, user: e.user, nx: e.nx },
      e.what,
    );
    assert.equal(space.read(BigInt(e.va), 16).toString('hex'), e.bytes, e.what);
  }
});

test('dev guest: unmapped addresses name the level QEMU could not get past', () => {
  const fx = loadFixture();
  const space = new PageTableAddressSpace(
    sparseMemory(fx.pages),
    BigInt(fx.cr3),
    5,
    new PagingCache(Epoch.frozen()),
  );
  assert.ok(fx.unmapped.length >= 3);
  for (const u of fx.unmapped) {
    assert.equal(space.translate(BigInt(u.va)), undefined);
    assert.throws(
      () => space.translateDetailed(BigInt(u.va)),
      (e: unknown) =>
        e instanceof VigilError &&
        e.kind === 'unmapped' &&
        e.message.includes(`: ${u.level} entry not present`),
    );
  }
});
