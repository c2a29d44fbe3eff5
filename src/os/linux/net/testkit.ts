// Test support for the network walkers: a small kernel-like BTF (socket, hash-table, namespace and device
// structs with the kernel's member names, in a compact layout of our own: the walkers must find every
// offset through BTF), sparse virtual memory with field writers, and a fake NetKernel over both.
import { BtfWriter } from '../btf/testkit.js';
import { StructView, TypeRegistry, type TypeRef } from '../btf/index.js';
import { WalkIssues } from '../walk.js';
import type { NetKernel } from './context.js';
import { SparseMemory } from '../sparse-memory.js';
export { SparseMemory } from '../sparse-memory.js';

/** Build the BTF. Layouts are compact and differ from the kernel's on purpose. */
export function netBtf(): TypeRegistry {
  const w = new BtfWriter();
  const u8 = w.int('unsigned char', 1);
  const u16 = w.int('short unsigned int', 2);
  const u32 = w.int('unsigned int', 4);
  const s32 = w.int('int', 4, { signed: true });
  const ulong = w.int('long unsigned int', 8);
  const char = w.int('char', 1, { signed: true, char: true });
  const vp = w.ptr(0);
  const u8p = w.ptr(u8);

  const hlistNode = w.struct('hlist_node', 16, [
    ['next', vp, 0],
    ['pprev', vp, 64],
  ]);
  const hlistHead = w.struct('hlist_head', 8, [['first', vp, 0]]);
  const nullsNode = w.struct('hlist_nulls_node', 16, [
    ['next', vp, 0],
    ['pprev', vp, 64],
  ]);
  const nullsHead = w.struct('hlist_nulls_head', 8, [['first', vp, 0]]);
  const listHead = w.struct('list_head', 16, [
    ['next', vp, 0],
    ['prev', vp, 64],
  ]);
  const possibleNet = w.typedef('possible_net_t', w.struct('', 8, [['net', ulong, 0]]));
  const in6 = w.struct('in6_addr', 16, [['s6_addr', w.array(u8, s32, 16), 0]]);
  const kuid = w.typedef('kuid_t', w.struct('', 4, [['val', u32, 0]]));

  const addrs = w.struct('', 8, [
    ['skc_daddr', u32, 0],
    ['skc_rcv_saddr', u32, 32],
  ]);
  const ports = w.struct('', 4, [
    ['skc_dport', u16, 0],
    ['skc_num', u16, 16],
  ]);
  const nodes = w.union('', 16, [
    ['skc_node', hlistNode, 0],
    ['skc_nulls_node', nullsNode, 0],
  ]);
  const common = w.struct('sock_common', 80, [
    ['', addrs, 0],
    ['skc_hash', u32, 64],
    ['', ports, 96],
    ['skc_family', u16, 128],
    ['skc_state', u8, 144],
    ['skc_net', possibleNet, 192],
    ['skc_v6_daddr', in6, 256],
    ['skc_v6_rcv_saddr', in6, 384],
    ['', nodes, 512],
  ]);
  const sock = w.struct('sock', 96, [
    ['__sk_common', common, 0],
    ['sk_type', u16, 640],
    ['sk_protocol', u16, 656],
    ['sk_uid', kuid, 672],
    ['sk_socket', vp, 704],
  ]);
  const socket = w.struct('socket', 32, [
    ['state', s32, 0],
    ['file', vp, 64],
    ['sk', vp, 128],
  ]);
  const inode = w.struct('inode', 16, [
    ['i_mode', u16, 0],
    ['i_ino', ulong, 64],
  ]);
  w.struct('socket_alloc', 48, [
    ['socket', socket, 0],
    ['vfs_inode', inode, 256],
  ]);
  w.struct('inet_listen_hashbucket', 16, [
    ['lock', u32, 0],
    ['nulls_head', nullsHead, 64],
  ]);
  w.struct('inet_ehash_bucket', 8, [['chain', nullsHead, 0]]);
  w.struct('inet_hashinfo', 24, [
    ['ehash', vp, 0],
    ['ehash_mask', u32, 64],
    ['lhash2_mask', u32, 96],
    ['lhash2', vp, 128],
  ]);
  w.struct('udp_hslot', 16, [
    ['head', hlistHead, 0],
    ['count', s32, 64],
    ['lock', u32, 96],
  ]);
  w.struct('udp_table', 24, [
    ['hash', vp, 0],
    ['hash2', vp, 64],
    ['mask', u32, 128],
    ['log', u32, 160],
  ]);
  w.struct('raw_hashinfo', 40, [
    ['lock', u32, 0],
    ['ht', w.array(hlistHead, s32, 4), 64],
  ]);
  const sockaddrUn = w.struct('sockaddr_un', 110, [
    ['sun_family', u16, 0],
    ['sun_path', w.array(char, s32, 108), 16],
  ]);
  w.struct('unix_address', 8, [
    ['refcnt', u32, 0],
    ['len', s32, 32],
    ['name', w.array(sockaddrUn, s32, 0), 64],
  ]);
  w.struct('unix_sock', 112, [
    ['sk', sock, 0],
    ['addr', vp, 768],
    ['peer', vp, 832],
  ]);
  w.struct('packet_sock', 104, [
    ['sk', sock, 0],
    ['ifindex', s32, 768],
    ['num', u16, 800],
  ]);
  w.enum('netdev_state_t', 4, [
    ['__LINK_STATE_START', 0],
    ['__LINK_STATE_PRESENT', 1],
    ['__LINK_STATE_NOCARRIER', 2],
    ['__LINK_STATE_LINKWATCH_PENDING', 3],
    ['__LINK_STATE_DORMANT', 4],
  ]);
  w.struct('net_device', 96, [
    ['name', w.array(char, s32, 16), 0],
    ['dev_list', listHead, 128],
    ['state', ulong, 256],
    ['flags', u32, 320],
    ['netdev_ops', vp, 384],
    ['ifindex', s32, 448],
    ['mtu', u32, 480],
    ['type', u16, 512],
    ['operstate', u8, 528],
    ['addr_len', u8, 536],
    ['gflags', u16, 544],
    ['promiscuity', u32, 576],
    ['allmulti', u32, 608],
    ['dev_addr', u8p, 640],
  ]);
  const nsCommon = w.struct('ns_common', 8, [['inum', u32, 0]]);
  const unixTable = w.struct('unix_table', 16, [
    ['locks', vp, 0],
    ['buckets', vp, 64],
  ]);
  const netnsUnix = w.struct('netns_unix', 16, [['table', unixTable, 0]]);
  const netnsPacket = w.struct('netns_packet', 8, [['sklist', hlistHead, 0]]);
  w.struct('net', 64, [
    ['list', listHead, 0],
    ['ns', nsCommon, 128],
    ['dev_base_head', listHead, 192],
    ['unx', netnsUnix, 320],
    ['packet', netnsPacket, 448],
  ]);
  return TypeRegistry.fromBlob(w.blob());
}

