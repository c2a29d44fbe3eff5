// Opening what the user pointed vigil at: a live VM (--qmp), a RAM file (--mem) or a memory dump (--dump).
// Every command that looks at a guest takes the same three options through addTargetOptions().

import type { Command } from 'commander';
import { statSync } from 'node:fs';
import {
  checkQemu,
  defaultLayout,
  openDump,
  openMemoryFile,
  openProcessMemory,
  type MemoryFile,
} from '../vmm/memory/index.js';
import { readQemuCommandLine } from '../vmm/qemu/cmdline.js';
import { connectQemu } from '../vmm/qemu/machine.js';
import { QgaClient } from '../vmm/qga/client.js';
import type { Machine, PhysicalMemory, Vcpu } from '../vmm/types.js';
import { VigilError, describeSysError } from '../util/errors.js';
import { Kernel } from '../os/linux/kernel.js';
import { bootstrapLive } from '../os/linux/live-kernel.js';
import { ProgressBar } from './progress.js';

export interface TargetOptions {
  qmp?: string;
  mem?: string;
  dump?: string;
  pid?: string;
  /** GDB stub of the --qmp VM ("host:port", a unix socket, or "auto"): `machine.debug`. */
  gdb?: string;
  /** qemu-guest-agent's socket; false (--no-qga) leaves the agent out; default: found through QMP. */
  qga?: string | false;
}

export interface Target {
  kind: 'live' | 'mem' | 'dump';
  /** What the user gave, for messages. */
  spec: string;
  machine: Machine;
  /**
   * Bootstrapped once, on first use. On a live VM it is the kernel the vCPUs run: a guest that rebooted
   * keeps its old kernel image in RAM, and that stale image is skipped.
   */
  kernel(): Promise<Kernel>;
  close(): Promise<void>;
}

export function addTargetOptions(cmd: Command): Command {
  return cmd
    .option('--qmp <socket>', 'a live VM: its QMP socket (unix path or host:port)')
    .option('--mem <file>', "a live VM's shared-memory RAM file (memory-backend-file,share=on)")
    .option('--dump <file>', 'a memory dump: raw, QEMU ELF core (dump-guest-memory) or LiME')
    .option('--pid <pid>', 'QEMU process id, for VMs with anonymous RAM read through /proc/PID/mem')
    .option('--gdb <addr>', "with --qmp: the VM's GDB stub (host:port, unix socket, or auto) for watchpoints")
    .option(
      '--qga <socket>',
      "the VM's qemu-guest-agent socket (vigil check with --qmp finds it through QMP, if the VM has one)",
    )
    .option('--no-qga', 'never ask the guest agent');
}

/** What a command will use of a live VM beyond memory and QMP. */
export interface TargetUse {
  /**
   * The command asks the guest agent (vigil check: lie-detector-guest): find it through QMP unless --no-qga.
   * Other commands never look for it unless --qga names one: the search costs QOM round trips and a
   * guest-sync (seconds when an agent hangs) and takes the agent socket's one client slot meanwhile.
   */
  agent?: boolean;
}

export async function openTarget(o: TargetOptions, use: TargetUse = {}): Promise<Target> {
  const given = [o.qmp, o.mem, o.dump].filter((x) => x !== undefined).length;
  if (given > 1 || (given === 0 && o.pid === undefined)) {
    throw new VigilError(
      'cli',
      'usage',
      'give one target: --qmp SOCKET, --mem FILE, --dump FILE, or --pid QEMU_PID',
    );
  }
  const pid = o.pid !== undefined ? parsePid(o.pid) : undefined;
  // A PID given by the user must be a QEMU process, whatever else is given.
  if (pid !== undefined) checkQemu(pid);
  if (o.gdb !== undefined && o.qmp === undefined) {
    throw new VigilError('cli', 'usage', '--gdb needs --qmp: the stub belongs to a live VM');
  }
  if (typeof o.qga === 'string' && o.dump !== undefined) {
    throw new VigilError('cli', 'usage', '--qga belongs to a live VM, not to a dump');
  }
  if (o.qmp !== undefined) {
    const machine = await connectQemu(o.qmp, {
      ...(pid !== undefined ? { pid } : {}),
      ...(o.gdb !== undefined ? { gdb: o.gdb } : {}),
      agent: o.qga ?? (use.agent ? 'auto' : false),
    });
    if (typeof o.qga === 'string' && o.qga !== 'auto' && !machine.agent) {
      await machine.close();
      throw new VigilError('cli', 'not-found', `--qga ${o.qga}: ${machine.agentProblem ?? 'no answer'}`);
    }
    if (o.gdb !== undefined && !machine.gdb) {
      await machine.close();
      throw new VigilError('cli', 'not-found', `--gdb ${o.gdb}: ${machine.gdbProblem ?? 'not attached'}`);
    }
    return withKernel('live', o.qmp, machine, true);
  }
  if (pid !== undefined && given === 0) {
    return withKernel('live', `pid ${pid}`, await withAgent(attachByPid(pid), o.qga), true);
  }
  const path = (o.mem ?? o.dump)!;
  if (o.mem !== undefined) checkRamFile(path);
  const file: MemoryFile =
    o.mem !== undefined ? openMemoryFile(path, undefined, { live: true }) : openDump(path);
  const vcpus: Vcpu[] = file.cpus.map((c) => ({ index: c.index, registers: async () => c.registers }));
  const machine: Machine = {
    name: path.split('/').at(-1) ?? path,
    memory: file,
    vcpus,
    async close() {
      file.close();
    },
  };
  const live = o.mem !== undefined;
  return withKernel(live ? 'mem' : 'dump', path, live ? await withAgent(machine, o.qga) : machine, live);
}

