// Network namespaces: every `struct net` on net_namespace_list (init_net first). Sockets and devices are
// reported with their namespace's inode number (net->ns.inum), the number `ls -l /proc/PID/ns/net` shows.
import { listHeadEntries } from '../walk.js';
import { attempt, hex, type NetKernel } from './context.js';

export interface NetNamespace {
  /** Address of its struct net. */
  address: bigint;
  /** net->ns.inum: the namespace's inode number. */
  inum: number;
}

/** Namespaces beyond this many are not walked (reported as an issue). */
export const MAX_NAMESPACES = 4096;
const WALKER = 'netns';

export function listNetNamespaces(k: NetKernel): NetNamespace[] {
  const head = k.symbols.address('net_namespace_list');
  const init = k.symbols.address('init_net');
  const addresses: bigint[] = [];
  if (head !== undefined) {
    const off = BigInt(k.types.offsetof('net', 'list'));
    for (const node of listHeadEntries(k.readPointer, head, {
      walker: WALKER,
      max: MAX_NAMESPACES,
      issues: k.issues,
    })) {
      addresses.push(node - off);
    }
  }
  // A namespace list that lost init_net (or a kernel without the list symbol) still has init_net.
  if (init !== undefined && !addresses.includes(init)) {
    if (head !== undefined)
      k.issues.add(WALKER, 'malformed', `init_net ${hex(init)} is not on net_namespace_list`);
    addresses.unshift(init);
  }
  const out: NetNamespace[] = [];
  for (const address of addresses) {
    const inum = attempt(k, WALKER, `struct net ${hex(address)}`, () =>
      k.view('net', address).u32('ns.inum'),
    );
    if (inum !== undefined) out.push({ address, inum });
  }
  return out;
}

/** Namespace inode numbers by struct net address, for sockets that point back at their namespace. */
export function namespaceIndex(namespaces: readonly NetNamespace[]): Map<bigint, number> {
  return new Map(namespaces.map((n) => [n.address, n.inum]));
}
