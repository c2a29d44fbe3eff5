// Which process serves a QMP unix socket? QMP does not say, but the kernel does: /proc/net/unix maps the
// listening socket's path to an inode, and the QEMU process holds a descriptor "socket:[inode]". Needed to
// read a guest whose RAM is anonymous (libvirt, Proxmox) through /proc/PID/mem. Root only, like that.

import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export function pidOfUnixSocketServer(path: string, procRoot = '/proc'): number | undefined {
  let table: string;
  try {
    table = readFileSync(`${procRoot}/net/unix`, 'latin1');
  } catch {
    return undefined;
  }
  const inodes = new Set<string>();
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON (listening)
    if (f.length >= 8 && f[7] === path && f[3] === '00010000' && f[6] !== undefined) inodes.add(f[6]);
  }
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync(procRoot)) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`${procRoot}/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`${procRoot}/${entry}/fd/${fd}`));
        if (m?.[1] && inodes.has(m[1])) return Number(entry);
      } catch {
        // The process or descriptor went away while we looked.
      }
    }
  }
  return undefined;
}