/** A NetKernel over netBtf() and a SparseMemory, with helpers to lay out kernel objects by field name. */
export class FakeNetKernel implements NetKernel {
  readonly types = netBtf();
  readonly mem = new SparseMemory();
  issues = new WalkIssues();
  private readonly syms = new Map<string, bigint>();
  readonly symbols = { address: (name: string) => this.syms.get(name) };
  readonly space = { tryRead: (va: bigint, length: number) => this.mem.tryRead(va, length) };
  /** Objects are allocated upward from here; `next` is the end of what is allocated. */
  static readonly BASE = 0xffff_8880_0100_0000n;
  next = FakeNetKernel.BASE;

  view(type: TypeRef, va: bigint): StructView {
    return new StructView(this.types, type, va, this.mem);
  }

  readPointer = (va: bigint): bigint | undefined => this.mem.tryRead(va, 8)?.readBigUInt64LE(0);

  symbolize(va: bigint): string | undefined {
    for (const [name, at] of this.syms) if (at === va) return `${name}+0x0`;
    return undefined;
  }

  defineSymbol(name: string, va: bigint): void {
    this.syms.set(name, va);
  }

  /** Allocate (and map, zeroed) `size` bytes, 64-byte aligned like a slab object. */
  alloc(size: number): bigint {
    const va = this.next;
    this.next += BigInt((Math.max(size, 1) + 63) & ~63);
    this.mem.map(va, size);
    return va;
  }

  /** Allocate a zeroed struct of `type`. */
  allocStruct(type: string, extra = 0): bigint {
    return this.alloc(this.types.sizeof(type) + extra);
  }

  /** Write a scalar field by path (size from BTF). */
  set(type: string, base: bigint, path: string, value: number | bigint): void {
    const f = this.types.field(type, path);
    const b = Buffer.alloc(f.size);
    const v = BigInt.asUintN(f.size * 8, BigInt(value));
    for (let i = 0; i < f.size; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
    this.mem.write(base + BigInt(f.offset), b);
  }

  /** Write raw bytes at a field's address. */
  setBytes(type: string, base: bigint, path: string, bytes: Buffer): void {
    this.mem.write(base + BigInt(this.types.offsetof(type, path)), bytes);
  }

  writePointer(va: bigint, value: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, value));
    this.mem.write(va, b);
  }

  addressOf(type: string, base: bigint, path: string): bigint {
    return base + BigInt(this.types.offsetof(type, path));
  }
}

