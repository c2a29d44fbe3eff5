// Test support: pause, resume and dump a lab guest through QMP. QEMU serves one QMP client at a time, so
// every helper here connects, does its work and disconnects: a test can run `vigil … --qmp` in between
// (while the guest stays paused) without waiting on our connection.
import { copyFileSync } from 'node:fs';
import type { GuestState } from '../../src/lab/index.js';
import { QmpClient } from '../../src/vmm/qmp/client.js';

export type DumpFormat = 'elf' | 'raw';

/** Run `fn` with a fresh QMP connection to the guest, closed afterwards. */
export async function withQmp<T>(guest: GuestState, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await QmpClient.connect(guest.qmp);
  try {
    return await fn(qmp);
  } finally {
    await qmp.close();
  }
}

export async function isPaused(guest: GuestState): Promise<boolean> {
  return withQmp(guest, async (q) => !(await q.queryStatus()).running);
}

/** Stop the vCPUs; returns whether the guest was running (so the caller knows to resume it). */
export async function pauseGuest(guest: GuestState): Promise<boolean> {
  return withQmp(guest, async (q) => {
    const running = (await q.queryStatus()).running;
    if (running) await q.stop();
    return running;
  });
}

export async function resumeGuest(guest: GuestState): Promise<void> {
  await withQmp(guest, (q) => q.cont());
}

/** Run `fn` with the guest paused, resuming it afterwards only if it was running before. */
export async function whilePaused<T>(guest: GuestState, fn: () => Promise<T>): Promise<T> {
  const wasRunning = await pauseGuest(guest);
  try {
    return await fn();
  } finally {
    if (wasRunning) await resumeGuest(guest);
  }
}

/**
 * Write the guest's memory to `path`: 'elf' is QEMU's own core (dump-guest-memory, paging off, with vCPU
 * registers); 'raw' is guest RAM byte for byte (file offset = guest-physical address), a copy of the
 * shared-memory RAM file taken while the guest is paused (for a lab guest up to 2 GiB, RAM is one range
 * from 0, so the RAM file is the physical image). The guest is paused for the dump and left as it was.
 */
export async function dumpGuest(guest: GuestState, path: string, format: DumpFormat): Promise<void> {
  await whilePaused(guest, async () => {
    if (format === 'elf') await withQmp(guest, (q) => q.dumpGuestMemory(path));
    else copyFileSync(guest.memoryFile, path);
  });
}
