// Livewire's raw socket detector (T1040 network sniffing): every AF_PACKET socket and every raw IP socket
// (SOCK_RAW) in every network namespace, read from the kernel's own socket tables, with the processes that
// hold them open (found by their struct file in each process's fd array, the PID table included when a
// socket has no visible owner). Programs that legitimately need such sockets are allowed by name or path.
//
// Allow list (option `allow`, default DEFAULT_ALLOW): an entry starting with "/" matches the executable's
// path exactly; any other entry is a program name, matching a process whose comm is that name AND whose
// executable is that name too (or busybox running it as an applet) — a sniffer renaming itself "dhclient"
// with prctl still runs /tmp/x. An executable that is deleted or a memfd never matches. A socket is allowed
// only if every process holding it is. Raw ICMP sockets (protocol 1 or 58: what ping uses when unprivileged
// ICMP sockets are off) are allowed for `allowIcmp` (default DEFAULT_ALLOW_ICMP) under the same rules.
import type { Kernel } from '../../os/linux/kernel.js';
import { VigilError } from '../../util/errors.js';
import { listNetNamespaces, namespaceIndex } from '../../os/linux/net/netns.js';
import { walkRaw } from '../../os/linux/net/inet.js';
import { walkPacket } from '../../os/linux/net/local.js';
import { SockLayout, SocketCollector, type Socket } from '../../os/linux/net/sock.js';
import type { NetKernel } from '../../os/linux/net/context.js';
import { attempt } from '../../os/linux/net/context.js';
import { offset, readPtr } from '../../os/linux/fs/reader.js';
import { listPidTasks, readProcessDetails, type Task } from '../../os/linux/tasks/index.js';
import { definePolicy, stringListOption, type SweepContext } from '../policy.js';
import type { Finding, Severity } from '../types.js';
import {
  baseName,
  collectFresh,
  exeFacts,
  fdSlots,
  hex,
  isLive,
  leadersOf,
  sweepTasks,
  type ExeFacts,
  type ProcessKernel,
  type SweepKernel,
} from './process-facts.js';

export type RawKernel = NetKernel & ProcessKernel & SweepKernel;

/** DHCP clients and network managers open packet sockets to talk before they have an address. */
export const DEFAULT_ALLOW: readonly string[] = [
  'udhcpc',
  'udhcpc6',
  'dhclient',
  'dhcpcd',
  'dhcpd',
  'dhcrelay',
  'systemd-networkd',
  'NetworkManager',
  'nm-dhcp-helper',
  'wpa_supplicant',
  'hostapd',
  'lldpd',
  'keepalived',
];
export const DEFAULT_ALLOW_ICMP: readonly string[] = [
  'ping',
  'ping6',
  'traceroute',
  'traceroute6',
  'mtr-packet',
  'fping',
];

const ETH_P_ALL = 0x0003;
const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;
const IPPROTO_RAW = 255;

export interface SocketHolder {
  pid: number;
  comm: string;
  fd: number;
  uid: number | null;
  exe: ExeFacts | null;
  /**
   * The busybox applet a process runs, from argv[0], when its comm says only "exe": busybox's shell runs
   * applets by exec'ing /proc/self/exe, so `ping` from a busybox shell has comm "exe".
   */
  applet?: string;
  /** Found only through the PID table: the process is not on the task list. */
  hiddenFromTaskList?: boolean;
}

export interface RawSocketFacts {
  socket: Socket;
  holders: SocketHolder[];
}

