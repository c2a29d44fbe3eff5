// A live QEMU VM as a Machine: QMP for control, events and vCPU registers; guest RAM from the shared
// memory file when the VM has one (memory-backend-file,share=on), else from /proc/<qemu-pid>/mem; the
// guest-physical map from `info mtree -f` so reads follow the real layout (holes, RAM above 4 GiB).

import { VigilError } from '../../util/errors.js';
import { openProcessMemory, openRamFile, parseMtree, type RamSegment } from '../memory/index.js';
import { QmpClient } from '../qmp/client.js';
import { toVmEvent } from '../qmp/types.js';
import type {
  GuestAgent,
  Machine,
  MachineControl,
  PhysicalMemory,
  Vcpu,
  VmEvent,
  X86Registers,
} from '../types.js';
import { attachAgent, type AgentAttachment } from './agent.js';
import { QemuCpuState } from './cpu-state.js';
import { pidOfUnixSocketServer } from './find-pid.js';
import { attachGdbStub, type QemuGdbStub } from './gdb-stub.js';

interface MemdevInfo {
  id?: string;
  size: number;
  share?: boolean;
}

export interface QemuMachineOptions {
  /** A name for alerts and logs; default derived from the socket path. */
  name?: string;
  /** QEMU's PID, when RAM is anonymous and the socket's owner cannot be found. */
  pid?: number;
  /** Reconnect QMP automatically after a lost connection. */
  reconnect?: boolean;
  /**
   * qemu-guest-agent: 'auto' (default) finds its socket through QMP, a path (or host:port) names it, false
   * leaves it out. An agent that does not answer leaves `agent` undefined and `agentProblem` set.
   */
  agent?: string | false;
  /** How long the agent gets to answer its first guest-sync (default 3000 ms). */
  agentTimeoutMs?: number;
  /**
   * QEMU's GDB stub for `debug` (watchpoints): "host:port" or a unix socket path, or 'auto' for the one
   * `query-chardev` names. Default: none. A stub that cannot be attached leaves `gdbProblem` set.
   */
  gdb?: string;
}

export interface QemuMachine extends Machine {
  readonly qmp: QmpClient;
  readonly control: MachineControl;
  readonly events: AsyncIterable<VmEvent>;
  /** How guest RAM is reached: "shm" or "proc-mem". */
  readonly memoryAccess: 'shm' | 'proc-mem';
  readonly layout: readonly RamSegment[];
  /** qemu-guest-agent, when the VM has one that answered at connection time. */
  readonly agent?: GuestAgent;
  /** The agent's socket, when the VM has one or one was named. */
  readonly agentSocket?: string;
  /** Why the VM's agent is not reachable (not running, held by another client…), for policies to report. */
  readonly agentProblem?: string;
  /** The GDB stub session (also `debug`), when one was asked for and attached. */
  readonly gdb?: QemuGdbStub;
  /** Why the GDB stub asked for is not attached (none, another debugger on it, no answer). */
  readonly gdbProblem?: string;
}

export async function connectQemu(
  qmpAddress: string,
  options: QemuMachineOptions = {},
): Promise<QemuMachine> {
  const qmp = await QmpClient.connect(qmpAddress, { autoReconnect: options.reconnect ?? false });
  try {
    const { memory, access, layout } = await openGuestRam(qmp, qmpAddress, options.pid);
    const name = options.name ?? defaultName(qmpAddress);
    const cpus = await qmp.queryCpusFast().catch(() => []);
    // Never throws: an agent that cannot be used is reported in agentProblem.
    const agent = await attachAgent(qmp, options.agent ?? 'auto', { timeoutMs: options.agentTimeoutMs });
    const machine = buildMachine(name, qmp, memory, access, layout, Math.max(1, cpus.length), agent);
    // Last: attaching the GDB stub pauses the VM for a moment. Never throws: see gdbProblem.
    return options.gdb ? withGdbStub(machine, await attachGdbStub(qmp, options.gdb)) : machine;
  } catch (e) {
    await qmp.close();
    throw e;
  }
}

function defaultName(address: string): string {
  const base = address.split('/').filter(Boolean);
  // ~/.cache/vigil/run/NAME/qmp.sock and /var/run/qemu-server/ID.qmp both name the VM by their folder or stem.
  const last = base.at(-1) ?? address;
  if (/^qmp(\.sock)?$/.test(last) && base.length > 1) return base.at(-2)!;
  return last.replace(/\.(qmp|sock|socket)$/, '');
}

