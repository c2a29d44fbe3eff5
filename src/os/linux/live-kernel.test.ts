import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Epoch } from '../../arch/epoch.js';
import { PageTableAddressSpace, PagingCache } from '../../arch/x86_64/index.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../../arch/x86_64/test-memory.js';
import { buildKallsyms } from './kallsyms/test-support.js';
import type { Kernel } from './kernel.js';
import { VigilError } from '../../util/errors.js';
import type { Vcpu, X86Registers } from '../../vmm/types.js';
import {
  bootstrapLive,
  cr3Roots,
  imageRange,
  kernelIdentity,
  kernelPhase,
  MaskedMemory,
  residentChange,
  runsOnCpu,
  type CheckableKernel,
} from './live-kernel.js';

const START_KERNEL_MAP = 0xffffffff80000000n;
const U64 = (1n << 64n) - 1n;
const SYSTEM_STATES: Record<string, bigint> = {
  SYSTEM_BOOTING: 0n,
  SYSTEM_SCHEDULING: 1n,
  SYSTEM_FREEING_INITMEM: 2n,
  SYSTEM_RUNNING: 3n,
  SYSTEM_HALT: 4n,
  SYSTEM_POWER_OFF: 5n,
  SYSTEM_RESTART: 6n,
  SYSTEM_SUSPEND: 7n,
};
const IMAGE = 0x10000n; // a 64 KiB "kernel image": _text, then banner and system_state pages

interface Fake extends CheckableKernel {
  epoch: Epoch;
  builder: PageTableBuilder;
  bannerPa: bigint;
  statePa: bigint;
  refreshed: number;
  refresh(): void;
}

/**
 * A kernel image at physical `textPa`, virtual `textVa`, mapped by its own page tables (its init_top_pgt)
 * built in `tableBase`; linux_banner at +0x1000, system_state at +0x2000.
 */
function fakeKernel(
  mem: BufferPhysicalMemory,
  opts: { textVa: bigint; textPa: bigint; tableBase: bigint; banner: string; state?: bigint },
): Fake {
  const builder = new PageTableBuilder(mem, 4, opts.tableBase, opts.tableBase + 0x10000n);
  builder.mapRange(opts.textVa, opts.textPa, IMAGE);
  const bannerPa = opts.textPa + 0x1000n;
  const statePa = opts.textPa + 0x2000n;
  mem.write(bannerPa, Buffer.from(opts.banner + '\n\0', 'latin1'));
  mem.bytes.writeUInt32LE(Number(opts.state ?? SYSTEM_STATES.SYSTEM_RUNNING!), Number(statePa));
  const symbols = new Map([
    ['_text', opts.textVa],
    ['linux_banner', opts.textVa + 0x1000n],
    ['system_state', opts.textVa + 0x2000n],
    ['_end', opts.textVa + IMAGE],
  ]);
  const epoch = new Epoch();
  const pagingCache = new PagingCache(epoch);
  const k: Fake = {
    banner: { text: opts.banner, release: opts.banner.split(' ')[2]! },
    kaslr: {
      physBase: (opts.textPa - (opts.textVa - START_KERNEL_MAP)) & U64,
      physicalBase: opts.textPa,
      virtualOffset: opts.textVa - 0xffffffff81000000n,
    },
    symbols: { address: (n) => symbols.get(n) },
    types: {
      enumValue(name) {
        const v = SYSTEM_STATES[name];
        if (v === undefined) throw new VigilError('os', 'not-found', `no enumerator ${name}`);
        return v;
      },
    },
    memory: mem,
    space: new PageTableAddressSpace(mem, builder.root, 4, pagingCache),
    pagingCache,
    epoch,
    builder,
    bannerPa,
    statePa,
    refreshed: 0,
    refresh() {
      this.refreshed++;
      epoch.bump();
    },
  };
  return k;
}

const BANNER = 'Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC';

function vcpu(regs: Partial<X86Registers> | Error): Vcpu {
  return {
    index: 0,
    registers: async () => {
      if (regs instanceof Error) throw regs;
      return { rip: 0n, rsp: 0n, cr0: 0x80050033n, cr3: 0n, cr4: 0n, efer: 0n, ...regs };
    },
  };
}

function setup() {
  const mem = new BufferPhysicalMemory(4 << 20);
  const k = fakeKernel(mem, {
    textVa: 0xffffffff96400000n,
    textPa: 0x200000n,
    tableBase: 0x100000n,
    banner: BANNER,
  });
  return { mem, k };
}

