// Every socket the kernel's /proc/net tables would list, read from guest memory: TCP and UDP (v4 and v6),
// raw, UNIX and packet sockets, in every network namespace. A walk that stops early (a loop, a bound, an
// unreadable table) leaves an issue in kernel.issues and returns what it found.
import { attempt, type NetKernel } from './context.js';
import { walkRaw, walkTcp, walkUdp, type InetContext } from './inet.js';
import { walkPacket, walkUnix, type LocalContext } from './local.js';
import { listNetNamespaces, namespaceIndex, type NetNamespace } from './netns.js';
import { SockLayout, SocketCollector, type NetId, type Socket } from './sock.js';

export interface SocketWalkOptions {
  /** Bound on the total number of sockets reported (default 262144). */
  max?: number;
  /** Namespaces to look in (default: all on net_namespace_list). */
  namespaces?: readonly NetNamespace[];
}

export const DEFAULT_MAX_SOCKETS = 1 << 18;

/** Every socket kind the walkers know, in the order listings show them (ss's order). */
export const NETIDS: readonly NetId[] = [
  'tcp',
  'tcp6',
  'udp',
  'udp6',
  'udplite',
  'udplite6',
  'raw',
  'raw6',
  'unix',
  'packet',
];

export function listSockets(k: NetKernel, options: SocketWalkOptions = {}): Socket[] {
  const nsList = options.namespaces ?? listNetNamespaces(k);
  const layout = new SockLayout(k);
  const out = new SocketCollector(k, options.max ?? DEFAULT_MAX_SOCKETS);
  const inet: InetContext = { k, layout, namespaces: namespaceIndex(nsList), out };
  const local: LocalContext = { k, layout, out };
  // Each table is independent: one that cannot be read does not hide the others.
  attempt(k, 'tcp', 'TCP tables', () => walkTcp(inet, nsList));
  attempt(k, 'udp', 'UDP tables', () => walkUdp(inet, nsList));
  attempt(k, 'raw', 'raw tables', () => walkRaw(inet));
  attempt(k, 'unix', 'UNIX tables', () => walkUnix(local, nsList));
  attempt(k, 'packet', 'packet lists', () => walkPacket(local, nsList));
  return out.sockets.sort((a, b) => NETIDS.indexOf(a.netid) - NETIDS.indexOf(b.netid));
}