/** Packet and raw sockets (all namespaces) and who holds each. */
export function collectRawSockets(k: RawKernel, sweep: number): RawSocketFacts[] {
  const nsList = listNetNamespaces(k);
  const layout = new SockLayout(k);
  const out = new SocketCollector(k, 1 << 16);
  attempt(k, 'raw', 'raw tables', () => walkRaw({ k, layout, namespaces: namespaceIndex(nsList), out }));
  attempt(k, 'packet', 'packet lists', () => walkPacket({ k, layout, out }, nsList));
  if (out.sockets.length === 0) return [];

  // struct sock → struct socket → struct file: the pointer each holder has in its fd array.
  const byFile = new Map<bigint, RawSocketFacts>();
  const facts: RawSocketFacts[] = [];
  const skSocket = BigInt(offset(k.types, 'sock', 'sk_socket'));
  const socketFile = BigInt(offset(k.types, 'socket', 'file'));
  for (const s of out.sockets) {
    const f: RawSocketFacts = { socket: s, holders: [] };
    facts.push(f);
    const sock = readPtr(k, s.address + skSocket);
    // A sock without its struct socket is orphaned: closed by its last holder and being torn down. No
    // process can use it any more, so it is nobody's sniffer.
    if (!sock) {
      facts.pop();
      continue;
    }
    const file = readPtr(k, sock + socketFile);
    if (file) byFile.set(file, f);
  }
  const scanned = new Set<number>();
  const scan = (t: Task, hidden: boolean) => {
    if (scanned.has(t.tgid) || t.kthread) return;
    scanned.add(t.tgid);
    const slots = fdSlots(k, t.address);
    if (!slots) return;
    slots.forEach((file, fd) => {
      const f = file === 0n ? undefined : byFile.get(file);
      if (!f) return;
      const exe = exeFacts(k, t);
      const applet = t.comm === 'exe' && exe?.path.endsWith('/busybox') ? appletOf(k, t) : undefined;
      f.holders.push({
        pid: t.tgid,
        comm: t.comm,
        fd,
        uid: t.cred?.uid ?? null,
        exe,
        ...(applet ? { applet } : {}),
        ...(hidden ? { hiddenFromTaskList: true } : {}),
      });
    });
  };
  for (const t of leadersOf(sweepTasks(k, sweep))) scan(t, false);
  if (facts.some((f) => f.holders.length === 0)) {
    // A socket nobody on the task list holds: its owner may be hiding there. The PID table tells.
    for (const { task } of listPidTasks(k).tasks) if (task.pid === task.tgid) scan(task, true);
  }
  for (const f of facts) f.holders.sort((a, b) => a.pid - b.pid || a.fd - b.fd);
  return facts;
}

function appletOf(k: RawKernel, t: Task): string | undefined {
  try {
    const argv0 = readProcessDetails(k as unknown as Kernel, t).cmdline.strings[0];
    return argv0 ? baseName(argv0) : undefined;
  } catch {
    return undefined;
  }
}

export interface RawSocketOptions {
  allow: readonly string[];
  allowIcmp: readonly string[];
}

/** Does an allow-list entry cover this process? (See the header for the rules.) */
export function allowedHolder(h: SocketHolder, allow: readonly string[]): boolean {
  if (!h.exe || h.exe.deleted || h.exe.memfd !== undefined || h.hiddenFromTaskList) return false;
  const exeName = baseName(h.exe.path);
  return allow.some((a) =>
    a.startsWith('/')
      ? h.exe!.path === a
      : (h.applet ?? h.comm) === a && (exeName === a || exeName === 'busybox'),
  );
}

const isIcmp = (s: Socket) =>
  s.netid !== 'packet' && (s.protocol === IPPROTO_ICMP || s.protocol === IPPROTO_ICMPV6);

function describeSocket(s: Socket): { what: string; severity: Severity } {
  if (s.netid === 'packet') {
    const proto =
      s.protocol === ETH_P_ALL ? 'ETH_P_ALL' : `protocol 0x${s.protocol.toString(16).padStart(4, '0')}`;
    const where = s.ifindex ? `interface ${s.ifindex}` : 'all interfaces';
    return { what: `a ${s.type} packet socket (${proto}, ${where})`, severity: 'high' };
  }
  const v = s.netid === 'raw6' ? 'IPv6' : 'IPv4';
  if (isIcmp(s)) return { what: `a raw ${v} ICMP socket`, severity: 'medium' };
  if (s.protocol === IPPROTO_RAW)
    return { what: `a raw ${v} send-only socket (IPPROTO_RAW)`, severity: 'medium' };
  return { what: `a raw ${v} socket for protocol ${s.protocol}`, severity: 'high' };
}

