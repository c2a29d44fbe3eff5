// One socket as vigil reports it, and the decoding shared by every socket table: the common part
// (struct sock_common: family, state, addresses, ports, namespace) and the full struct sock (type,
// protocol, owner uid, and the inode number /proc and /proc/PID/fd show as socket:[N]).
import { VigilError } from '../../../util/errors.js';
import { attempt, hasMember, hex, type NetKernel } from './context.js';
import { hlistNullsChain } from './nulls.js';
import {
  AF_INET,
  AF_INET6,
  endpoint,
  familyName,
  formatIPv4,
  formatIPv6,
  sockTypeName,
  tcpStateName,
} from './names.js';

export type NetId =
  'tcp' | 'tcp6' | 'udp' | 'udp6' | 'udplite' | 'udplite6' | 'raw' | 'raw6' | 'unix' | 'packet';

export interface SocketOwner {
  pid: number;
  comm: string;
  fd: number;
}

export interface Socket {
  /** Which /proc/net table lists it. */
  netid: NetId;
  /** Address of the struct sock (or inet_timewait_sock / request_sock for the mini sockets). */
  address: bigint;
  /** 'timewait' and 'request' are the kernel's mini sockets: no owner, inode 0. */
  kind: 'full' | 'timewait' | 'request';
  family: string;
  type: string;
  protocol: number;
  state: string;
  /** Network namespace inode (net->ns.inum); undefined when its namespace is not on the namespace list. */
  netns?: number;
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
  /** For display: "addr:port", a unix path, or a packet socket's protocol and interface. */
  local: string;
  remote: string;
  /** The socket inode (0 for mini sockets and sockets without a struct socket). */
  inode: number;
  uid?: number;
  /** unix: the bound path ("@name" for the abstract namespace), and the connected peer's struct sock. */
  path?: string;
  peer?: bigint;
  /** packet: interface index it is bound to (0 = all). */
  ifindex?: number;
  /** Processes with the socket open (filled in by socketOwners). */
  owners?: SocketOwner[];
}

/** What sock_common says about any socket, full or mini. */
export interface CommonFields {
  family: number;
  state: number;
  /** struct net the socket belongs to. */
  net: bigint;
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
}

/** Field offsets and layout choices for this kernel, looked up once per walk. */
export class SockLayout {
  readonly commonSize: number;
  /** Offset of skc_node / skc_nulls_node inside struct sock (where hash chains link sockets). */
  readonly nodeOffset: bigint;
  readonly nullsNodeOffset: bigint;
  /** socket_alloc: struct socket → its inode's i_ino. */
  private readonly inoFromSocket: bigint | undefined;
  private readonly hasV6: boolean;

  constructor(private readonly k: NetKernel) {
    const t = k.types;
    this.commonSize = t.sizeof('sock_common');
    this.nodeOffset = BigInt(t.offsetof('sock', '__sk_common.skc_node'));
    this.nullsNodeOffset = BigInt(t.offsetof('sock', '__sk_common.skc_nulls_node'));
    this.hasV6 = hasMember(t, 'sock_common', 'skc_v6_rcv_saddr');
    this.inoFromSocket =
      t.find('socket_alloc') !== undefined
        ? BigInt(t.offsetof('socket_alloc', 'vfs_inode.i_ino') - t.offsetof('socket_alloc', 'socket'))
        : undefined;
  }

  /** Decode the common part of any socket at `address`. */
  common(address: bigint): CommonFields {
    const v = this.k.view('sock_common', address);
    const family = v.u16('skc_family');
    const out: CommonFields = { family, state: v.u8('skc_state'), net: v.ptr('skc_net.net') };
    if (family === AF_INET) {
      out.localAddress = formatIPv4(v.bytes('skc_rcv_saddr'));
      out.remoteAddress = formatIPv4(v.bytes('skc_daddr'));
    } else if (family === AF_INET6 && this.hasV6) {
      out.localAddress = formatIPv6(v.bytes('skc_v6_rcv_saddr'));
      out.remoteAddress = formatIPv6(v.bytes('skc_v6_daddr'));
    } else {
      return out;
    }
    out.localPort = v.u16('skc_num');
    out.remotePort = v.bytes('skc_dport').readUInt16BE(0);
    return out;
  }

