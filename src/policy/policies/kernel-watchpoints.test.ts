import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import type { StopReply } from '../../vmm/gdb/stop-reply.js';
import type { DebugHandle, VmEvent } from '../../vmm/types.js';
import type { Finding } from '../types.js';
import { IntegrityTestKernel, MODULE_AREA } from './kernel-testkit.js';
import {
  WATCH_EVENT,
  armWatchpoints,
  criticalWatchTargets,
  watchpointEvent,
  type WatchpointClient,
} from './kernel-watchpoints.js';
import { memoryAccessPolicy } from './memory-access.js';
import { context, learned } from './memory-access-testkit.js';

const hex = (v: bigint) => '0x' + v.toString(16);

describe('memory-access: watchpoints', () => {
  class FakeGdb implements WatchpointClient {
    running = false;
    watches: { va: bigint; len: number }[] = [];
    removed = 0;
    continues = 0;
    listeners = new Set<(s: StopReply) => void>();
    refuse = new Set<bigint>();
    async watch(va: bigint, len: number): Promise<DebugHandle> {
      if (this.refuse.has(va)) throw new VigilError('vmm', 'unsupported', 'no more watchpoints');
      this.watches.push({ va, len });
      return { remove: async () => void this.removed++ };
    }
    async continue(): Promise<void> {
      this.continues++;
      this.running = true;
    }
    stoppedCalls = 0;
    async whileStopped<T>(fn: () => Promise<T>): Promise<T> {
      this.stoppedCalls++;
      const was = this.running;
      this.running = false;
      try {
        return await fn();
      } finally {
        this.running = was;
      }
    }
    onStop(l: (s: StopReply) => void): () => void {
      this.listeners.add(l);
      return () => this.listeners.delete(l);
    }
    stop(s: Partial<StopReply>): void {
      this.running = false;
      for (const l of this.listeners) l({ kind: 'signal', signal: 5, registers: new Map(), raw: '', ...s });
    }
  }

  test('four 8-byte targets: kill, getdents64, getdents, IDT 0x80', () => {
    const k = new IntegrityTestKernel();
    const t = criticalWatchTargets(k);
    assert.deepEqual(
      t.map((x) => [x.label, x.va, x.len]),
      [
        ['sys_call_table[62] (kill)', k.at.sysCallTable + 62n * 8n, 8],
        ['sys_call_table[217] (getdents64)', k.at.sysCallTable + 217n * 8n, 8],
        ['sys_call_table[78] (getdents)', k.at.sysCallTable + 78n * 8n, 8],
        ['idt[0x80]', k.at.idtTable + 0x800n, 8],
      ],
    );
  });

  test('arm, continue the VM, turn a hit into an event and continue again; other stops are not ours', async () => {
    const k = new IntegrityTestKernel();
    const targets = [
      {
        label: 'sys_call_table[5] (kill)',
        va: k.at.sysCallTable + 40n,
        len: 8,
        table: 'sys_call_table',
        nr: 5,
      },
      { label: 'idt[0x80]', va: k.at.idtTable + 0x800n, len: 8, vector: 0x80 },
      { label: 'refused', va: 0x1000n, len: 8 },
    ];
    const gdb = new FakeGdb();
    gdb.refuse.add(0x1000n);
    const arm = await armWatchpoints(gdb, targets, { now: () => 42 });
    assert.equal(arm.armed.length, 2);
    assert.deepEqual(
      arm.failed.map((f) => f.target.label),
      ['refused'],
    );
    assert.equal(gdb.continues, 1);
    const it = arm.events[Symbol.asyncIterator]();
    gdb.stop({ signal: 2 }); // an interrupt: not ours, not continued
    assert.equal(gdb.continues, 1);
    gdb.stop({ thread: 'p1.1', watch: { kind: 'watch', address: k.at.sysCallTable + 44n } });
    assert.equal(gdb.continues, 2);
    const ev = (await it.next()).value as VmEvent;
    assert.deepEqual(ev, {
      source: 'gdb',
      name: WATCH_EVENT,
      time: 42,
      data: {
        target: 'sys_call_table[5] (kill)',
        va: hex(k.at.sysCallTable + 40n),
        address: hex(k.at.sysCallTable + 44n),
        kind: 'watch',
        thread: 'p1.1',
        table: 'sys_call_table',
        nr: 5,
      },
    });
    await arm.disarm();
    assert.equal(gdb.removed, 2);
    assert.equal(gdb.stoppedCalls, 1); // removed with the target stopped
    // Arming a running target stops it for the inserts and leaves it running.
    const again = await armWatchpoints(gdb, targets.slice(0, 1));
    assert.deepEqual([again.armed.length, gdb.stoppedCalls, gdb.running, gdb.continues], [1, 2, true, 2]);
    assert.equal((await it.next()).done, true);
    assert.equal(
      watchpointEvent({ kind: 'signal', signal: 5, registers: new Map(), raw: '' }, targets, 0),
      undefined,
    );
  });

  test('a hit is checked against the baseline at once', async () => {
    const { k, b } = learned();
    k.addModule({ name: 'vk_syscall', base: MODULE_AREA, size: 0x4000n });
    const ev: VmEvent = {
      source: 'gdb',
      name: WATCH_EVENT,
      time: 1,
      data: { target: 'sys_call_table[5] (kill)', table: 'sys_call_table', nr: 5, thread: 'p1.1' },
    };
    const same = (await memoryAccessPolicy.onEvent!(ev, context(k, b))) as Finding[];
    assert.equal(same[0]!.severity, 'high');
    assert.match(same[0]!.summary, /same value as the baseline/);
    k.writeU64(k.at.sysCallTable + 40n, MODULE_AREA + 0x20n);
    const hooked = (await memoryAccessPolicy.onEvent!(ev, context(k, b))) as Finding[];
    assert.equal(hooked[0]!.severity, 'critical');
    assert.equal(hooked[0]!.evidence.changed, true);
    assert.match(
      hooked[0]!.summary,
      /write to sys_call_table\[5\] \(kill\) caught by a watchpoint .*vk_syscall/,
    );
    const idt: VmEvent = { ...ev, data: { target: 'idt[0x80]', vector: 0x80 } };
    k.setGate(0x80, MODULE_AREA + 0x10n, { dpl: 3 });
    const gate = (await memoryAccessPolicy.onEvent!(idt, context(k, b))) as Finding[];
    assert.equal(gate[0]!.evidence.changed, true);
    assert.deepEqual(await memoryAccessPolicy.onEvent!({ ...ev, source: 'qmp' }, context(k, b)), []);
  });
});