export function rawSocketFindings(facts: readonly RawSocketFacts[], o: RawSocketOptions): Finding[] {
  const out: Finding[] = [];
  for (const { socket: s, holders } of facts) {
    const allow = isIcmp(s) ? [...o.allow, ...o.allowIcmp] : o.allow;
    if (holders.length > 0 && holders.every((h) => allowedHolder(h, allow))) continue;
    const { what, severity } = describeSocket(s);
    const first = holders[0];
    const who = first
      ? `${first.comm} (pid ${first.pid}${first.exe ? `, ${first.exe.path}` : ''})` +
        (holders.length > 1 ? ` and ${holders.length - 1} more` : '')
      : 'no process (orphaned or held by a hidden one)';
    out.push({
      key: `${s.netid}:ino=${s.inode || hex(s.address)}`,
      severity: holders.length === 0 || holders.some((h) => h.hiddenFromTaskList) ? 'critical' : severity,
      summary: `${who} holds ${what}`,
      evidence: {
        netid: s.netid,
        family: s.family,
        type: s.type,
        protocol: s.netid === 'packet' ? `0x${s.protocol.toString(16).padStart(4, '0')}` : s.protocol,
        ...(s.ifindex !== undefined ? { ifindex: s.ifindex } : {}),
        inode: s.inode,
        sock: hex(s.address),
        ...(s.netns !== undefined ? { netns: s.netns } : {}),
        uid: s.uid ?? null,
        ...(first ? { pid: first.pid, comm: first.comm, exe: first.exe?.path ?? null } : {}),
        holders: holders.map((h) => ({
          pid: h.pid,
          comm: h.comm,
          fd: h.fd,
          uid: h.uid,
          exe: h.exe?.path ?? null,
          ...(h.hiddenFromTaskList ? { hiddenFromTaskList: true } : {}),
        })),
      },
    });
  }
  return out;
}

export function rawSocketOptions(ctx: SweepContext<unknown>): RawSocketOptions {
  return {
    allow: stringListOption(ctx, 'allow', DEFAULT_ALLOW),
    allowIcmp: stringListOption(ctx, 'allowIcmp', DEFAULT_ALLOW_ICMP),
  };
}

export const rawSocketPolicy = definePolicy<Kernel>({
  id: 'raw-socket',
  title: 'Raw and packet sockets (sniffers)',
  description:
    'Lists AF_PACKET and raw IP sockets from the kernel’s socket tables with the processes holding them; ' +
    'any not held by an allowed program (DHCP clients, ping…: option `allow`, `allowIcmp`) is a sniffer suspect.',
  technique: 'T1040',
  severity: 'high',
  requires: ['kernel'],
  parseOptions(raw) {
    for (const name of ['allow', 'allowIcmp']) {
      const v = raw[name];
      if (v !== undefined && !(Array.isArray(v) && v.every((x) => typeof x === 'string'))) {
        throw new VigilError('policy', 'usage', `option "${name}" must be a list of strings`);
      }
    }
    return { ...raw };
  },
  poll(ctx) {
    const k = ctx.requireKernel();
    let facts = collectFresh(ctx, k, () => collectRawSockets(k, ctx.sweep));
    if (isLive(k) && facts.some((f) => f.holders.length === 0)) {
      // A socket whose holder just closed it is briefly on the tables with no fd pointing at it. Read
      // again from fresh memory: only a socket that still has no holder is reported as held by nobody.
      k.epoch.bump();
      const again = collectRawSockets(k, ctx.sweep);
      const stillOrphan = new Set(
        again.filter((f) => f.holders.length === 0).map((f) => `${f.socket.address}:${f.socket.inode}`),
      );
      facts = facts.filter(
        (f) => f.holders.length > 0 || stillOrphan.has(`${f.socket.address}:${f.socket.inode}`),
      );
    }
    const opts = rawSocketOptions(ctx);
    const first = rawSocketFindings(facts, opts);
    if (!isLive(k) || first.length === 0) return first;
    // The sweep's task list can predate an exec the guest was in the middle of: a busybox shell's child
    // still carries the shell's name while its fd table, read later, already holds ping's socket. A suspect
    // is confirmed on fresh memory, and reported with what that second reading says.
    k.epoch.bump();
    const suspects = new Set(first.map((f) => f.key));
    return rawSocketFindings(collectRawSockets(k, ctx.sweep), opts).filter((f) => suspects.has(f.key));
  },
});
