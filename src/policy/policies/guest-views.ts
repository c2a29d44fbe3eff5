// What the guest says about itself, parsed: the output of its own `ps`, its /proc/modules and its
// /proc/net/{tcp,tcp6,udp,udp6}, as qemu-guest-agent returns them. All of it is guest-controlled text, from
// the very kernel a rootkit hooks: every parser is bounded (bytes, lines, line length), keeps only what
// has the exact shape of a real line, and refuses — VigilError 'malformed' or 'bound' — an output it
// cannot vouch for, so that a garbled or truncated listing is never read as "everything is hidden".
import { endpoint, formatIPv4, formatIPv6 } from '../../os/linux/net/names.js';
import { VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';

/** PID_MAX_LIMIT on 64-bit kernels (4 Mi): no PID is larger. */
export const PID_MAX_LIMIT = 4 * 1024 * 1024;
/** Bytes of guest output a parser looks at; more is refused as 'bound'. */
export const MAX_LISTING_BYTES = 32 << 20;
/** Lines of one listing; more is refused as 'bound' (PID_MAX_LIMIT processes would not fit anyway). */
export const MAX_LISTING_LINES = 1 << 20;
/** Characters of a line that are looked at: the fields we need come first, the rest is display. */
const MAX_LINE = 4096;
/** Display names taken from the guest's lines are cut to this. */
const MAX_NAME = 64;

/** Lines of a listing, bounded; blank lines dropped, '\r' stripped, each cut to MAX_LINE. */
function listingLines(out: Buffer, what: string): string[] {
  if (out.length > MAX_LISTING_BYTES) {
    throw new VigilError('policy', 'bound', `${what} is ${out.length} bytes, over ${MAX_LISTING_BYTES}`);
  }
  const text = out.toString('latin1');
  const lines: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    if (lines.length >= MAX_LISTING_LINES) {
      throw new VigilError('policy', 'bound', `${what} has more than ${MAX_LISTING_LINES} lines`);
    }
    const line = text.slice(start, Math.min(end, start + MAX_LINE)).replace(/\r$/, '');
    if (line.trim() !== '') lines.push(line);
    start = end + 1;
  }
  return lines;
}

/** Unparsable lines a listing may have before it is not believed: a couple, or one in a hundred. */
const tolerated = (lines: number): number => 2 + Math.floor(lines / 100);

function checkRejects(what: string, rejected: string[], lines: number): void {
  if (rejected.length > tolerated(lines)) {
    throw new VigilError(
      'policy',
      'malformed',
      `${what}: ${rejected.length} of ${lines} lines are not in the expected format (first: "${sanitize(rejected[0]!, 80)}")`,
    );
  }
}

// ------------------------------------------------------------------------------------------------ ps

export interface PsListing {
  /** PID → the rest of its line (comm for `-o pid,comm`, more for plain busybox `ps`), sanitised. */
  pids: Map<number, string>;
  /** Non-blank lines, header included. */
  lines: number;
  /** Lines that were neither the header nor a process. */
  rejected: number;
}

const PS_LINE = /^\s*(\d{1,7})(?:\s+(.*))?$/;
const PS_HEADER = /^\s*PID(\s|$)/;

/**
 * A `ps` listing whose first column is the PID: procps `ps -eo pid=,comm=` (no header), busybox
 * `ps -o pid,comm` and plain busybox `ps` (a "PID …" header). Throws 'malformed' when no process is listed
 * (ps always lists at least itself) or too many lines have another shape, 'bound' when it is too large.
 */
export function parsePs(out: Buffer): PsListing {
  const lines = listingLines(out, 'ps output');
  const pids = new Map<number, string>();
  const rejected: string[] = [];
  lines.forEach((line, i) => {
    if (i === 0 && PS_HEADER.test(line)) return;
    const m = PS_LINE.exec(line);
    const pid = m ? Number(m[1]) : 0;
    if (!m || pid < 1 || pid > PID_MAX_LIMIT) {
      rejected.push(line);
      return;
    }
    if (!pids.has(pid)) pids.set(pid, sanitize((m[2] ?? '').trim(), MAX_NAME));
  });
  if (pids.size === 0) {
    throw new VigilError(
      'policy',
      'malformed',
      lines.length === 0
        ? 'ps printed nothing'
        : `ps listed no process (first line: "${sanitize(lines[0]!, 80)}")`,
    );
  }
  checkRejects('ps output', rejected, lines.length);
  return { pids, lines: lines.length, rejected: rejected.length };
}

// -------------------------------------------------------------------------------------- /proc/modules

export interface ProcModule {
  name: string;
  size: number;
  state: 'Live' | 'Loading' | 'Unloading';
  /** Base of the module's text; undefined when kptr_restrict printed zero. */
  address?: bigint;
}