/** A live VM reached without QMP, with the agent socket the user named (nothing to find it by here). */
async function withAgent(machine: Machine, qga: string | false | undefined): Promise<Machine> {
  if (typeof qga !== 'string' || qga === 'auto') return machine;
  let agent: QgaClient;
  try {
    agent = await QgaClient.connect(qga);
  } catch (e) {
    await machine.close();
    const why = e instanceof VigilError ? e.message : describeSysError(e);
    throw new VigilError('cli', 'not-found', `--qga ${qga}: ${why}`, { cause: e });
  }
  return {
    ...machine,
    agent,
    async close() {
      await agent.close();
      await machine.close();
    },
  };
}

/** A guest RAM file is whole pages and at least 1 MiB; anything else was given by mistake. */
function checkRamFile(path: string): void {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new VigilError('cli', 'not-found', `cannot open RAM file ${path} (${describeSysError(e)})`);
  }
  if (size < 1 << 20 || size % 4096 !== 0) {
    throw new VigilError(
      'cli',
      'usage',
      `${path} is not a guest RAM file (${size} bytes; guest RAM is at least 1 MiB of whole 4 KiB pages)`,
    );
  }
}

/** A QEMU process alone: RAM through /proc/PID/mem, size and layout from its command line. */
function attachByPid(pid: number): Machine {
  const { ramSize, machine } = readQemuCommandLine(pid);
  const memory = openProcessMemory({
    pid,
    blocks: [{ name: 'ram', size: ramSize }],
    segments: defaultLayout(ramSize, machine),
  });
  return {
    name: `qemu-${pid}`,
    memory,
    vcpus: [],
    async close() {
      memory.close();
    },
  };
}

function parsePid(s: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new VigilError('cli', 'usage', `--pid needs a process id, got "${s}"`);
  return n;
}

function withKernel(kind: Target['kind'], spec: string, machine: Machine, live: boolean): Target {
  let kernel: Promise<Kernel> | undefined;
  const bootstrap = async (): Promise<Kernel> => {
    const bar = new ProgressBar();
    const boot = (memory: PhysicalMemory) =>
      Kernel.bootstrap(memory, { live, onProgress: (step, f) => bar.update(f, step) });
    try {
      if (!live || machine.vcpus.length === 0) return boot(machine.memory);
      const found = await bootstrapLive(machine.memory, machine.vcpus, { bootstrap: boot });
      if (!found.ok) throw new VigilError('os', 'not-found', `no running kernel in this VM: ${found.reason}`);
      return found.kernel;
    } finally {
      bar.done();
    }
  };
  return {
    kind,
    spec,
    machine,
    kernel() {
      kernel ??= bootstrap();
      return kernel;
    },
    close: () => machine.close(),
  };
}

/** Run `fn` with an opened target and always close it. */
export async function withTarget<T>(
  o: TargetOptions,
  fn: (t: Target) => Promise<T> | T,
  use: TargetUse = {},
): Promise<T> {
  const target = await openTarget(o, use);
  try {
    return await fn(target);
  } finally {
    await target.close();
  }
}