  /** The inode number of a struct socket (SOCK_INODE(sock)->i_ino), 0 for NULL. */
  inodeOfSocket(socketPtr: bigint): number {
    if (socketPtr === 0n || this.inoFromSocket === undefined) return 0;
    const ino = this.k.readPointer(socketPtr + this.inoFromSocket);
    if (ino === undefined)
      throw new VigilError('os', 'unmapped', `struct socket ${hex(socketPtr)} is not readable`);
    return Number(BigInt.asUintN(53, ino));
  }
}

/** Type, protocol, uid and inode of a full socket (inode 0, and an issue, when its struct socket is unreadable). */
export function fullSockFields(
  k: NetKernel,
  layout: SockLayout,
  address: bigint,
): { type: number; protocol: number; uid: number; inode: number } {
  const v = k.view('sock', address);
  const socket = v.ptr('sk_socket');
  return {
    type: v.u16('sk_type'),
    protocol: v.u16('sk_protocol'),
    uid: v.u32('sk_uid.val'),
    inode: attempt(k, 'sockets', `inode of socket ${hex(address)}`, () => layout.inodeOfSocket(socket)) ?? 0,
  };
}

/** The Socket record for an inet socket from its decoded parts. */
export function inetSocket(
  netid: NetId,
  address: bigint,
  kind: Socket['kind'],
  c: CommonFields,
  netns: number | undefined,
  full: { type: number; protocol: number; uid: number; inode: number } | undefined,
  defaults: { type: number; protocol: number },
): Socket {
  const s: Socket = {
    netid,
    address,
    kind,
    family: familyName(c.family),
    type: sockTypeName(full?.type ?? defaults.type),
    protocol: full?.protocol ?? defaults.protocol,
    state: tcpStateName(c.state),
    local: endpoint(c.localAddress ?? '?', c.localPort ?? 0),
    remote: endpoint(c.remoteAddress ?? '?', c.remotePort ?? 0),
    inode: full?.inode ?? 0,
  };
  if (netns !== undefined) s.netns = netns;
  if (c.localAddress !== undefined) s.localAddress = c.localAddress;
  if (c.localPort !== undefined) s.localPort = c.localPort;
  if (c.remoteAddress !== undefined) s.remoteAddress = c.remoteAddress;
  if (c.remotePort !== undefined) s.remotePort = c.remotePort;
  if (full) s.uid = full.uid;
  return s;
}

/**
 * Shared bound on sockets per walk, and the record of which struct socks were already reported (shared
 * tables reached through several namespaces are walked once).
 */
export class SocketCollector {
  readonly sockets: Socket[] = [];
  private readonly seen = new Set<bigint>();
  private full = false;

  constructor(
    private readonly k: NetKernel,
    readonly max: number,
  ) {}

  /** Room left under the bound (chain walks take it as their own bound). */
  get room(): number {
    return Math.max(0, this.max - this.sockets.length);
  }

  has(address: bigint): boolean {
    return this.seen.has(address);
  }

  /** Record (once) that the bound was reached. */
  noteFull(): void {
    if (!this.full) this.k.issues.add('sockets', 'bound', `stopped at the bound of ${this.max} sockets`);
    this.full = true;
  }

  /** Add a socket; false (and one issue) once the bound is reached. */
  add(s: Socket): boolean {
    if (this.sockets.length >= this.max) {
      this.noteFull();
      return false;
    }
    this.seen.add(s.address);
    this.sockets.push(s);
    return true;
  }
}

/**
 * Walk one hash chain (hlist or hlist_nulls) of sockets linked at `nodeOffset` inside them, and `visit`
 * each socket not reported yet. A socket that cannot be decoded becomes an issue, not a failed walk.
 */
export function walkSocketChain(
  k: NetKernel,
  out: SocketCollector,
  walker: string,
  first: bigint,
  nodeOffset: bigint,
  visit: (sock: bigint) => void,
): void {
  if (out.room === 0) return out.noteFull();
  for (const node of hlistNullsChain(k.readPointer, first, { walker, max: out.room + 1, issues: k.issues })) {
    const sock = node - nodeOffset;
    if (out.has(sock)) continue;
    attempt(k, walker, `socket ${hex(sock)}`, () => visit(sock));
  }
}