export interface SockSpec {
  /** Struct to allocate: 'sock' (default), 'unix_sock', 'packet_sock', or 'sock_common' for a mini socket. */
  struct?: string;
  family: number;
  state: number;
  net: bigint;
  type?: number;
  protocol?: number;
  uid?: number;
  /** Inode number: gives the socket a struct socket (socket_alloc) holding it. */
  ino?: number;
  /** 4 bytes (AF_INET) or 16 bytes (AF_INET6), network order. */
  local?: Buffer;
  remote?: Buffer;
  localPort?: number;
  remotePort?: number;
}

export const ipv4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));

/** Kernel objects laid out for the walkers: namespaces, sockets on hash chains, devices. */
export class NetWorld {
  readonly k = new FakeNetKernel();
  private readonly nsHead: bigint;

  constructor() {
    this.nsHead = this.k.alloc(16);
    this.k.writePointer(this.nsHead, this.nsHead);
    this.k.writePointer(this.nsHead + 8n, this.nsHead);
    this.k.defineSymbol('net_namespace_list', this.nsHead);
  }

  /** A struct net on net_namespace_list (the first one is also init_net), with an empty device list. */
  addNet(inum: number): bigint {
    const k = this.k;
    const net = k.allocStruct('net');
    k.set('net', net, 'ns.inum', inum);
    const devs = k.addressOf('net', net, 'dev_base_head');
    k.writePointer(devs, devs);
    k.writePointer(devs + 8n, devs);
    this.listAppend(this.nsHead, k.addressOf('net', net, 'list'));
    if (k.symbols.address('init_net') === undefined) k.defineSymbol('init_net', net);
    return net;
  }

  /** Append `node` to the circular list at `head`. */
  listAppend(head: bigint, node: bigint): void {
    const k = this.k;
    const last = k.readPointer(head + 8n)!;
    k.writePointer(node, head);
    k.writePointer(node + 8n, last);
    k.writePointer(last, node);
    k.writePointer(head + 8n, node);
  }

  addSock(spec: SockSpec): bigint {
    const k = this.k;
    const struct = spec.struct ?? 'sock';
    const sk = k.allocStruct(struct);
    k.set('sock_common', sk, 'skc_family', spec.family);
    k.set('sock_common', sk, 'skc_state', spec.state);
    k.set('sock_common', sk, 'skc_net.net', spec.net);
    const v6 = spec.local?.length === 16;
    if (spec.local) k.setBytes('sock_common', sk, v6 ? 'skc_v6_rcv_saddr' : 'skc_rcv_saddr', spec.local);
    if (spec.remote) k.setBytes('sock_common', sk, v6 ? 'skc_v6_daddr' : 'skc_daddr', spec.remote);
    k.set('sock_common', sk, 'skc_num', spec.localPort ?? 0);
    const dport = Buffer.alloc(2);
    dport.writeUInt16BE(spec.remotePort ?? 0);
    k.setBytes('sock_common', sk, 'skc_dport', dport);
    if (struct === 'sock_common') return sk;
    k.set('sock', sk, 'sk_type', spec.type ?? 1);
    k.set('sock', sk, 'sk_protocol', spec.protocol ?? 0);
    k.set('sock', sk, 'sk_uid.val', spec.uid ?? 0);
    if (spec.ino !== undefined) {
      const alloc = k.allocStruct('socket_alloc');
      k.set('socket_alloc', alloc, 'vfs_inode.i_ino', spec.ino);
      const socket = k.addressOf('socket_alloc', alloc, 'socket');
      k.set('socket', socket, 'sk', sk);
      k.set('sock', sk, 'sk_socket', socket);
    }
    return sk;
  }

  /**
   * Link sockets into a chain whose head pointer lives at `headVa`, through skc_nulls_node (nulls) or
   * skc_node; a nulls chain ends with `marker` (odd), a plain one with NULL.
   */
  chain(headVa: bigint, socks: readonly bigint[], opts: { nulls: boolean; marker?: bigint }): void {
    const k = this.k;
    const path = opts.nulls ? 'skc_nulls_node' : 'skc_node';
    const node = (s: bigint) => k.addressOf('sock_common', s, path);
    const end = opts.nulls ? (opts.marker ?? 1n) : 0n;
    k.writePointer(headVa, socks.length > 0 ? node(socks[0]!) : end);
    socks.forEach((s, i) => k.writePointer(node(s), i + 1 < socks.length ? node(socks[i + 1]!) : end));
  }

