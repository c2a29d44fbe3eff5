// Internet sockets from the kernel's own lookup tables, the ones /proc/net/{tcp,tcp6,udp,udp6,raw,raw6}
// iterate: TCP listeners in lhash2 and everything else (established, time-wait and request mini sockets)
// in ehash; UDP in udp_table; raw sockets in raw_v4/v6_hashinfo. Tables may be global or per namespace
// depending on the kernel (6.1-stable has per-netns TCP ehash; 6.2+ per-netns UDP): each distinct table
// is walked once and every socket is attributed to its namespace through sk->sk_net.
import { attempt, check, hasMember, hex, bucketHeads, type NetKernel } from './context.js';
import {
  AF_INET,
  AF_INET6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPPROTO_UDPLITE,
  TCP_NEW_SYN_RECV,
  TCP_TIME_WAIT,
} from './names.js';
import type { NetNamespace } from './netns.js';
import {
  walkSocketChain,
  fullSockFields,
  inetSocket,
  type NetId,
  SockLayout,
  type SocketCollector,
} from './sock.js';

/** Hash tables with more buckets than this are walked only this far (reported as an issue). */
export const MAX_BUCKETS = 1 << 22;

export interface InetContext {
  k: NetKernel;
  layout: SockLayout;
  namespaces: Map<bigint, number>;
  out: SocketCollector;
}

/** Bucket count from a hash mask, capped. */
function bucketCount(k: NetKernel, walker: string, mask: number, what: string): number {
  const n = mask + 1;
  if (n > MAX_BUCKETS) {
    k.issues.add(walker, 'bound', `${what} has ${n} buckets: walking the first ${MAX_BUCKETS}`);
    return MAX_BUCKETS;
  }
  return n;
}

/** netns inode of a socket's namespace; an unknown namespace is worth an issue (hidden or dying netns). */
function netnsOf(ctx: InetContext, walker: string, net: bigint, sock: bigint): number | undefined {
  const inum = ctx.namespaces.get(net);
  if (inum === undefined) {
    ctx.k.issues.add(
      walker,
      'malformed',
      `socket ${hex(sock)} belongs to struct net ${hex(net)}, not on the namespace list`,
    );
  }
  return inum;
}

const netidFor = (base: 'tcp' | 'udp' | 'udplite' | 'raw', family: number): NetId | undefined =>
  family === AF_INET ? base : family === AF_INET6 ? (`${base}6` as NetId) : undefined;

// ---------------------------------------------------------------- TCP

/** Every distinct inet_hashinfo: the global tcp_hashinfo and any per-namespace ones. */
function tcpHashinfos(k: NetKernel, namespaces: readonly NetNamespace[]): bigint[] {
  const out = new Set<bigint>();
  const global = k.symbols.address('tcp_hashinfo');
  if (global !== undefined) out.add(global);
  if (hasMember(k.types, 'inet_timewait_death_row', 'hashinfo')) {
    for (const ns of namespaces) {
      const p = attempt(k, 'tcp', `netns ${ns.inum}`, () =>
        k.view('net', ns.address).ptr('ipv4.tcp_death_row.hashinfo'),
      );
      if (p) out.add(p);
    }
  }
  return [...out];
}

function visitTcp(ctx: InetContext, sock: bigint): void {
  const { k, layout } = ctx;
  const c = layout.common(sock);
  const netid = netidFor('tcp', c.family);
  check(netid !== undefined, `TCP socket ${hex(sock)} has address family ${c.family}`);
  const kind = c.state === TCP_TIME_WAIT ? 'timewait' : c.state === TCP_NEW_SYN_RECV ? 'request' : 'full';
  // Mini sockets are smaller than struct sock: read nothing past their sock_common.
  const full = kind === 'full' ? fullSockFields(k, layout, sock) : undefined;
  const netns = netnsOf(ctx, 'tcp', c.net, sock);
  const s = inetSocket(netid, sock, kind, c, netns, full, { type: 1, protocol: IPPROTO_TCP });
  // /proc/net/tcp shows a request socket as SYN_RECV.
  if (kind === 'request') s.state = 'SYN_RECV';
  ctx.out.add(s);
}