// kernel/module/procfs.c m_show: "name size refcnt deps state address[ taints]".
const MODULE_LINE =
  /^(\S{1,64}) (\d{1,12}) (?:\S+ \S+) (Live|Loading|Unloading) 0x([0-9a-f]{1,16})(?: \(\S*\))?$/i;

/** /proc/modules. An empty file is a valid listing (no modules); lines of another shape are refused. */
export function parseProcModules(out: Buffer): ProcModule[] {
  const lines = listingLines(out, '/proc/modules');
  const mods: ProcModule[] = [];
  const rejected: string[] = [];
  for (const line of lines) {
    const m = MODULE_LINE.exec(line.trimEnd());
    if (!m) {
      rejected.push(line);
      continue;
    }
    const address = BigInt(`0x${m[4]!}`);
    mods.push({
      name: sanitize(m[1]!, MAX_NAME),
      size: Number(m[2]),
      state: m[3] as ProcModule['state'],
      ...(address !== 0n ? { address } : {}),
    });
  }
  checkRejects('/proc/modules', rejected, lines.length);
  return mods;
}

// -------------------------------------------------------------------------------------- /proc/net/*

export type ProcNetTable = 'tcp' | 'tcp6' | 'udp' | 'udp6';
export const PROC_NET_TABLES: readonly ProcNetTable[] = ['tcp', 'tcp6', 'udp', 'udp6'];

export interface ProcNetEntry {
  table: ProcNetTable;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** The `st` column: a TCP state number (UDP uses 7, CLOSE, and 1 once connected). */
  state: number;
  uid: number;
  /** 0 for sockets without a struct socket (time-wait, request and orphaned sockets). */
  inode: number;
}

export interface ProcNetListing {
  table: ProcNetTable;
  entries: ProcNetEntry[];
}

const NET_HEADER = /^\s*sl\s+local_address\s+(?:rem|remote)_address\s+st\s/;
// tcp4_seq_show / udp4_format_sock and their v6 twins: "sl: local:port remote:port st tx:rx tr:when
// retrnsmt uid timeout inode …"; addresses are the __be32 words printed as host-order hex.
const NET_LINE =
  /^\s*\d+:\s+([0-9A-F]{8}|[0-9A-F]{32}):([0-9A-F]{4})\s+([0-9A-F]{8}|[0-9A-F]{32}):([0-9A-F]{4})\s+([0-9A-F]{2})\s+[0-9A-F]{8}:[0-9A-F]{8}\s+[0-9A-F]{2}:[0-9A-F]{8}\s+[0-9A-F]{8}\s+(\d{1,10})\s+-?\d{1,10}\s+(\d{1,20})(?:\s|$)/i;

/** An address column: 32-bit words in the guest's (little-endian) byte order, as hex. */
export function procNetAddress(hex: string): string {
  const b = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) {
    b.writeUInt32LE(Number.parseInt(hex.slice(w * 8, w * 8 + 8), 16), w * 4);
  }
  return b.length === 4 ? formatIPv4(b) : formatIPv6(b);
}

/**
 * One /proc/net table. The header line must be there: a table with a header and no rows is a valid
 * empty table, an output without it (nothing, an error text) is refused as 'malformed'.
 */
export function parseProcNet(out: Buffer, table: ProcNetTable): ProcNetListing {
  const lines = listingLines(out, `/proc/net/${table}`);
  if (lines.length === 0 || !NET_HEADER.test(lines[0]!)) {
    throw new VigilError(
      'policy',
      'malformed',
      `/proc/net/${table} has no header line${lines[0] ? ` (first line: "${sanitize(lines[0], 80)}")` : ' (empty)'}`,
    );
  }
  const width = table.endsWith('6') ? 32 : 8;
  const entries: ProcNetEntry[] = [];
  const rejected: string[] = [];
  for (const line of lines.slice(1)) {
    const m = NET_LINE.exec(line);
    if (!m || m[1]!.length !== width || m[3]!.length !== width) {
      rejected.push(line);
      continue;
    }
    const inode = Number(m[7]);
    if (!Number.isSafeInteger(inode)) {
      rejected.push(line);
      continue;
    }
    entries.push({
      table,
      localAddress: procNetAddress(m[1]!),
      localPort: Number.parseInt(m[2]!, 16),
      remoteAddress: procNetAddress(m[3]!),
      remotePort: Number.parseInt(m[4]!, 16),
      state: Number.parseInt(m[5]!, 16),
      uid: Number(m[6]),
      inode,
    });
  }
  checkRejects(`/proc/net/${table}`, rejected, lines.length);
  return { table, entries };
}

/** The local end as the socket walker prints it ("addr:port", "[v6]:port"), to match an inode-less socket. */
export const entryLocal = (e: ProcNetEntry): string => endpoint(e.localAddress, e.localPort);
