// The QEMU command line of a lab guest, as a pure function of its configuration.
import { readFileSync } from 'node:fs';
import { VigilError } from '../util/errors.js';

export type Accel = 'tcg' | 'kvm';

export interface QemuConfig {
  name: string;
  accel: Accel;
  cpu: string;
  memoryBytes: number;
  kernel: string;
  initrd: string;
  append: string;
  memoryFile: string;
  qmp: string;
  serial: string;
  /** qemu-guest-agent's chardev socket (the guest runs qemu-ga on a virtio-serial port). */
  qga: string;
  gdbPort: number;
  pidfile: string;
}

const MiB = 1 << 20;

/** "256M", "3G", "512MiB", "1073741824" → bytes; whole MiB between 64 MiB and 1 TiB. */
export function parseMemorySize(text: string): number {
  const m = /^(\d+)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new VigilError('lab', 'usage', `bad memory size "${text}": use e.g. 256M or 3G`);
  const unit = { '': 1, k: 1 << 10, m: MiB, g: 1 << 30, t: 2 ** 40 }[m[2].toLowerCase()] as number;
  const bytes = Number(m[1]) * unit;
  if (!Number.isSafeInteger(bytes) || bytes % MiB !== 0 || bytes < 64 * MiB || bytes > 2 ** 40) {
    throw new VigilError('lab', 'usage', `bad memory size "${text}": a whole number of MiB from 64M to 1T`);
  }
  return bytes;
}

/** The paging mode a guest kernel will use: 5-level when the vCPU offers LA57 (TCG `max` does). */
export function expectedPaging(accel: Accel, cpu: string, hostCpuinfo?: string): 4 | 5 {
  const flags = cpu.split(',').slice(1);
  if (flags.some((f) => /^(-la57|la57=off)$/.test(f))) return 4;
  if (flags.some((f) => /^(\+la57|la57=on)$/.test(f))) return 5;
  const model = cpu.split(',')[0];
  if (model === 'max' || model === 'host') {
    if (accel === 'tcg') return 5;
    const info = hostCpuinfo ?? readCpuinfo();
    return /^flags\s*:.*\bla57\b/m.test(info) ? 5 : 4;
  }
  return /^(Icelake|SapphireRapids|GraniteRapids)/.test(model) ? 5 : 4;
}

function readCpuinfo(): string {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}

export function qemuArgs(c: QemuConfig): string[] {
  const mem = `${c.memoryBytes / MiB}M`;
  return [
    '-name',
    `vigil-${c.name}`,
    '-nodefaults',
    '-accel',
    c.accel,
    '-cpu',
    c.cpu,
    '-smp',
    '1',
    '-m',
    mem,
    // Guest RAM in a shared file any process can read: the memory source vigil introspects.
    '-object',
    `memory-backend-file,id=mem,size=${mem},mem-path=${c.memoryFile},share=on`,
    '-machine',
    'q35,memory-backend=mem',
    '-kernel',
    c.kernel,
    '-initrd',
    c.initrd,
    '-append',
    c.append,
    '-qmp',
    `unix:${c.qmp},server=on,wait=off`,
    '-serial',
    `unix:${c.serial},server=on,wait=off`,
    '-monitor',
    'none',
    '-gdb',
    `tcp:127.0.0.1:${c.gdbPort}`,
    '-netdev',
    'user,id=n0',
    '-device',
    'virtio-net-pci,netdev=n0',
    // qemu-guest-agent: a virtio-serial port named as qemu-ga expects, backed by a socket on the host. The
    // port has no id, like in QEMU's own documentation: vigil finds it through QOM either way.
    '-device',
    'virtio-serial-pci',
    '-chardev',
    `socket,path=${c.qga},server=on,wait=off,id=qga0`,
    '-device',
    'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
    '-pidfile',
    c.pidfile,
    '-daemonize',
    '-display',
    'none',
  ];
}
