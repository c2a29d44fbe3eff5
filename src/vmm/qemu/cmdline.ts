// Guest RAM size and machine type from a QEMU process's own command line, for attaching by PID alone
// (no QMP socket at hand): `-m 4G`, `-m size=4096`, or a memory backend's `size=`. QEMU's default unit
// for a bare -m number is MiB.

import { readFileSync } from 'node:fs';
import { VigilError, describeSysError } from '../../util/errors.js';

const UNITS: Record<string, bigint> = {
  '': 1n << 20n,
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
};

export function parseQemuSize(text: string, defaultUnit: 'M' | 'B' = 'M'): bigint | undefined {
  const m = /^(\d+)([kmgtKMGT]?)[bB]?$/.exec(text.trim());
  if (!m) return undefined;
  const unit = m[2] ? UNITS[m[2].toLowerCase()]! : defaultUnit === 'M' ? UNITS['']! : 1n;
  return BigInt(m[1]!) * unit;
}

export interface QemuCommandLine {
  ramSize: bigint;
  machine: 'q35' | 'pc';
}

export function readQemuCommandLine(pid: number, procRoot = '/proc'): QemuCommandLine {
  let argv: string[];
  try {
    argv = readFileSync(`${procRoot}/${pid}/cmdline`, 'latin1').split('\0');
  } catch (e) {
    throw new VigilError(
      'vmm',
      'not-found',
      `cannot read the command line of PID ${pid} (${describeSysError(e)})`,
    );
  }
  return parseQemuArgv(argv);
}

export function parseQemuArgv(argv: readonly string[]): QemuCommandLine {
  let ram: bigint | undefined;
  let machine: 'q35' | 'pc' = 'pc';
  for (let i = 0; i < argv.length - 1; i++) {
    const opt = argv[i]!.replace(/^--/, '-');
    const val = argv[i + 1]!;
    if (opt === '-m') {
      const first = val.split(',')[0]!;
      const sizeKv = /(?:^|,)size=([^,]+)/.exec(val)?.[1];
      ram = parseQemuSize(sizeKv ?? first) ?? ram;
    } else if (opt === '-machine' || opt === '-M') {
      const type = /(?:^|,)(?:type=)?([a-z0-9._-]+)/.exec(val)?.[1] ?? '';
      if (type.includes('q35')) machine = 'q35';
    } else if (opt === '-object' && /^memory-backend-/.test(val) && ram === undefined) {
      const size = /(?:^|,)size=([^,]+)/.exec(val)?.[1];
      if (size) ram = parseQemuSize(size, 'B');
    }
  }
  // QEMU's default RAM size when no -m is given is 128 MiB.
  return { ramSize: ram ?? 128n << 20n, machine };
}
