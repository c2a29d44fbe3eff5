// Acceptance for the VMM and arch layers: bytes vigil reads at kernel virtual addresses through its own
// page-table walk (root from the vCPU's CR3) equal what QEMU's GDB stub returns for the same addresses —
// thousands of addresses over kernel text, data, the direct map and vmalloc space; on the live guest and
// on an ELF dump of it, with 5-level and 4-level paging, and on a 3 GiB guest whose RAM continues above
// 4 GiB. The GDB stub stops the VM while attached, so both views see the same instant.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PageTableAddressSpace, PagingCache, pagingModeFromCr4 } from '../../src/arch/x86_64/index.js';
import { Epoch } from '../../src/arch/epoch.js';
import { Kernel } from '../../src/os/linux/kernel.js';
import { bootstrapLive } from '../../src/os/linux/live-kernel.js';
import { GdbClient } from '../../src/vmm/gdb/client.js';
import { openDump } from '../../src/vmm/memory/index.js';
import { connectQemu } from '../../src/vmm/qemu/machine.js';
import type { PhysicalMemory } from '../../src/vmm/types.js';
import { sharedGuest } from '../support/guest.js';

/** A deterministic PRNG so a failure can be reproduced. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Region = 'text' | 'data' | 'direct-map' | 'vmalloc' | 'other';

interface Sample {
  va: bigint;
  region: Region;
}

/** Pick addresses spread over the kernel's mapped regions, using the kernel's own layout to name them. */
function pickAddresses(
  space: PageTableAddressSpace,
  kernel: Kernel,
  perRegion: number,
  seed: number,
): Sample[] {
  const text = [kernel.sym('_stext'), kernel.sym('_etext')] as const;
  const data = [kernel.sym('_sdata'), kernel.sym('_end')] as const;
  const pob = kernel.kaslr.pageOffsetBase;
  const vmalloc = kernel.kaslr.vmallocBase;
  const classify = (va: bigint): Region => {
    if (va >= text[0] && va < text[1]) return 'text';
    if (va >= data[0] && va < data[1]) return 'data';
    if (va >= pob && va < pob + (1n << 46n)) return 'direct-map';
    if (va >= vmalloc && va < vmalloc + (1n << 45n)) return 'vmalloc';
    return 'other';
  };
  // Collect mapped pages per region (kernel half only), then sample within them.
  // Only pages backed by RAM: the direct map's large pages also cover MMIO holes, which the stub
  // cannot read either.
  const inRam = (pa: bigint) =>
    space.memory.ranges.some((r) => pa >= r.start && pa + 16n <= r.start + r.size);
  const pages = new Map<Region, { va: bigint; paddr: bigint; size: bigint }[]>();
  const kernelHalf = space.mode === 5 ? 0xff00_0000_0000_0000n : 0xffff_8000_0000_0000n;
  for (const m of space.walkMappings(
    { start: kernelHalf, end: 0xffff_ffff_ffff_ffffn },
    { maxEntries: 1 << 21 },
  )) {
    const r = classify(m.va);
    const list = pages.get(r) ?? [];
    if (list.length < 200_000) list.push({ va: m.va, paddr: m.paddr, size: m.size });
    pages.set(r, list);
  }
  const rand = rng(seed);
  const out: Sample[] = [];
  for (const [region, list] of pages) {
    const n = region === 'other' ? Math.min(perRegion / 4, list.length) : perRegion;
    for (let i = 0, tries = 0; i < n && list.length > 0 && tries < n * 20; tries++) {
      const p = list[Math.floor(rand() * list.length)]!;
      const off = BigInt(Math.floor(rand() * Number(p.size - 64n))) & ~7n;
      if (!inRam(p.paddr + off)) continue;
      out.push({ va: p.va + off, region });
      i++;
    }
  }
  return out;
}

async function compareWithStub(
  gdb: GdbClient,
  memory: PhysicalMemory,
  cr3: bigint,
  cr4: bigint,
  samples: readonly Sample[],
): Promise<Map<Region, number>> {
  const space = new PageTableAddressSpace(
    memory,
    cr3,
    pagingModeFromCr4(cr4),
    new PagingCache(Epoch.frozen()),
  );
  const counts = new Map<Region, number>();
  for (const s of samples) {
    const ours = space.read(s.va, 16);
    const theirs = await gdb.readMemory(s.va, 16);
    assert.equal(
      ours.toString('hex'),
      theirs.toString('hex'),
      `bytes at 0x${s.va.toString(16)} (${s.region})`,
    );
    counts.set(s.region, (counts.get(s.region) ?? 0) + 1);
  }
  return counts;
}