async function openGuestRam(
  qmp: QmpClient,
  qmpAddress: string,
  pid: number | undefined,
): Promise<{ memory: PhysicalMemory; access: 'shm' | 'proc-mem'; layout: RamSegment[] }> {
  const mtree = await qmp.humanMonitor('info mtree -f');
  const memdevs = await qmp.execute<MemdevInfo[]>('query-memdev').catch(() => [] as MemdevInfo[]);

  // A shared-memory backend: read its file directly (fastest, no ptrace rights needed beyond the file).
  for (const dev of memdevs) {
    if (!dev.id || !dev.share) continue;
    const path = await qmp
      .execute<string>('qom-get', { path: `/objects/${dev.id}`, property: 'mem-path' })
      .catch(() => undefined);
    if (!path) continue;
    const layout = parseMtree(mtree, dev.id);
    if (layout.length === 0) continue;
    return { memory: openRamFile(path, layout), access: 'shm', layout };
  }

  // Anonymous RAM (libvirt, Proxmox defaults): /proc/<qemu-pid>/mem.
  const qemuPid = pid ?? (qmpAddress.includes('/') ? pidOfUnixSocketServer(qmpAddress) : undefined);
  if (qemuPid === undefined) {
    throw new VigilError(
      'vmm',
      'not-found',
      'guest RAM is not in a shared file and the QEMU process serving this QMP socket was not found; ' +
        'pass --pid, or give the VM memory-backend-file,share=on',
    );
  }
  const layout = parseMtree(mtree);
  const blocks = memdevs.length
    ? memdevs.map((d, i) => ({ name: d.id ?? `memdev${i}`, size: BigInt(d.size) }))
    : [{ name: layout[0]?.regionName ?? 'pc.ram', size: ramSize(layout) }];
  const memory = openProcessMemory({ pid: qemuPid, blocks, segments: layout });
  return { memory, access: 'proc-mem', layout };
}

function ramSize(layout: readonly RamSegment[]): bigint {
  let end = 0n;
  for (const s of layout) if (s.backendOffset + s.size > end) end = s.backendOffset + s.size;
  return end;
}

function buildMachine(
  name: string,
  qmp: QmpClient,
  memory: PhysicalMemory,
  memoryAccess: 'shm' | 'proc-mem',
  layout: readonly RamSegment[],
  cpuCount: number,
  agent: AgentAttachment,
): QemuMachine {
  let registerCache: { at: number; regs: Map<number, X86Registers> } | undefined;
  const allRegisters = async (): Promise<Map<number, X86Registers>> => {
    // One HMP call returns every vCPU; share it between vCPUs asked for in the same moment.
    if (registerCache && Date.now() - registerCache.at < 50) return registerCache.regs;
    registerCache = { at: Date.now(), regs: await qmp.infoRegisters() };
    return registerCache.regs;
  };
  const vcpus: Vcpu[] = [];
  for (let index = 0; index < cpuCount; index++) {
    vcpus.push({
      index,
      async registers() {
        const regs = (await allRegisters()).get(index);
        if (!regs) throw new VigilError('vmm', 'not-found', `QEMU reported no registers for vCPU ${index}`);
        return regs;
      },
    });
  }
  const control: MachineControl = {
    pause: () => qmp.stop(),
    resume: () => qmp.cont(),
    dump: (path) => qmp.dumpGuestMemory(path),
    isPaused: async () => !(await qmp.queryStatus()).running,
  };
  const events: AsyncIterable<VmEvent> = {
    [Symbol.asyncIterator]: async function* () {
      for await (const e of qmp.events()) yield toVmEvent(e);
    },
  };
  return {
    name,
    memory,
    vcpus,
    events,
    control,
    qmp,
    memoryAccess,
    layout,
    ...(agent.agent ? { agent: agent.agent } : {}),
    ...(agent.socket ? { agentSocket: agent.socket } : {}),
    ...(agent.problem ? { agentProblem: agent.problem } : {}),
    // MSRs come from a device-state snapshot: small only when guest RAM is a shared backend left out of it.
    ...(memoryAccess === 'shm' ? { cpuState: new QemuCpuState(qmp) } : {}),
    async close() {
      memory.close();
      await agent.agent?.close();
      await qmp.close();
    },
  };
}

/** The machine with the stub as `debug`; closing it detaches first (QEMU resumes the VM on detach). */
function withGdbStub(m: QemuMachine, g: { stub?: QemuGdbStub; problem?: string }): QemuMachine {
  if (!g.stub) return g.problem ? { ...m, gdbProblem: g.problem } : m;
  const stub = g.stub;
  const close = m.close.bind(m);
  return {
    ...m,
    debug: stub,
    gdb: stub,
    async close() {
      await stub.close().catch(() => undefined);
      await close();
    },
  };
}
