// Target discovery: QMP sockets found by glob patterns (e.g. Proxmox's /var/run/qemu-server/*.qmp), scanned
// again periodically so that VMs that start later are watched and VMs that went away are dropped. Node 20
// has no fs.glob, and the patterns needed are simple: `*`, `?` and `[…]` inside path segments.

import { readdirSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { VigilError } from '../util/errors.js';
import { MONITOR_ORIGIN } from './sinks/types.js';

/**
 * Where vigil looks by default: one extra QMP socket per VM under /run/vigil/. QEMU serves one client per
 * QMP socket, so vigil's long-lived connection must not take the socket the management stack uses
 * (Proxmox's /var/run/qemu-server/ID.qmp, which `qm` and pvedaemon connect to on demand; libvirt's monitor,
 * held by libvirtd). docs/config.md shows how to add the extra socket on Proxmox and libvirt.
 */
export const DEFAULT_DISCOVERY_GLOBS: readonly string[] = ['/run/vigil/*.qmp'];

/** Directory entries looked at per scan, and sockets returned: a glob must not walk a whole disk. */
export const MAX_SCANNED_ENTRIES = 100_000;
export const MAX_DISCOVERED = 1_000;

const GLOB_CHARS = /[*?[]/;

/**
 * A VM name from its QMP socket path: ~/.cache/vigil/run/NAME/qmp.sock → NAME (the folder names the VM),
 * /var/run/qemu-server/100.qmp → 100, /run/vigil/web.qmp → web. Characters a VM name may not hold become '_'.
 */
export function nameFromSocket(path: string): string {
  const parts = path.split('/').filter(Boolean);
  const last = parts.at(-1) ?? path;
  const raw = /^(qmp|monitor)(\.(sock|socket))?$/.test(last) && parts.length > 1 ? parts.at(-2)! : last;
  const stem = raw.replace(/\.(qmp|sock|socket)$/, '');
  const clean = stem.replace(/[^A-Za-z0-9._:@-]/g, '_').replace(/^[^A-Za-z0-9]+/, '');
  return (clean || 'vm').slice(0, 64);
}

/** A regular expression for one path segment of a glob (`*`, `?`, `[abc]`, `[!abc]`, `[a-z]`). */
export function segmentRegExp(segment: string): RegExp {
  let re = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const close = segment.indexOf(']', i + 2);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let body = segment.slice(i + 1, close);
      const negate = body.startsWith('!') || body.startsWith('^');
      if (negate) body = body.slice(1);
      re += `[${negate ? '^' : ''}${body.replace(/[\\\]^]/g, '\\$&')}]`;
      i = close;
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  // Like a shell: a wildcard does not match a leading dot.
  const dotSafe = segment.startsWith('.') ? '' : '(?!\\.)';
  return new RegExp(`^${dotSafe}${re}$`);
}

/**
 * Paths of the unix sockets that match an absolute glob, sorted. Directories that cannot be read are
 * skipped (a glob over /var/run must not fail because one folder is private). `**` is not supported.
 */
export function expandGlob(pattern: string, budget = { entries: MAX_SCANNED_ENTRIES }): string[] {
  const abs = isAbsolute(pattern) ? pattern : resolve(pattern);
  if (abs.split('/').includes('**')) {
    throw new VigilError(MONITOR_ORIGIN, 'usage', `discovery glob ${pattern}: "**" is not supported`);
  }
  const segments = abs.split('/').filter(Boolean);
  let current = ['/'];
  for (const [i, seg] of segments.entries()) {
    const last = i === segments.length - 1;
    const next: string[] = [];
    for (const dir of current) {
      if (!GLOB_CHARS.test(seg)) {
        next.push(join(dir, seg));
        continue;
      }
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      const re = segmentRegExp(seg);
      for (const n of names) {
        if (--budget.entries < 0) return finish(next, last);
        if (re.test(n)) next.push(join(dir, n));
      }
    }
    current = last ? next : next.filter(isDirectory);
    if (current.length === 0) return [];
  }
  return finish(current, true);
}

function finish(paths: string[], complete: boolean): string[] {
  const sockets = (complete ? paths : []).filter(isSocket);
  return [...new Set(sockets)].sort().slice(0, MAX_DISCOVERED);
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isSocket(p: string): boolean {
  try {
    return statSync(p).isSocket();
  } catch {
    return false;
  }
}

export interface DiscoveryOptions {
  globs: readonly string[];
  intervalMs: number;
  /** A socket matched that did not before. */
  onFound(path: string): void;
  /** A socket matched before and no longer does (its file is gone). */
  onGone(path: string): void;
  onError?(e: unknown): void;
}

/** Periodic re-scan of the globs; reports what appeared and what went away since the last scan. */
export class Discovery {
  readonly #o: DiscoveryOptions;
  readonly #known = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: DiscoveryOptions) {
    for (const g of options.globs) {
      if (!isAbsolute(g)) throw new VigilError(MONITOR_ORIGIN, 'usage', `discovery glob ${g}: not absolute`);
    }
    this.#o = options;
  }

  /** Scan once now; returns every socket currently matched. */
  scan(): string[] {
    const budget = { entries: MAX_SCANNED_ENTRIES };
    const found = new Set<string>();
    for (const g of this.#o.globs) {
      try {
        for (const p of expandGlob(g, budget)) if (found.size < MAX_DISCOVERED) found.add(p);
      } catch (e) {
        this.#o.onError?.(e);
      }
    }
    for (const p of found) {
      if (this.#known.has(p)) continue;
      this.#known.add(p);
      this.#call(() => this.#o.onFound(p));
    }
    for (const p of [...this.#known]) {
      if (found.has(p)) continue;
      this.#known.delete(p);
      this.#call(() => this.#o.onGone(p));
    }
    return [...found].sort();
  }

  start(): void {
    if (this.#timer) return;
    this.scan();
    this.#timer = setInterval(() => this.scan(), this.#o.intervalMs);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #call(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.#o.onError?.(e);
    }
  }
}
