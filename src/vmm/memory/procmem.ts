// Guest RAM of a QEMU whose RAM is anonymous memory (libvirt and Proxmox defaults): find the host
// mapping of each RAM block in /proc/PID/maps and read it with pread on /proc/PID/mem. The caller (the
// QEMU connector) supplies what QMP knows: the blocks' names and sizes (query-memdev, `info ramblock`)
// and the guest-physical map (`info mtree -f`). QEMU does not report host addresses, so a block is
// recognised by its size: a read-write, non-executable mapping of exactly that many bytes.

import { closeSync, constants, openSync, readFileSync, readSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { VigilError, describeSysError } from '../../util/errors.js';
import { type RamSegment, defaultLayout } from './layout.js';
import { type Segment, SegmentedMemory, hex } from './segments.js';

/** One line of /proc/PID/maps. */
export interface HostMapping {
  readonly start: bigint;
  readonly end: bigint;
  readonly perms: string;
  readonly path: string;
}

/** A RAM block to locate: name as in `info mtree -f` / `info ramblock`, size in bytes. */
export interface RamBlockSize {
  readonly name: string;
  readonly size: bigint;
}

/** Known guest bytes, e.g. a QMP pmemsave of a small range of a paused guest. */
export interface MemorySample {
  readonly paddr: bigint;
  readonly bytes: Buffer;
}

export interface ProcessMemoryOptions {
  readonly pid: number;
  /** The RAM blocks (at least the ones the segments name). */
  readonly blocks: readonly RamBlockSize[];
  /**
   * Guest-physical map: parseMtree/parseMtreeAll output (regionName = block name). Default, for a single
   * block: the q35 default split of its size.
   */
  readonly segments?: readonly (RamSegment & { readonly regionName?: string })[];
  /** Bytes to confirm the chosen mappings with; also picks among mappings of equal size. */
  readonly samples?: readonly MemorySample[];
  /** Where procfs is mounted (tests). */
  readonly procRoot?: string;
}

/** Where a RAM block lives in QEMU's address space. */
export interface BlockMapping {
  readonly name: string;
  readonly size: bigint;
  readonly hostStart: bigint;
}

const MAX_MAPS = 1 << 20;
const MAX_SAMPLE = 1 << 20;

/** Parse /proc/PID/maps text. */
export function parseMaps(text: string): HostMapping[] {
  const out: HostMapping[] = [];
  for (const line of text.split('\n', MAX_MAPS)) {
    // start-end perms offset dev inode [path]
    const m = /^([0-9a-f]+)-([0-9a-f]+) ([rwxsp-]{4}) [0-9a-f]+ \S+ \d+\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({ start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), perms: m[3], path: m[4] });
  }
  return out;
}

/** Read-write and not executable: how QEMU maps guest RAM (the TCG code buffer is rwx). */
const isRamLike = (m: HostMapping) => m.perms[0] === 'r' && m.perms[1] === 'w' && m.perms[2] !== 'x';

function sysError(e: unknown, pid: number, what: string): VigilError {
  const code = (e as { code?: string }).code;
  if (code === 'ENOENT' || code === 'ESRCH') {
    return new VigilError('vmm', 'not-found', `no process with PID ${pid}`, { cause: e });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new VigilError(
      'vmm',
      'denied',
      `${what} of PID ${pid}: permission denied (reading another process's memory needs root, ` +
        `or ptrace rights over it)`,
      { cause: e },
    );
  }
  return new VigilError('vmm', 'io', `${what} of PID ${pid} failed (${describeSysError(e)})`, { cause: e });
}

/** Check that `pid` is a QEMU system emulator; returns its executable name. */
export function checkQemu(pid: number, procRoot = '/proc'): string {
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new VigilError('vmm', 'usage', `bad PID ${pid}`);
  const dir = `${procRoot}/${pid}`;
  let name: string;
  try {
    name = basename(readlinkSync(`${dir}/exe`).replace(/ \(deleted\)$/, ''));
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw sysError(e, pid, 'reading the executable');
    // Without rights on exe, argv[0] still says what it is.
    try {
      name = basename(readFileSync(`${dir}/cmdline`).toString('latin1').split('\0')[0]);
    } catch (e2) {
      throw sysError(e2, pid, 'reading the command line');
    }
  }
  if (!/^(qemu-system-|qemu-kvm|kvm$)/.test(name)) {
    throw new VigilError('vmm', 'unsupported', `PID ${pid} is not QEMU (it runs ${JSON.stringify(name)})`);
  }
  return name;
}

function readAt(fd: number, pid: number, length: number, position: bigint): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  try {
    while (done < length) {
      const got = readSync(fd, buf, done, length - done, position + BigInt(done));
      if (got === 0) break;
      done += got;
    }
  } catch (e) {
    throw new VigilError(
      'vmm',
      'io',
      `reading /proc/${pid}/mem at ${hex(position)} failed (${describeSysError(e)})`,
      {
        cause: e,
      },
    );
  }
  return buf.subarray(0, done);
}

/** A real-mode IVT as a PC BIOS leaves it at guest-physical 0: most vectors point into segment F000. */
function looksLikeBiosIvt(ivt: Buffer): boolean {
  if (ivt.length < 1024) return false;
  let f000 = 0;
  for (let v = 0; v < 256; v++) if (ivt.readUInt16LE(v * 4 + 2) === 0xf000) f000++;
  return f000 >= 192;
}

export class ProcessMemory extends SegmentedMemory {
  readonly pid: number;
  readonly mappings: readonly BlockMapping[];
  /** A running VM: caches over it must expire. */
  readonly live = true;

