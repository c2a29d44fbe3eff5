// qemu-guest-agent for the lab guest. Debian's package is dynamically linked, the guest is a busybox
// initramfs: the package is downloaded once (`apt-get download`, `dpkg-deb -x`, like the kernel) and
// /usr/sbin/qemu-ga goes into the initramfs together with the shared libraries the host's loader resolves
// for it (`ldd`: glib and friends, installed with qemu-system-x86) and the dynamic loader itself, each at
// its host path, where the guest's loader looks for them.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { VigilError } from '../util/errors.js';
import { elfLinkage } from './elf.js';
import { cachedAptAnswer, fetchDeb, rememberAptAnswer, type Progress } from './kernel.js';
import { cacheRoot } from './paths.js';
import { requireProgram, run } from './proc.js';

export const AGENT_PACKAGE = 'qemu-guest-agent';
/** Where the agent sits in the guest (and in the package). */
export const AGENT_PATH = 'usr/sbin/qemu-ga';
/** The virtio-serial port name QEMU and qemu-ga agree on. */
export const AGENT_PORT_NAME = 'org.qemu.guest_agent.0';

export interface AgentFiles {
  /** Debian version of the package, e.g. 1:7.2+dfsg-7+deb12u18+b3. */
  version: string;
  /** Destination in the initramfs (no leading slash) → file on the host. */
  files: [string, string][];
}

/** The candidate version from `apt-cache policy PKG` output, or undefined when apt has none. */
export function parseAptPolicy(text: string): string | undefined {
  const m = /^\s*Candidate:\s*(\S+)\s*$/m.exec(text);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}

/**
 * Shared libraries from `ldd` output: resolved absolute paths, and the names it could not find. The vDSO
 * (no file) and the loader line (no "=>") are left out: the loader comes from the ELF's own PT_INTERP.
 */
export function parseLdd(text: string): { libraries: string[]; missing: string[] } {
  const libraries: string[] = [];
  const missing: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\S+)\s+=>\s+(.*?)\s*(?:\(0x[0-9a-f]+\))?\s*$/.exec(line);
    if (!m) continue;
    if (m[2] === 'not found') missing.push(m[1]);
    else if (m[2].startsWith('/')) libraries.push(m[2]);
  }
  return { libraries, missing };
}

async function resolveAgentVersion(progress: Progress): Promise<string> {
  const cached = cachedAptAnswer(AGENT_PACKAGE);
  if (cached) return cached;
  requireProgram('apt-cache', 'apt');
  const policy = async () =>
    parseAptPolicy((await run('apt-cache', ['policy', AGENT_PACKAGE], { timeoutMs: 60_000 })).stdout);
  let version = await policy().catch(() => undefined);
  if (!version) {
    progress('apt-get update…');
    await run('apt-get', ['update'], { timeoutMs: 300_000 });
    version = await policy();
  }
  if (!version) throw new VigilError('lab', 'not-found', `apt knows no ${AGENT_PACKAGE} package`);
  rememberAptAnswer(AGENT_PACKAGE, version);
  return version;
}

/** qemu-ga, its libraries and its loader for the initramfs, downloading the package on first use. */
export async function fetchGuestAgent(progress: Progress = () => {}): Promise<AgentFiles> {
  const version = await resolveAgentVersion(progress);
  const root = join(cacheRoot(), 'lab', AGENT_PACKAGE, version.replace(/[^A-Za-z0-9.+~-]/g, '_'), 'root');
  const binary = join(root, AGENT_PATH);
  if (!existsSync(binary)) {
    await fetchDeb(`${AGENT_PACKAGE}=${version}`, root, progress, (unpacked) => {
      if (!existsSync(join(unpacked, AGENT_PATH))) {
        throw new VigilError('lab', 'malformed', `${AGENT_PACKAGE} ${version} holds no /${AGENT_PATH}`);
      }
    });
  }
  const interpreter = elfLinkage(binary).interpreter;
  if (!interpreter) throw new VigilError('lab', 'malformed', `${binary} has no program interpreter`);
  requireProgram('ldd', 'libc-bin');
  const { libraries, missing } = parseLdd((await run('ldd', [binary], { timeoutMs: 30_000 })).stdout);
  if (missing.length > 0) {
    throw new VigilError(
      'lab',
      'not-found',
      `qemu-ga needs ${missing.join(', ')}, missing on this host: install "${AGENT_PACKAGE}"'s ` +
        `library packages (scripts/setup.sh lists them)`,
    );
  }
  // The host's copies: the loader follows symbolic links, the initramfs gets the files they point to.
  const files: [string, string][] = [[AGENT_PATH, binary]];
  for (const p of new Set([interpreter, ...libraries])) {
    if (!/^\/[A-Za-z0-9_.+-]+(\/[A-Za-z0-9_.+-]+)*$/.test(p) || p.split('/').includes('..')) {
      throw new VigilError('lab', 'malformed', `qemu-ga needs a library at an unusable path: ${p}`);
    }
    files.push([p.slice(1), p]);
  }
  return { version, files };
}