interface GuestCase {
  name: string;
  boot: Parameters<typeof sharedGuest>[1];
  levels: 4 | 5;
  withDump: boolean;
}

const cases: GuestCase[] = [
  { name: 'vigil-test-main', boot: {}, levels: 5, withDump: true },
  { name: 'vigil-test-4level', boot: { cpu: 'max,la57=off' }, levels: 4, withDump: false },
  { name: 'vigil-test-3g', boot: { memory: '3G' }, levels: 5, withDump: false },
];

for (const c of cases) {
  test(`vigil's own translation equals the GDB stub on ${c.name} (${c.levels}-level paging)`, async () => {
    const guest = await sharedGuest(c.name, c.boot);
    const machine = await connectQemu(guest.qmp);
    const gdb = await GdbClient.connect(`127.0.0.1:${guest.gdbPort}`); // stops the VM
    const dir = mkdtempSync(join(tmpdir(), 'vigil-xlat-'));
    try {
      const regs = await gdb.readRegisters();
      const cr3 = regs.get('cr3');
      const cr4 = regs.get('cr4');
      assert.ok(cr3 !== undefined && cr4 !== undefined, 'the stub offers CR3 and CR4');
      assert.equal(pagingModeFromCr4(cr4), c.levels, 'paging depth follows CR4.LA57');

      // The running kernel, not an image an earlier reboot left in RAM (the 4-level guest is rebooted by
      // the ps suite): its section symbols classify the sampled addresses.
      const found = await bootstrapLive(machine.memory, machine.vcpus, {
        bootstrap: (mem) => Kernel.bootstrap(mem, { live: false }),
      });
      assert.ok(found.ok, found.ok ? '' : found.reason);
      const kernel = found.kernel;
      const space = new PageTableAddressSpace(
        machine.memory,
        cr3,
        pagingModeFromCr4(cr4),
        new PagingCache(Epoch.frozen()),
      );
      const samples = pickAddresses(space, kernel, 800, 42);
      if (c.name === 'vigil-test-3g') {
        // RAM above 4 GiB must be read where the real map puts it: sample the direct map there.
        const rand = rng(7);
        const high = machine.memory.ranges.find((r) => r.start >= 1n << 32n);
        assert.ok(high, 'a 3 GiB q35 guest has RAM above 4 GiB');
        for (let i = 0; i < 500; i++) {
          const pa = high.start + (BigInt(Math.floor(rand() * Number(high.size - 4096n))) & ~7n);
          samples.push({ va: kernel.kaslr.pageOffsetBase + pa, region: 'direct-map' });
        }
      }
      assert.ok(samples.length >= 3000, `thousands of addresses (${samples.length})`);

      const counts = await compareWithStub(gdb, machine.memory, cr3, cr4, samples);
      for (const r of ['text', 'data', 'direct-map', 'vmalloc'] as const) {
        assert.ok((counts.get(r) ?? 0) >= 100, `at least 100 addresses in ${r} (${counts.get(r) ?? 0})`);
      }

      if (c.withDump) {
        // The VM is stopped by the stub: an ELF dump now is the same instant, and carries CR3 itself.
        const path = join(dir, 'guest.elf');
        await machine.qmp.dumpGuestMemory(path);
        const dump = openDump(path);
        try {
          const cpu = dump.cpus[0];
          assert.ok(cpu, 'the ELF core carries vCPU state');
          assert.equal(cpu.registers.cr3, cr3, 'CR3 from the dump equals the live one');
          const dumpCounts = await compareWithStub(gdb, dump, cpu.registers.cr3, cpu.registers.cr4, samples);
          assert.equal(
            [...dumpCounts.values()].reduce((a, b) => a + b, 0),
            samples.length,
            'every address compared on the dump',
          );
        } finally {
          dump.close();
        }
      }
    } finally {
      await gdb.detach().catch(() => gdb.close());
      await machine.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
