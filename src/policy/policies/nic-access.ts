// Livewire's NIC access enforcer, for promiscuous mode (T1040 sniffing) and MAC changes (T1557 spoofing).
// Event-driven on a live QEMU VM: NIC_RX_FILTER_CHANGED (the guest driver reprogrammed the NIC's receive
// filter) → query-rx-filter (which also re-arms the event: QEMU stays quiet until someone asks) → the
// kernel's own net_device confirms. Polling everywhere, dumps included: IFF_PROMISC or promiscuity > 0 on
// any device, and a MAC (dev_addr) that differs from the device's permanent address (perm_addr, the one
// the hypervisor gave it) or from the baseline learned on the clean guest.
// With QMP, QEMU's view is compared too: a NIC QEMU reports promiscuous while the guest kernel's device
// says otherwise is a guest lying to itself (a rootkit hiding the flag).
// Each condition raises one alert per occurrence: when the event path reported it, the poll stays quiet
// about it while it lasts, and the other way round. Bridge and Open vSwitch ports are promiscuous by design
// and skipped; option `allowPromisc` / `allowMacChange` name other devices to skip (bonding, VRRP, MAC
// randomisation).
import type { Kernel } from '../../os/linux/kernel.js';
import { hasMember, type NetKernel } from '../../os/linux/net/context.js';
import { listNetDevices, formatMac, type NetDevice } from '../../os/linux/net/index.js';
import { IFF_PROMISC } from '../../os/linux/net/names.js';
import { isVigilError, VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import type { Machine, VmEvent } from '../../vmm/types.js';
import type { BaselineAccess } from '../baseline.js';
import { definePolicy, stringListOption, type SweepContext } from '../policy.js';
import type { Finding } from '../types.js';
import { collectFresh, collecting, vmState, type SweepKernel } from './process-facts.js';

export type NicKernel = NetKernel & SweepKernel;

const ARPHRD_ETHER = 1;
/** include/linux/netdevice.h NET_ADDR_*: how dev_addr was assigned. */
const ADDR_ASSIGN = ['permanent', 'random', 'stolen', 'set'] as const;
const QMP_TIMEOUT_MS = 5000;

export interface NicFacts extends NetDevice {
  /** perm_addr as aa:bb:…, undefined when the driver set none (all zero) or it is unreadable. */
  permAddr?: string;
  addrAssign?: string;
  /** A bridge or Open vSwitch port: promiscuous by design. */
  switchPort: boolean;
}

/** QEMU's view of one NIC (query-rx-filter). */
export interface QemuNic {
  name: string;
  promiscuous: boolean;
  mainMac: string;
}

/** Every network device with the fields the checks need. */
export function collectNics(k: NicKernel): NicFacts[] {
  const t = k.types;
  const bit = (name: string): bigint => {
    try {
      return t.enumValue(name);
    } catch (e) {
      if (isVigilError(e)) return 0n;
      throw e;
    }
  };
  const portBits = bit('IFF_BRIDGE_PORT') | bit('IFF_OVS_DATAPATH');
  // Fields read beside the netdev walker's, each optional: a kernel without one loses that check only.
  const has = {
    priv: hasMember(t, 'net_device', 'priv_flags'),
    perm: hasMember(t, 'net_device', 'perm_addr') && hasMember(t, 'net_device', 'addr_len'),
    assign: hasMember(t, 'net_device', 'addr_assign_type'),
  };
  return listNetDevices(k).map((d) => {
    const f: NicFacts = { ...d, switchPort: false };
    try {
      const v = k.view('net_device', d.address);
      if (has.priv) f.switchPort = (v.u64('priv_flags') & portBits) !== 0n;
      if (has.perm) {
        const perm = v.bytes('perm_addr').subarray(0, Math.min(v.u8('addr_len'), 32));
        if (perm.some((b) => b !== 0)) f.permAddr = formatMac(perm);
      }
      if (has.assign) {
        const assign = v.u8('addr_assign_type');
        f.addrAssign = ADDR_ASSIGN[assign] ?? `type${assign}`;
      }
    } catch (e) {
      if (!isVigilError(e)) throw e;
      k.issues.add(
        'netdev',
        e.kind === 'unmapped' ? 'unmapped' : 'malformed',
        `net_device ${d.name}: ${e.message}`,
      );
    }
    return f;
  });
}

interface RxFilterSource {
  queryRxFilter(name?: string): Promise<unknown[]>;
}

/**
 * QEMU's NICs through the machine's QMP client, when the target is a QEMU VM reached over QMP (the
 * QemuMachine carries `qmp`); undefined otherwise. A failed query is a note, not a failed policy.
 */
export async function queryQemuNics(
  machine: Machine,
  note?: (kind: string, detail: string) => void,
): Promise<QemuNic[] | undefined> {
  const qmp = (machine as { qmp?: Partial<RxFilterSource> }).qmp;
  if (!qmp || typeof qmp.queryRxFilter !== 'function') return undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new VigilError('policy', 'timeout', `query-rx-filter took over ${QMP_TIMEOUT_MS} ms`)),
        QMP_TIMEOUT_MS,
      );
    });
    const raw = await Promise.race([qmp.queryRxFilter.call(qmp), timeout]);
    return raw.flatMap((r) => {
      const o = r as Record<string, unknown>;
      if (
        typeof o.name !== 'string' ||
        typeof o.promiscuous !== 'boolean' ||
        typeof o['main-mac'] !== 'string'
      ) {
        return [];
      }
      return [
        {
          name: sanitize(o.name, 64),
          promiscuous: o.promiscuous,
          mainMac: sanitize(o['main-mac'], 64).toLowerCase(),
        },
      ];
    });
  } catch (e) {
    note?.('malformed', `query-rx-filter: ${e instanceof Error ? e.message : String(e)}`);
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

export interface NicOptions {
  allowPromisc: readonly string[];
  allowMacChange: readonly string[];
}

/** Baseline: each device's MAC on the clean guest, by "netns/name". */
export type MacBaseline = Record<string, string>;

const devKey = (d: NetDevice) => `${d.netns}/${d.name}`;
const isPromisc = (d: NetDevice) => (d.flagsRaw & IFF_PROMISC) !== 0 || d.promiscuity > 0;

function deviceEvidence(d: NicFacts, qemu: QemuNic | undefined): Record<string, unknown> {
  return {
    device: d.name,
    ifindex: d.ifindex,
    netns: d.netns,
    mac: d.mac ?? null,
    permAddr: d.permAddr ?? null,
    addrAssign: d.addrAssign ?? null,
    flags: d.flags,
    promiscFlag: (d.flagsRaw & IFF_PROMISC) !== 0,
    promiscRequested: (d.gflags & IFF_PROMISC) !== 0,
    promiscuity: d.promiscuity,
    driverOps: d.netdevOpsSymbol ?? null,
    ...(qemu ? { qemu: { nic: qemu.name, promiscuous: qemu.promiscuous, mainMac: qemu.mainMac } } : {}),
  };
}

/** The QEMU NIC that is this device: the MAC QEMU filters on is the one the guest programmed. */
function qemuFor(d: NicFacts, qemu: readonly QemuNic[] | undefined): QemuNic | undefined {
  if (!qemu || !d.mac) return undefined;
  return (
    qemu.find((q) => q.mainMac === d.mac) ??
    (d.permAddr ? qemu.find((q) => q.mainMac === d.permAddr) : undefined)
  );
}

export function nicFindings(
  devices: readonly NicFacts[],
  qemu: readonly QemuNic[] | undefined,
  baseline: MacBaseline | undefined,
  o: NicOptions,
): Finding[] {
  const out: Finding[] = [];
  const matched = new Set<QemuNic>();
  for (const d of devices) {
    const q = qemuFor(d, qemu);
    if (q) matched.add(q);
    if (isPromisc(d) && !d.switchPort && !o.allowPromisc.includes(d.name)) {
      out.push({
        key: `promisc:${devKey(d)}`,
        severity: 'high',
        technique: 'T1040',
        summary:
          `${d.name} is in promiscuous mode (promiscuity ${d.promiscuity}` +
          `${(d.gflags & IFF_PROMISC) !== 0 ? ', asked for by user space' : ', by a packet socket or the kernel'})` +
          (q ? `; QEMU NIC ${q.name} ${q.promiscuous ? 'agrees' : 'does not show it yet'}` : ''),
        evidence: deviceEvidence(d, q),
      });
    }
    if (d.hwType !== ARPHRD_ETHER || !d.mac || o.allowMacChange.includes(d.name)) continue;
    const learned = baseline?.[devKey(d)];
    const fromPerm = d.permAddr !== undefined && d.mac !== d.permAddr;
    const fromBaseline = learned !== undefined && learned !== d.mac;
    if (fromPerm || fromBaseline) {
      const was = fromPerm ? d.permAddr! : learned!;
      out.push({
        key: `mac:${devKey(d)}:${d.mac}`,
        severity: 'medium',
        technique: 'T1557',
        summary: `${d.name} MAC changed from ${was} to ${d.mac}${fromPerm ? ' (permanent address)' : ' (baseline)'}`,
        evidence: { ...deviceEvidence(d, q), previousMac: was, baselineMac: learned ?? null },
      });
    }
  }
  for (const q of qemu ?? []) {
    if (!q.promiscuous || matched.has(q)) continue;
    // QEMU filters for this NIC promiscuously but no guest device with its MAC says so.
    out.push({
      key: `promisc-unseen:${q.name}`,
      severity: 'high',
      technique: 'T1040',
      summary: `QEMU NIC ${q.name} (${q.mainMac}) is promiscuous but no guest network device with that MAC is`,
      evidence: {
        qemu: { nic: q.name, promiscuous: true, mainMac: q.mainMac },
        devices: devices.map((d) => ({ device: d.name, mac: d.mac ?? null })),
      },
    });
  }
  for (const q of qemu ?? []) {
    if (!q.promiscuous || !matched.has(q)) continue;
    const d = devices.find((x) => qemuFor(x, [q]) === q)!;
    if (isPromisc(d) || d.switchPort || o.allowPromisc.includes(d.name)) continue;
    out.push({
      key: `promisc-hidden:${devKey(d)}`,
      severity: 'high',
      technique: 'T1040',
      summary: `QEMU NIC ${q.name} is promiscuous but the guest kernel's ${d.name} shows no IFF_PROMISC: the flag is hidden`,
      evidence: deviceEvidence(d, q),
    });
  }
  return out;
}

/** Which path reported each standing condition, so a condition raises once (event or poll, not both). */
interface Ownership {
  owner: Map<string, 'poll' | 'event'>;
}

export function claim(state: Ownership, findings: readonly Finding[], by: 'poll' | 'event'): Finding[] {
  const present = new Set(findings.map((f) => f.key));
  for (const k of [...state.owner.keys()]) if (!present.has(k)) state.owner.delete(k);
  return findings.filter((f) => {
    const o = state.owner.get(f.key);
    if (o !== undefined && o !== by) return false;
    if (o !== undefined && by === 'event') return false; // already raised by an event: the tracker saw it
    state.owner.set(f.key, by);
    return true;
  });
}

function nicOptions(ctx: SweepContext<unknown>): NicOptions {
  return {
    allowPromisc: stringListOption(ctx, 'allowPromisc', []),
    allowMacChange: stringListOption(ctx, 'allowMacChange', []),
  };
}

/** Query every NIC (which re-arms QEMU's event for each), then read the guest's devices. */
async function evaluate(ctx: SweepContext<Kernel>): Promise<Finding[]> {
  const k = ctx.requireKernel();
  const qemu = await queryQemuNics(ctx.machine, ctx.note);
  const devices = collectFresh(ctx, k, () => collectNics(k));
  const baseline = ctx.baseline.get<MacBaseline>('macs');
  let findings = nicFindings(devices, qemu, baseline, nicOptions(ctx));
  if (qemu && findings.some((f) => f.key.startsWith('promisc-'))) {
    // QEMU and the kernel were read a moment apart: a guest toggling the flag in between is not hiding it.
    k.epoch.bump();
    const again = await queryQemuNics(ctx.machine, ctx.note);
    const devices2 = collectFresh(ctx, k, () => collectNics(k));
    const second = new Set(nicFindings(devices2, again, baseline, nicOptions(ctx)).map((f) => f.key));
    findings = findings.filter((f) => !f.key.startsWith('promisc-') || second.has(f.key));
  }
  return findings;
}

export const nicAccessPolicy = definePolicy<Kernel>({
  id: 'nic-access',
  title: 'NIC promiscuous mode and MAC changes',
  description:
    'On NIC_RX_FILTER_CHANGED (and every sweep, dumps included): a network device in promiscuous mode, a MAC ' +
    'that differs from the permanent or learned one, or QEMU reporting a promiscuous NIC the guest kernel hides.',
  technique: 'T1040',
  severity: 'high',
  requires: ['kernel'],
  eventNames: ['NIC_RX_FILTER_CHANGED'],
  learn(ctx: SweepContext<Kernel>, baseline: BaselineAccess) {
    const k = ctx.requireKernel();
    const macs: MacBaseline = {};
    // Not noted: a device that cannot be read has no baseline MAC (and no check against one), which beats
    // a learn the engine discards and a poll that does not run.
    for (const d of collecting(k, () => collectNics(k)).value) {
      if (d.hwType === ARPHRD_ETHER && d.mac) macs[devKey(d)] = d.mac;
    }
    baseline.set('macs', macs);
  },
  async poll(ctx) {
    const state = vmState<Ownership>(ctx.machine, 'nic-access', () => ({ owner: new Map() }));
    return claim(state, await evaluate(ctx), 'poll');
  },
  async onEvent(_ev: VmEvent, ctx) {
    // The event means the guest just changed something: nothing cached from before may answer.
    ctx.requireKernel().epoch.bump();
    const state = vmState<Ownership>(ctx.machine, 'nic-access', () => ({ owner: new Map() }));
    return claim(state, await evaluate(ctx), 'event');
  },
});