test('a resident kernel passes; a changed banner, unmapping or shutdown is noticed', () => {
  const { mem, k } = setup();
  assert.equal(residentChange(k), undefined);
  assert.deepEqual(kernelPhase(k), { phase: 'running', name: 'SYSTEM_RUNNING' });

  mem.bytes.writeUInt32LE(6, Number(k.statePa));
  assert.equal(residentChange(k), 'the kernel is going down (SYSTEM_RESTART)');
  mem.bytes.writeUInt32LE(1, Number(k.statePa));
  assert.equal(residentChange(k), 'a kernel is booting (SYSTEM_SCHEDULING)');
  mem.bytes.writeUInt32LE(7, Number(k.statePa));
  assert.equal(residentChange(k), undefined, 'suspend is the same kernel');
  mem.bytes.writeUInt32LE(99, Number(k.statePa));
  assert.deepEqual(kernelPhase(k), { phase: 'unknown', name: 'system_state 99' });
  assert.equal(residentChange(k), undefined);

  mem.write(k.bannerPa + 14n, Buffer.from('7'));
  assert.equal(residentChange(k), 'the kernel banner in memory changed');
  mem.write(k.bannerPa + 14n, Buffer.from('6'));
  assert.equal(residentChange(k), undefined);

  // The page tables change (a new kernel's tables over the old): seen once the epoch moved.
  k.builder.setEntry(k.symbols.address('linux_banner')!, 'PT', 0n);
  assert.equal(residentChange(k), undefined, 'cached translation within the epoch');
  k.refresh();
  assert.equal(residentChange(k), 'the kernel page tables no longer map linux_banner');
});

test('identity and image range come from the banner, KASLR offset and _text/_end', () => {
  const { k } = setup();
  assert.deepEqual(kernelIdentity(k), {
    banner: BANNER,
    kaslrOffset: 0x15400000n,
    release: '6.1.0-56-amd64',
  });
  assert.deepEqual(imageRange(k), { start: 0x200000n, size: IMAGE });
  const noSyms = { ...k, symbols: { address: () => undefined } };
  assert.equal(imageRange(noSyms), undefined);
  assert.deepEqual(kernelPhase(noSyms), { phase: 'unknown', name: 'no system_state symbol' });
});

test('CR3 candidates drop PCID bits and, with PTI, the user-half bit', () => {
  assert.deepEqual(cr3Roots(0x2a58000n), [0x2a58000n]);
  assert.deepEqual(cr3Roots(0x8411fffn), [0x8411000n, 0x8410000n]);
  assert.deepEqual(cr3Roots(0x8000_0000_0841_0005n), [0x8410000n]);
});

test('runsOnCpu: the vCPU page tables must map linux_banner where the kernel found it', async () => {
  const { mem, k } = setup();
  assert.deepEqual(await runsOnCpu(k, [vcpu({ cr3: k.builder.root })]), { live: true });
  assert.deepEqual(await runsOnCpu(k, [vcpu({ cr3: k.builder.root | 0x1000n | 0x3n })]), { live: true });
  // Another process's tables sharing the kernel half would pass; empty tables do not.
  const other = new PageTableBuilder(mem, 4, 0x300000n, 0x310000n);
  assert.deepEqual(await runsOnCpu(k, [vcpu({ cr3: other.root })]), {
    live: false,
    why: 'no vCPU maps this kernel',
  });
  assert.deepEqual(await runsOnCpu(k, [vcpu({ cr0: 0x10n, cr3: k.builder.root })]), {
    live: false,
    why: 'paging is off on the vCPU (firmware or boot loader)',
  });
  assert.deepEqual(await runsOnCpu(k, [vcpu(new Error('HMP down')), vcpu({ cr3: k.builder.root })]), {
    live: true,
  });
  assert.equal(await runsOnCpu(k, [vcpu(new Error('HMP down'))]), undefined);
  assert.equal(await runsOnCpu(k, []), undefined);
});

test('MaskedMemory hides ranges while masked', () => {
  const mem = new BufferPhysicalMemory(0x4000);
  mem.bytes.fill(0xaa);
  const m = new MaskedMemory(mem, [{ start: 0x1000n, size: 0x1000n }]);
  const b = m.read(0xff0n, 0x20);
  assert.deepEqual([...b.subarray(0, 0x10)], new Array(0x10).fill(0xaa));
  assert.deepEqual([...b.subarray(0x10)], new Array(0x10).fill(0));
  assert.equal(m.readStrict(0x2000n, 4).readUInt32LE(0), 0xaaaaaaaa);
  m.masked = [];
  assert.equal(m.read(0x1000n, 4).readUInt32LE(0), 0xaaaaaaaa);
  assert.equal(m.ranges, mem.ranges);
});