export function walkTcp(ctx: InetContext, nsList: readonly NetNamespace[]): void {
  const { k, layout } = ctx;
  const t = k.types;
  const walkedListen = new Set<bigint>();
  const walkedEhash = new Set<bigint>();
  // Listeners: 6.1 chains them on sk_nulls_node in nulls_head; older kernels on icsk_listen_portaddr_node.
  const nulls = hasMember(t, 'inet_listen_hashbucket', 'nulls_head');
  const listenHead = t.offsetof('inet_listen_hashbucket', nulls ? 'nulls_head' : 'head');
  const listenNode = nulls
    ? layout.nullsNodeOffset
    : BigInt(t.offsetof('inet_connection_sock', 'icsk_listen_portaddr_node'));
  const listenStride = t.sizeof('inet_listen_hashbucket');
  const ehashStride = t.sizeof('inet_ehash_bucket');
  const ehashHead = t.offsetof('inet_ehash_bucket', 'chain');

  for (const hi of tcpHashinfos(k, nsList)) {
    attempt(k, 'tcp', `inet_hashinfo ${hex(hi)}`, () => {
      const v = k.view('inet_hashinfo', hi);
      const lhash2 = v.ptr('lhash2');
      if (lhash2 !== 0n && !walkedListen.has(lhash2)) {
        walkedListen.add(lhash2);
        const n = bucketCount(k, 'tcp', v.u32('lhash2_mask'), 'TCP listening hash');
        for (const first of bucketHeads(k, 'tcp', lhash2, n, listenStride, listenHead)) {
          walkSocketChain(ctx.k, ctx.out, 'tcp', first, listenNode, (s) => visitTcp(ctx, s));
        }
      }
      const ehash = v.ptr('ehash');
      if (ehash !== 0n && !walkedEhash.has(ehash)) {
        walkedEhash.add(ehash);
        const n = bucketCount(k, 'tcp', v.u32('ehash_mask'), 'TCP established hash');
        for (const first of bucketHeads(k, 'tcp', ehash, n, ehashStride, ehashHead)) {
          walkSocketChain(ctx.k, ctx.out, 'tcp', first, layout.nullsNodeOffset, (s) => visitTcp(ctx, s));
        }
      }
    });
  }
}

// ---------------------------------------------------------------- UDP

function udpTables(k: NetKernel, nsList: readonly NetNamespace[]): { table: bigint; lite: boolean }[] {
  const out = new Map<bigint, boolean>();
  for (const [name, lite] of [
    ['udp_table', false],
    ['udplite_table', true],
  ] as const) {
    const a = k.symbols.address(name);
    if (a !== undefined) out.set(a, lite);
  }
  // 6.2+: a namespace may have its own UDP table (net->ipv4.udp_table, pointing at the global one otherwise).
  if (hasMember(k.types, 'netns_ipv4', 'udp_table')) {
    for (const ns of nsList) {
      const p = attempt(k, 'udp', `netns ${ns.inum}`, () => k.view('net', ns.address).ptr('ipv4.udp_table'));
      if (p && !out.has(p)) out.set(p, false);
    }
  }
  return [...out].map(([table, lite]) => ({ table, lite }));
}

export function walkUdp(ctx: InetContext, nsList: readonly NetNamespace[]): void {
  const { k, layout } = ctx;
  const stride = k.types.sizeof('udp_hslot');
  const head = k.types.offsetof('udp_hslot', 'head');
  for (const { table, lite } of udpTables(k, nsList)) {
    attempt(k, 'udp', `udp_table ${hex(table)}`, () => {
      const v = k.view('udp_table', table);
      const hash = v.ptr('hash');
      if (hash === 0n) return;
      const n = bucketCount(k, 'udp', v.u32('mask'), 'UDP hash');
      for (const first of bucketHeads(k, 'udp', hash, n, stride, head)) {
        walkSocketChain(ctx.k, ctx.out, 'udp', first, layout.nodeOffset, (sock) => {
          const c = layout.common(sock);
          const netid = netidFor(lite ? 'udplite' : 'udp', c.family);
          check(netid !== undefined, `UDP socket ${hex(sock)} has address family ${c.family}`);
          const full = fullSockFields(k, layout, sock);
          const netns = netnsOf(ctx, 'udp', c.net, sock);
          const proto = lite ? IPPROTO_UDPLITE : IPPROTO_UDP;
          ctx.out.add(inetSocket(netid, sock, 'full', c, netns, full, { type: 2, protocol: proto }));
        });
      }
    });
  }
}

// ---------------------------------------------------------------- RAW

export function walkRaw(ctx: InetContext): void {
  const { k, layout } = ctx;
  const t = k.types;
  const ht = t.arrayInfo(t.field('raw_hashinfo', 'ht').type);
  // Newer kernels chain raw sockets on nulls lists; 6.1 on plain hlists. Both end the same way for us.
  const nulls = t.typeName(ht.elementType).includes('nulls');
  const nodeOffset = nulls ? layout.nullsNodeOffset : layout.nodeOffset;
  const htOffset = t.offsetof('raw_hashinfo', 'ht');
  const count = Math.min(ht.count, MAX_BUCKETS);
  for (const name of ['raw_v4_hashinfo', 'raw_v6_hashinfo']) {
    const base = k.symbols.address(name);
    if (base === undefined) continue;
    for (const first of bucketHeads(k, 'raw', base + BigInt(htOffset), count, ht.elementSize)) {
      walkSocketChain(ctx.k, ctx.out, 'raw', first, nodeOffset, (sock) => {
        const c = layout.common(sock);
        const netid = netidFor('raw', c.family);
        check(netid !== undefined, `raw socket ${hex(sock)} has address family ${c.family}`);
        const full = fullSockFields(k, layout, sock);
        const netns = netnsOf(ctx, 'raw', c.net, sock);
        // A raw socket's local "port" (inet_num) is its IP protocol, as /proc/net/raw prints it.
        ctx.out.add(inetSocket(netid, sock, 'full', c, netns, full, { type: 3, protocol: 0 }));
      });
    }
  }
}
