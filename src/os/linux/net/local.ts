// UNIX-domain and packet sockets: the per-namespace lists /proc/net/unix and /proc/net/packet iterate.
// UNIX: net->unx.table.buckets (5.19+; one global unix_socket_table before). Packet: net->packet.sklist.
import { VigilError } from '../../../util/errors.js';
import { sanitize } from '../../../util/sanitize.js';
import { attempt, hasMember, hex, bucketHeads, type NetKernel } from './context.js';
import { AF_PACKET, AF_UNIX, familyName, sockTypeName, TCP_LISTEN, tcpStateName } from './names.js';
import type { NetNamespace } from './netns.js';
import {
  walkSocketChain,
  fullSockFields,
  type SockLayout,
  type Socket,
  type SocketCollector,
} from './sock.js';

/**
 * Buckets of the UNIX socket hash: UNIX_HASH_SIZE, a compile-time constant BTF does not carry. The
 * per-namespace table (5.19+) has 256 for bound-by-path plus 256 for abstract/unbound sockets; the old
 * global table had 256 plus one list of unbound sockets.
 */
const UNIX_BUCKETS_PERNET = 512;
const UNIX_BUCKETS_GLOBAL = 257;

export interface LocalContext {
  k: NetKernel;
  layout: SockLayout;
  out: SocketCollector;
}

/** The bound name as /proc/net/unix prints it: a path, or "@name" with NULs as '@' for abstract names. */
export function unixPath(sunPath: Buffer): string {
  if (sunPath.length === 0) return '';
  if (sunPath[0] !== 0) {
    const nul = sunPath.indexOf(0);
    return sanitize((nul >= 0 ? sunPath.subarray(0, nul) : sunPath).toString('latin1'), 256);
  }
  const rest = Buffer.from(sunPath.subarray(1)).map((b) => (b === 0 ? 0x40 : b));
  return sanitize('@' + Buffer.from(rest).toString('latin1'), 256);
}

/** The name a unix_address holds; undefined when it holds none. */
function boundPath(k: NetKernel, addr: bigint): string | undefined {
  const a = k.view('unix_address', addr);
  const nameOff = BigInt(k.types.offsetof('unix_address', 'name'));
  const pathOff = k.types.offsetof('sockaddr_un', 'sun_path');
  // len counts sun_family too; a hostile len is clipped to the size of a sockaddr_un.
  const len = Math.min(Math.max(a.s32('len'), 0), k.types.sizeof('sockaddr_un'));
  if (len <= pathOff) return undefined;
  const raw = k.space.tryRead(addr + nameOff + BigInt(pathOff), len - pathOff);
  if (!raw) throw new VigilError('os', 'unmapped', `its name is not readable`);
  return unixPath(raw);
}

function unixSocket(ctx: LocalContext, sock: bigint, netns: number): Socket {
  const { k, layout } = ctx;
  const c = layout.common(sock);
  const full = fullSockFields(k, layout, sock);
  const u = k.view('unix_sock', sock);
  const addr = u.ptr('addr');
  const path =
    addr === 0n ? undefined : attempt(k, 'unix', `unix_address ${hex(addr)}`, () => boundPath(k, addr));
  const peer = u.ptr('peer');
  const s: Socket = {
    netid: 'unix',
    address: sock,
    kind: 'full',
    family: familyName(c.family),
    type: sockTypeName(full.type),
    protocol: full.protocol,
    state: tcpStateName(c.state),
    netns,
    local: path ?? '*',
    remote: '*',
    inode: full.inode,
    uid: full.uid,
  };
  if (path !== undefined) s.path = path;
  if (peer !== 0n) s.peer = peer;
  if (c.family !== AF_UNIX)
    k.issues.add('unix', 'malformed', `unix socket ${hex(sock)} has family ${c.family}`);
  return s;
}

export function walkUnix(ctx: LocalContext, nsList: readonly NetNamespace[]): void {
  const { k } = ctx;
  const perNet = hasMember(k.types, 'net', 'unx') && hasMember(k.types, 'netns_unix', 'table');
  const heads: { buckets: bigint; count: number; netns: number | undefined }[] = [];
  if (perNet) {
    for (const ns of nsList) {
      const b = attempt(k, 'unix', `netns ${ns.inum}`, () =>
        k.view('net', ns.address).ptr('unx.table.buckets'),
      );
      if (b) heads.push({ buckets: b, count: UNIX_BUCKETS_PERNET, netns: ns.inum });
    }
  } else {
    const table = k.symbols.address('unix_socket_table');
    if (table !== undefined) heads.push({ buckets: table, count: UNIX_BUCKETS_GLOBAL, netns: undefined });
  }
  const namespaces = new Map(nsList.map((n) => [n.address, n.inum]));
  for (const { buckets, count, netns } of heads) {
    for (const first of bucketHeads(k, 'unix', buckets, count, 8)) {
      walkSocketChain(k, ctx.out, 'unix', first, ctx.layout.nodeOffset, (sock) => {
        const inum = netns ?? namespaces.get(ctx.layout.common(sock).net);
        ctx.out.add(unixSocket(ctx, sock, inum ?? 0));
      });
    }
  }
  // Connected sockets show their peer's inode as the remote end, as ss does.
  const inodes = new Map(ctx.out.sockets.filter((s) => s.netid === 'unix').map((s) => [s.address, s.inode]));
  for (const s of ctx.out.sockets) {
    if (s.netid === 'unix' && s.peer !== undefined) s.remote = `* ${inodes.get(s.peer) ?? hex(s.peer)}`;
    if (s.netid === 'unix' && s.state === tcpStateName(TCP_LISTEN)) s.remote = '*';
  }
}

export function walkPacket(ctx: LocalContext, nsList: readonly NetNamespace[]): void {
  const { k, layout } = ctx;
  if (!hasMember(k.types, 'net', 'packet')) return;
  for (const ns of nsList) {
    const first = attempt(k, 'packet', `netns ${ns.inum}`, () =>
      k.view('net', ns.address).ptr('packet.sklist.first'),
    );
    if (!first) continue;
    walkSocketChain(k, ctx.out, 'packet', first, layout.nodeOffset, (sock) => {
      const c = layout.common(sock);
      const full = fullSockFields(k, layout, sock);
      const po = k.view('packet_sock', sock);
      const ifindex = po.s32('ifindex');
      const protocol = po.bytes('num').readUInt16BE(0);
      if (c.family !== AF_PACKET)
        k.issues.add('packet', 'malformed', `packet socket ${hex(sock)} has family ${c.family}`);
      const proto = '0x' + protocol.toString(16).padStart(4, '0');
      ctx.out.add({
        netid: 'packet',
        address: sock,
        kind: 'full',
        family: familyName(c.family),
        type: sockTypeName(full.type),
        protocol,
        state: tcpStateName(c.state),
        netns: ns.inum,
        local: `${proto}@${ifindex === 0 ? '*' : ifindex}`,
        remote: '*',
        inode: full.inode,
        uid: full.uid,
        ifindex,
      });
    });
  }
}
