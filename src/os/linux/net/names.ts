// Numbers the kernel exports to user space (uapi and /proc), with their names: address families, socket
// types, TCP states, interface flags and operational states. These are ABI, stable across kernel versions,
// unlike struct layouts, which always come from BTF.

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_PACKET = 17;

const FAMILIES: Record<number, string> = { 1: 'unix', 2: 'inet', 10: 'inet6', 16: 'netlink', 17: 'packet' };
export const familyName = (f: number): string => FAMILIES[f] ?? `af${f}`;

const SOCK_TYPES: Record<number, string> = {
  1: 'stream',
  2: 'dgram',
  3: 'raw',
  4: 'rdm',
  5: 'seqpacket',
  6: 'dccp',
  10: 'packet',
};
export const sockTypeName = (t: number): string => SOCK_TYPES[t] ?? `type${t}`;

/** include/net/tcp_states.h; unix and UDP sockets use the same numbers for their state. */
export const TCP_STATES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
] as const;
export const TCP_ESTABLISHED = 1;
export const TCP_SYN_RECV = 3;
export const TCP_TIME_WAIT = 6;
export const TCP_CLOSE = 7;
export const TCP_LISTEN = 10;
export const TCP_NEW_SYN_RECV = 12;
export const tcpStateName = (s: number): string => (s > 0 && TCP_STATES[s]) || `state${s}`;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_UDPLITE = 136;

/** include/uapi/linux/if.h: enum net_device_flags. */
export const IFF_FLAGS: readonly (readonly [string, number])[] = [
  ['UP', 0x1],
  ['BROADCAST', 0x2],
  ['DEBUG', 0x4],
  ['LOOPBACK', 0x8],
  ['POINTOPOINT', 0x10],
  ['NOTRAILERS', 0x20],
  ['RUNNING', 0x40],
  ['NOARP', 0x80],
  ['PROMISC', 0x100],
  ['ALLMULTI', 0x200],
  ['MASTER', 0x400],
  ['SLAVE', 0x800],
  ['MULTICAST', 0x1000],
  ['PORTSEL', 0x2000],
  ['AUTOMEDIA', 0x4000],
  ['DYNAMIC', 0x8000],
  ['LOWER_UP', 0x10000],
  ['DORMANT', 0x20000],
  ['ECHO', 0x40000],
];
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;
export const IFF_PROMISC = 0x100;
export const IFF_LOWER_UP = 0x10000;
export const IFF_DORMANT = 0x20000;

export function flagNames(flags: number): string[] {
  return IFF_FLAGS.filter(([, bit]) => (flags & bit) !== 0).map(([name]) => name);
}

/** include/uapi/linux/if.h: IF_OPER_*. */
const OPER_STATES = ['UNKNOWN', 'NOTPRESENT', 'DOWN', 'LOWERLAYERDOWN', 'TESTING', 'DORMANT', 'UP'];
export const IF_OPER_UNKNOWN = 0;
export const IF_OPER_DORMANT = 5;
export const IF_OPER_UP = 6;
export const operStateName = (s: number): string => OPER_STATES[s] ?? `oper${s}`;

/** Dotted quad from 4 bytes in network order. */
export function formatIPv4(b: Buffer): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** RFC 5952 text of a 16-byte IPv6 address: lower case, longest zero run (≥ 2 groups) as "::". */
export function formatIPv6(b: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
  // IPv4-mapped addresses read best with their IPv4 part dotted, as the kernel and ss print them.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatIPv4(b.subarray(12))}`;
  }
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const text = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestAt < 0) return text(groups);
  return `${text(groups.slice(0, bestAt))}::${text(groups.slice(bestAt + bestLen))}`;
}

/** "addr:port", bracketing IPv6 addresses. */
export function endpoint(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** aa:bb:cc:… in lower case. */
export function formatMac(b: Buffer): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
