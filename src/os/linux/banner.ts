// The kernel banner ("Linux version 6.1.0-56-amd64 (…) (gcc-12 …) #1 SMP PREEMPT_DYNAMIC …\n"), found
// in guest-physical memory with no help. Copies are usual: linux_banner in .rodata, a weak variant
// without the build number (6.1+), the printk log, terminal buffers of `uname -a` or /proc/version. The
// well-formed text seen most often wins, and a copy that ends a C string ("\n\0", as linux_banner does)
// counts double. A hostile guest can plant copies too: once kallsyms is known, the KASLR step confirms
// one copy is linux_banner itself (see kaslr.ts, bannerAnchors).

import { VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import type { PhysicalMemory } from '../../vmm/types.js';

const PREFIX = Buffer.from('Linux version ', 'latin1');
/** Longest banner accepted (real ones are ~200 characters). */
export const MAX_BANNER_LENGTH = 512;
/** Occurrences looked at; past that a guest is spamming banners and the rest only count. */
const MAX_OCCURRENCES = 4096;
const CHUNK = 64 << 10;

export interface Banner {
  /** The banner without its newline, sanitised for display. */
  text: string;
  /** Kernel release: the first word after "Linux version" (e.g. 6.1.0-56-amd64), sanitised. */
  release: string;
  /** Physical addresses of every copy of this exact text, ascending. */
  paddrs: bigint[];
  /** Physical addresses of the copies that end a C string ("…\n\0"), as linux_banner does. */
  terminatedPaddrs: bigint[];
  /** Other well-formed banners seen (different text), for the record. */
  others: { text: string; count: number }[];
}

/** A plausible banner: release, two parenthesised groups or more, a build number. */
const WELL_FORMED = /^Linux version (\d+\.\d+[\x21-\x7e]*) \(.+\) #\d+ .+$/;

/** The banner text at `buf[at…]` up to its newline, or undefined if it is not printable up to one. */
function bannerAt(buf: Buffer, at: number): { text: string; terminated: boolean } | undefined {
  const end = Math.min(buf.length, at + MAX_BANNER_LENGTH);
  for (let p = at + PREFIX.length; p < end; p++) {
    const b = buf[p];
    if (b === 0x0a || (b === 0x0d && buf[p + 1] === 0x0a)) {
      const text = buf.toString('latin1', at, p);
      const terminated = b === 0x0a && buf[p + 1] === 0;
      return { text, terminated };
    }
    if (b < 0x20 || b > 0x7e) return undefined;
  }
  return undefined;
}

/** The release word of a banner text ("Linux version 6.1.0-56-amd64 (…" → "6.1.0-56-amd64"). */
export function bannerRelease(text: string): string {
  const rest = text.startsWith('Linux version ') ? text.slice('Linux version '.length) : text;
  return sanitize(rest.split(' ')[0] ?? '', 64);
}

/** Read the banner at a known physical address (e.g. linux_banner's), or throw 'malformed'. */
export function readBannerAt(mem: PhysicalMemory, paddr: bigint): Banner {
  const buf = mem.read(paddr, MAX_BANNER_LENGTH + 2);
  const found = buf.subarray(0, PREFIX.length).equals(PREFIX) ? bannerAt(buf, 0) : undefined;
  if (!found) throw new VigilError('os', 'malformed', `no kernel banner at 0x${paddr.toString(16)}`);
  return {
    text: sanitize(found.text),
    release: bannerRelease(found.text),
    paddrs: [paddr],
    terminatedPaddrs: found.terminated ? [paddr] : [],
    others: [],
  };
}

/** Scan guest-physical memory for kernel banners and choose the kernel's own. */
export function findBanner(mem: PhysicalMemory): Banner {
  const seen = new Map<string, { paddrs: bigint[]; terminated: bigint[] }>();
  let occurrences = 0;
  const scratch = Buffer.alloc(CHUNK + MAX_BANNER_LENGTH + 2);
  for (const r of mem.ranges) {
    const end = r.start + r.size;
    for (let at = r.start; at < end; at += BigInt(CHUNK)) {
      const len = Number(end - at < BigInt(scratch.length) ? end - at : BigInt(scratch.length));
      const buf = mem.read(at, len, scratch.subarray(0, len));
      for (let i = buf.indexOf(PREFIX); i >= 0 && i < CHUNK; i = buf.indexOf(PREFIX, i + 1)) {
        if (++occurrences > MAX_OCCURRENCES) break;
        const found = bannerAt(buf, i);
        if (!found || !WELL_FORMED.test(found.text)) continue;
        const entry = seen.get(found.text) ?? { paddrs: [], terminated: [] };
        entry.paddrs.push(at + BigInt(i));
        if (found.terminated) entry.terminated.push(at + BigInt(i));
        seen.set(found.text, entry);
      }
    }
  }
  if (seen.size === 0) throw new VigilError('os', 'not-found', 'no "Linux version" banner in guest memory');
  const score = (e: { paddrs: bigint[]; terminated: bigint[] }) => e.paddrs.length + e.terminated.length;
  const ranked = [...seen.entries()].sort(
    (a, b) => score(b[1]) - score(a[1]) || (a[1].paddrs[0] < b[1].paddrs[0] ? -1 : 1),
  );
  const [text, best] = ranked[0];
  return {
    text: sanitize(text),
    release: bannerRelease(text),
    paddrs: best.paddrs,
    terminatedPaddrs: best.terminated,
    others: ranked.slice(1, 16).map(([t, e]) => ({ text: sanitize(t), count: e.paddrs.length })),
  };
}
