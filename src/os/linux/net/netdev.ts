// Network devices of every namespace (net->dev_base_head, linked through net_device.dev_list): name,
// index, flags as the kernel holds them (a sniffer's promiscuous mode shows even when user space cannot
// see it through gflags), MTU, hardware address, operational state and the driver's net_device_ops.
import { listHeadEntries } from '../walk.js';
import { attempt, hasMember, hex, type NetKernel } from './context.js';
import {
  flagNames,
  formatMac,
  IF_OPER_DORMANT,
  IF_OPER_UNKNOWN,
  IF_OPER_UP,
  IFF_DORMANT,
  IFF_LOWER_UP,
  IFF_RUNNING,
  operStateName,
} from './names.js';
import { listNetNamespaces, type NetNamespace } from './netns.js';

export interface NetDevice {
  /** Address of the struct net_device. */
  address: bigint;
  netns: number;
  name: string;
  ifindex: number;
  /** Flag names as `ip link` shows them: dev->flags plus RUNNING/LOWER_UP/DORMANT derived from its state. */
  flags: string[];
  /** dev->flags as stored (IFF_PROMISC here is the real state, whoever asked for it). */
  flagsRaw: number;
  /** Flags user space asked for (dev->gflags: PROMISC/ALLMULTI set through `ip link`). */
  gflags: number;
  /** How many users want promiscuous mode (a sniffer raises it without touching gflags). */
  promiscuity: number;
  allmulti: number;
  mtu: number;
  /** Hardware address (aa:bb:…), undefined when its bytes cannot be read. */
  mac?: string;
  /** ARPHRD_* hardware type (1 ether, 772 loopback). */
  hwType: number;
  operstate: string;
  netdevOps: bigint;
  /** The symbol netdev_ops points at ("loopback_ops+0x0"); undefined for module code or unknown memory. */
  netdevOpsSymbol?: string;
}

/** Devices beyond this many per namespace are not listed (reported as an issue). */
export const MAX_DEVICES = 65536;
/** MAX_ADDR_LEN: the longest hardware address a net_device holds. */
const MAX_ADDR_LEN = 32;
const WALKER = 'netdev';

export interface NetDeviceOptions {
  namespaces?: readonly NetNamespace[];
}

export function listNetDevices(k: NetKernel, options: NetDeviceOptions = {}): NetDevice[] {
  const nsList = options.namespaces ?? listNetNamespaces(k);
  const t = k.types;
  const listOff = BigInt(t.offsetof('net_device', 'dev_list'));
  const headOff = BigInt(t.offsetof('net', 'dev_base_head'));
  // 5.17+ keeps the address behind a const pointer; earlier kernels embed an array.
  const addrIsPointer = t.resolved(t.field('net_device', 'dev_addr').type).kind === 'ptr';
  const bit = (name: string): bigint | undefined => {
    try {
      return t.enumValue(name);
    } catch {
      return undefined;
    }
  };
  const stateBits = {
    start: bit('__LINK_STATE_START'),
    noCarrier: bit('__LINK_STATE_NOCARRIER'),
  };
  const hasGflags = hasMember(t, 'net_device', 'gflags');
  const out: NetDevice[] = [];
  for (const ns of nsList) {
    for (const node of listHeadEntries(k.readPointer, ns.address + headOff, {
      walker: WALKER,
      max: MAX_DEVICES,
      issues: k.issues,
    })) {
      const dev = node - listOff;
      const d = attempt(k, WALKER, `net_device ${hex(dev)}`, () => {
        const v = k.view('net_device', dev);
        const flagsRaw = v.u32('flags');
        const operstate = v.u8('operstate');
        const state = v.u64('state');
        let flags = flagsRaw & ~(IFF_RUNNING | IFF_LOWER_UP | IFF_DORMANT);
        // dev_get_flags(): the state-derived flags exist only while the device is running.
        if (stateBits.start !== undefined && (state >> stateBits.start) & 1n) {
          if (operstate === IF_OPER_UP || operstate === IF_OPER_UNKNOWN) flags |= IFF_RUNNING;
          if (stateBits.noCarrier !== undefined && !((state >> stateBits.noCarrier) & 1n))
            flags |= IFF_LOWER_UP;
          if (operstate === IF_OPER_DORMANT) flags |= IFF_DORMANT;
        }
        const ops = v.ptr('netdev_ops');
        const rec: NetDevice = {
          address: dev,
          netns: ns.inum,
          name: v.cstring('name', 16),
          ifindex: v.s32('ifindex'),
          flags: flagNames(flags),
          flagsRaw,
          gflags: hasGflags ? v.u16('gflags') : 0,
          promiscuity: v.u32('promiscuity'),
          allmulti: v.u32('allmulti'),
          mtu: v.u32('mtu'),
          hwType: v.u16('type'),
          operstate: operStateName(operstate),
          netdevOps: ops,
        };
        const mac = readMac(
          k,
          v.addressOf('dev_addr'),
          addrIsPointer ? v.ptr('dev_addr') : undefined,
          v.u8('addr_len'),
          dev,
        );
        if (mac !== undefined) rec.mac = mac;
        const sym = ops !== 0n ? k.symbolize(ops) : undefined;
        if (sym !== undefined) rec.netdevOpsSymbol = sym;
        return rec;
      });
      if (d) out.push(d);
    }
  }
  return out;
}

/** The hardware address: addr_len bytes at dev_addr (through the pointer on 5.17+). */
function readMac(
  k: NetKernel,
  fieldAddress: bigint,
  pointer: bigint | undefined,
  addrLen: number,
  dev: bigint,
): string | undefined {
  if (addrLen === 0) return '';
  if (addrLen > MAX_ADDR_LEN) {
    k.issues.add(WALKER, 'malformed', `net_device ${hex(dev)}: addr_len ${addrLen} > ${MAX_ADDR_LEN}`);
    return undefined;
  }
  const at = pointer ?? fieldAddress;
  const bytes = at === 0n ? undefined : k.space.tryRead(at, addrLen);
  if (!bytes) {
    k.issues.add(WALKER, 'unmapped', `net_device ${hex(dev)}: dev_addr ${hex(at)} is not readable`);
    return undefined;
  }
  return formatMac(bytes);
}