test('bootstrapLive skips a stale kernel image that RAM still holds after a reboot', async () => {
  const mem = new BufferPhysicalMemory(8 << 20);
  // The old kernel went down (RESTART) and its image stays; the new one runs elsewhere.
  const stale = fakeKernel(mem, {
    textVa: 0xffffffff96400000n,
    textPa: 0x200000n,
    tableBase: 0x100000n,
    banner: BANNER,
    state: SYSTEM_STATES.SYSTEM_RESTART,
  });
  const live = fakeKernel(mem, {
    textVa: 0xffffffff8a000000n,
    textPa: 0x600000n,
    tableBase: 0x400000n,
    banner: BANNER,
  });
  const cpus = [vcpu({ cr3: live.builder.root })];
  let calls = 0;
  // Like kallsyms scanning physical memory in order: the first image still in RAM wins.
  const boot = (m: { read(pa: bigint, n: number): Buffer }) => {
    calls++;
    const k = m.read(stale.bannerPa, 1)[0] !== 0 ? stale : live;
    return k as unknown as Kernel;
  };
  const r = await bootstrapLive(mem, cpus, { bootstrap: boot });
  assert.equal(r.ok, true);
  assert.equal(r.ok && r.kernel, live as unknown as Kernel);
  assert.match(r.ok ? (r.note ?? '') : '', /skipped a stale kernel image at 0x200000/);
  assert.equal(calls, 2);
  assert.equal(live.refreshed, 1, 'nothing read through the mask is kept');

  // Only the stale image: not ready, with the reason of the first look.
  const only = await bootstrapLive(mem, cpus, { bootstrap: () => stale as unknown as Kernel });
  assert.deepEqual(
    { ok: only.ok, reason: only.ok ? '' : only.reason },
    {
      ok: false,
      reason:
        'kernel image in RAM is not the running one: no vCPU maps this kernel ' +
        '(after skipping a stale kernel image at 0x200000)',
    },
  );
});

test('bootstrapLive hides the kallsyms of a stale image that no longer bootstraps at all', async () => {
  const mem = new BufferPhysicalMemory(8 << 20);
  const live = fakeKernel(mem, {
    textVa: 0xffffffff8a000000n,
    textPa: 0x600000n,
    tableBase: 0x400000n,
    banner: BANNER,
  });
  // The old kernel's kallsyms tables survive at 0x200000 while its page tables are gone: kallsyms finds
  // them first, KASLR placement then fails.
  const symbols = Array.from({ length: 400 }, (_, i) => ({
    name: `old_func_${i}`,
    type: 't',
    address: 0xffffffff96400000n + BigInt(i) * 0x40n,
  }));
  const tables = buildKallsyms(symbols, 'v6.1').image;
  mem.write(0x200000n, tables);
  const boot = (m: { read(pa: bigint, n: number): Buffer }) => {
    if (m.read(0x200000n + 0x100n, 16).some((b) => b !== 0)) {
      throw new VigilError('os', 'not-found', 'could not place the kernel image (KASLR)');
    }
    return live as unknown as Kernel;
  };
  const r = await bootstrapLive(mem, [vcpu({ cr3: live.builder.root })], { bootstrap: boot });
  assert.equal(r.ok, true);
  assert.match(r.ok ? (r.note ?? '') : '', /^skipped a stale kernel image at 0x2[0-9a-f]{5}$/);
  // Nothing else to find: the reason of the last look, and what was skipped.
  const none = await bootstrapLive(mem, [], {
    bootstrap: (m) => {
      if (m.read(0x200000n + 0x100n, 16).some((b) => b !== 0)) {
        throw new VigilError('os', 'not-found', 'could not place the kernel image (KASLR)');
      }
      throw new VigilError('os', 'not-found', 'no kallsyms');
    },
  });
  assert.match(
    none.ok ? '' : none.reason,
    /^no kallsyms \(after skipping a stale kernel image at 0x2[0-9a-f]{5}\)$/,
  );
});

test('bootstrapLive waits for a booting kernel and reports bootstrap errors', async () => {
  const { mem, k } = setup();
  mem.bytes.writeUInt32LE(0, Number(k.statePa));
  const cpus = [vcpu({ cr3: k.builder.root })];
  const booting = await bootstrapLive(mem, cpus, { bootstrap: () => k as unknown as Kernel });
  assert.equal(booting.ok ? '' : booting.reason, 'the kernel is still booting (SYSTEM_BOOTING)');
  mem.bytes.writeUInt32LE(3, Number(k.statePa));
  const up = await bootstrapLive(mem, cpus, { bootstrap: () => k as unknown as Kernel });
  assert.equal(up.ok, true);
  assert.equal(up.ok && up.note, undefined);
  const none = await bootstrapLive(mem, cpus, {
    bootstrap: () => {
      throw new VigilError('os', 'not-found', 'no kallsyms');
    },
  });
  assert.equal(none.ok ? '' : none.reason, 'no kallsyms');
  // No registers to ask (HMP unavailable): a running kernel is accepted on its own word.
  const blind = await bootstrapLive(mem, [vcpu(new Error('no HMP'))], {
    bootstrap: () => k as unknown as Kernel,
  });
  assert.equal(blind.ok, true);
});