  constructor(fd: number, pid: number, mappings: readonly BlockMapping[], segments: Segment[]) {
    super({
      fd,
      description: `QEMU PID ${pid} RAM via /proc/${pid}/mem`,
      segments,
      sourceName: `/proc/${pid}/mem`,
    });
    this.pid = pid;
    this.mappings = Object.freeze([...mappings]);
  }
}

/** Locate each RAM block of QEMU `pid` in its address space and open its memory read-only. */
export function openProcessMemory(options: ProcessMemoryOptions): ProcessMemory {
  const { pid, blocks, samples = [] } = options;
  const procRoot = options.procRoot ?? '/proc';
  checkQemu(pid, procRoot);
  const dir = `${procRoot}/${pid}`;
  if (blocks.length === 0) throw new VigilError('vmm', 'usage', 'no RAM blocks given');
  for (const s of samples) {
    if (s.bytes.length === 0 || s.bytes.length > MAX_SAMPLE) {
      throw new VigilError('vmm', 'usage', `memory samples must be 1..${MAX_SAMPLE} bytes`);
    }
  }
  const given: readonly (RamSegment & { readonly regionName?: string })[] =
    options.segments ?? defaultLayout(blocks[0].size);
  const layout = given.map((s) => ({
    ...s,
    regionName: s.regionName ?? (blocks.length === 1 ? blocks[0].name : ''),
  }));
  const byName = new Map(blocks.map((b) => [b.name, b]));
  const used = [...new Set(layout.map((s) => s.regionName))].map((n) => {
    const b = byName.get(n);
    if (!b)
      throw new VigilError('vmm', 'not-found', `the memory map names RAM block "${n}", which was not given`);
    return b;
  });

  let maps: HostMapping[];
  try {
    maps = parseMaps(readFileSync(`${dir}/maps`, 'latin1'));
  } catch (e) {
    throw sysError(e, pid, 'reading the memory maps');
  }
  let fd: number;
  try {
    fd = openSync(`${dir}/mem`, constants.O_RDONLY);
  } catch (e) {
    throw sysError(e, pid, 'opening /proc/PID/mem');
  }
  let memory: ProcessMemory | undefined;
  try {
    const mappings = used.map((b) => chooseMapping(fd, pid, b, maps, layout, samples));
    const hostOf = new Map(mappings.map((m) => [m.name, m]));
    const segments: Segment[] = layout.map((s) => {
      const m = hostOf.get(s.regionName)!;
      if (s.backendOffset < 0n || s.backendOffset + s.size > m.size) {
        throw new VigilError(
          'vmm',
          'malformed',
          `memory map puts ${hex(s.start)}+${hex(s.size)} past the end of block ${m.name} (${hex(m.size)})`,
        );
      }
      return { start: s.start, size: s.size, offset: m.hostStart + s.backendOffset };
    });
    memory = new ProcessMemory(fd, pid, mappings, segments);
    for (const s of samples) {
      if (!memory.read(s.paddr, s.bytes.length).equals(s.bytes)) {
        throw new VigilError(
          'vmm',
          'state',
          `guest RAM read through /proc/${pid}/mem differs from the sample at ${hex(s.paddr)} ` +
            `(wrong mapping, or the guest changed those bytes since the sample)`,
        );
      }
    }
    return memory;
  } catch (e) {
    if (memory) memory.close();
    else closeSync(fd);
    throw e;
  }
}

function chooseMapping(
  fd: number,
  pid: number,
  block: RamBlockSize,
  maps: readonly HostMapping[],
  layout: readonly (RamSegment & { regionName: string })[],
  samples: readonly MemorySample[],
): BlockMapping {
  let candidates = maps.filter((m) => isRamLike(m) && m.end - m.start === block.size);
  if (candidates.length === 0) {
    const big = maps
      .filter(isRamLike)
      .map((m) => m.end - m.start)
      .sort((a, b) => (a > b ? -1 : 1))
      .slice(0, 4)
      .map(hex);
    throw new VigilError(
      'vmm',
      'not-found',
      `no read-write mapping of ${hex(block.size)} bytes (RAM block ${block.name}) in PID ${pid}; ` +
        `largest are ${big.join(', ') || 'none'}`,
    );
  }
  const mine = layout.filter((s) => s.regionName === block.name);
  // Backend offset of a guest-physical address inside this block, if the map puts it there.
  const backendOffsetOf = (paddr: bigint, len: number) => {
    const s = mine.find((x) => paddr >= x.start && paddr + BigInt(len) <= x.start + x.size);
    return s ? s.backendOffset + (paddr - s.start) : undefined;
  };
  if (candidates.length > 1) {
    const checks = samples
      .map((s) => ({ s, off: backendOffsetOf(s.paddr, s.bytes.length) }))
      .filter((c) => c.off !== undefined);
    if (checks.length > 0) {
      candidates = candidates.filter((m) =>
        checks.every((c) => readAt(fd, pid, c.s.bytes.length, m.start + c.off!).equals(c.s.bytes)),
      );
    } else {
      const ivt = backendOffsetOf(0n, 1024);
      if (ivt !== undefined)
        candidates = candidates.filter((m) => looksLikeBiosIvt(readAt(fd, pid, 1024, m.start + ivt)));
    }
    if (candidates.length !== 1) {
      throw new VigilError(
        'vmm',
        'state',
        `cannot tell which mapping of ${hex(block.size)} bytes is RAM block ${block.name} in PID ${pid} ` +
          `(${candidates.length} fit); pass memory samples to decide`,
      );
    }
  }
  return { name: block.name, size: block.size, hostStart: candidates[0].start };
}