  /** tcp_hashinfo with `listen` and `ehash` buckets (nulls-terminated, empty). */
  addTcpHashinfo(listen: number, ehash: number): { hashinfo: bigint; lhash2: bigint; ehash: bigint } {
    const k = this.k;
    const hi = k.allocStruct('inet_hashinfo');
    const lstride = k.types.sizeof('inet_listen_hashbucket');
    const lhash2 = k.alloc(listen * lstride);
    const eh = k.alloc(ehash * 8);
    for (let i = 0; i < listen; i++) {
      k.set(
        'inet_listen_hashbucket',
        lhash2 + BigInt(i * lstride),
        'nulls_head.first',
        (BigInt(i) << 1n) | 1n,
      );
    }
    for (let i = 0; i < ehash; i++) k.writePointer(eh + BigInt(i * 8), (BigInt(i) << 1n) | 1n);
    k.set('inet_hashinfo', hi, 'lhash2', lhash2);
    k.set('inet_hashinfo', hi, 'lhash2_mask', listen - 1);
    k.set('inet_hashinfo', hi, 'ehash', eh);
    k.set('inet_hashinfo', hi, 'ehash_mask', ehash - 1);
    k.defineSymbol('tcp_hashinfo', hi);
    return { hashinfo: hi, lhash2, ehash: eh };
  }

  /** Address of a listening bucket's nulls_head.first. */
  listenBucket(lhash2: bigint, i: number): bigint {
    const stride = this.k.types.sizeof('inet_listen_hashbucket');
    return this.k.addressOf('inet_listen_hashbucket', lhash2 + BigInt(i * stride), 'nulls_head.first');
  }

  addUdpTable(slots: number, symbol = 'udp_table'): { table: bigint; hash: bigint } {
    const k = this.k;
    const table = k.allocStruct('udp_table');
    const hash = k.alloc(slots * k.types.sizeof('udp_hslot'));
    k.set('udp_table', table, 'hash', hash);
    k.set('udp_table', table, 'mask', slots - 1);
    k.defineSymbol(symbol, table);
    return { table, hash };
  }

  udpSlot(hash: bigint, i: number): bigint {
    return this.k.addressOf('udp_hslot', hash + BigInt(i * this.k.types.sizeof('udp_hslot')), 'head.first');
  }

  addRawHashinfo(symbol: string): bigint {
    const hi = this.k.allocStruct('raw_hashinfo');
    this.k.defineSymbol(symbol, hi);
    return hi;
  }

  rawBucket(hi: bigint, i: number): bigint {
    return this.k.addressOf('raw_hashinfo', hi, `ht[${i}].first`);
  }

  /** The namespace's UNIX hash table (512 buckets); returns the bucket array. */
  addUnixTable(net: bigint): bigint {
    const buckets = this.k.alloc(512 * 8);
    this.k.set('net', net, 'unx.table.buckets', buckets);
    return buckets;
  }

  /** Give a unix socket a bound name (sun_path bytes, NUL-terminated or abstract). */
  bindUnix(sk: bigint, sunPath: Buffer, len = 2 + sunPath.length): bigint {
    const k = this.k;
    const addr = k.alloc(k.types.sizeof('unix_address') + k.types.sizeof('sockaddr_un'));
    k.set('unix_address', addr, 'len', len);
    const name = k.addressOf('unix_address', addr, 'name');
    k.set('sockaddr_un', name, 'sun_family', 1);
    k.setBytes('sockaddr_un', name, 'sun_path', sunPath);
    k.set('unix_sock', sk, 'addr', addr);
    return addr;
  }

  addDevice(
    net: bigint,
    d: {
      name: string;
      ifindex: number;
      flags: number;
      mtu: number;
      mac: Buffer;
      operstate: number;
      state?: number;
    },
  ): bigint {
    const k = this.k;
    const dev = k.allocStruct('net_device');
    k.setBytes('net_device', dev, 'name', Buffer.from(d.name + '\0', 'latin1'));
    k.set('net_device', dev, 'ifindex', d.ifindex);
    k.set('net_device', dev, 'flags', d.flags);
    k.set('net_device', dev, 'mtu', d.mtu);
    k.set('net_device', dev, 'operstate', d.operstate);
    k.set('net_device', dev, 'state', d.state ?? 1);
    k.set('net_device', dev, 'addr_len', d.mac.length);
    const mac = k.alloc(32);
    k.mem.write(mac, d.mac);
    k.set('net_device', dev, 'dev_addr', mac);
    this.listAppend(k.addressOf('net', net, 'dev_base_head'), k.addressOf('net_device', dev, 'dev_list'));
    return dev;
  }
}
