// The attack suite: real attack techniques run inside a lab guest booted with the suite (/attacks in its
// initramfs, built from lab/attacks/), so that vigil's detectors can be proven against them. Each attack is
// a runner script in the guest (/attacks/run/<name>) that leaves a long-running process or kernel state
// behind and prints one result line, "ATTACK <name> key=value ...", parsed here.
import { VigilError } from '../util/errors.js';
import { sanitize } from '../util/sanitize.js';
import { buildLab } from './build.js';
import { execInGuest } from './guest.js';
import type { KernelFlavour, Progress } from './kernel.js';
import type { GuestState } from './state.js';

export interface AttackSpec {
  name: string;
  /** One line for `vigil lab attack --list`. */
  description: string;
  /** MITRE ATT&CK technique id. */
  technique: string;
  /** What a detector should see in the guest once the attack ran: the evidence. */
  expect: string;
  /** Optional runner arguments, as shown to a person (e.g. "[PORT]"). */
  args?: string;
  /** Loads a kernel module (needs the kernel headers at build time). */
  kernel?: boolean;
}

export const ATTACKS: readonly AttackSpec[] = [
  {
    name: 'sniffer',
    description: 'packet sniffer: a raw AF_PACKET socket (ETH_P_ALL) read in a loop by "sniffer"',
    technique: 'T1040',
    expect:
      'process "sniffer" (pid=) holds a packet socket (AF_PACKET, SOCK_RAW, protocol 0x0003, inode=) listed ' +
      'in /proc/net/packet; a packet_type on the ptype_all list',
  },
  {
    name: 'promisc',
    description: 'put eth0 into promiscuous mode (SIOCSIFFLAGS IFF_PROMISC); it stays so',
    technique: 'T1040',
    args: '[IFACE]',
    expect:
      'net_device eth0: IFF_PROMISC in flags and gflags, promiscuity >= 1; `ip link` shows PROMISC; ' +
      'QEMU query-rx-filter reports promiscuous (NIC_RX_FILTER_CHANGED event)',
  },
  {
    name: 'macchange',
    description: 'change the MAC address of eth0 (SIOCSIFHWADDR), default 02:56:49:47:49:4c',
    technique: 'T1557',
    args: '[IFACE] [MAC]',
    expect:
      'net_device eth0: dev_addr (new=) differs from perm_addr and from the MAC QEMU gave the NIC (old=); ' +
      'QEMU query-rx-filter main-mac changes',
  },
  {
    name: 'bindshell',
    description:
      'bind shell on TCP 4444 ("bindshell") with a client ("bindshell-cli") connected from the guest',
    technique: 'T1059.004',
    args: '[PORT]',
    expect:
      'LISTEN socket 0.0.0.0:4444 owned by "bindshell" (pid=); a shell "sh" (shell=) whose fds 0, 1 and 2 ' +
      'are one TCP socket, ESTABLISHED to the client "bindshell-cli" (client=) on 127.0.0.1',
  },
  {
    name: 'revshell',
    description:
      'reverse shell: "sh" with socket stdio connected out to ADDR:PORT (default 127.0.0.1:4445, caught ' +
      'in the guest by "revshell-c2"; 10.0.2.2 is the host)',
    technique: 'T1059.004',
    args: '[ADDR] [PORT]',
    expect:
      'a shell "sh" (pid=) whose fds 0, 1 and 2 are one TCP socket it connected itself (no listener) to ' +
      'addr:port',
  },
  {
    name: 'patch-text',
    description:
      'a running program ("patchtext") whose own code is patched in memory (mprotect, /proc/self/mem)',
    technique: 'T1055.009',
    expect:
      'process "patchtext": its text pages at mprotect_addr= and procmem_addr= (len= bytes) differ from ' +
      '/attacks/bin/patchtext at the same offsets (non-PIE: fixed addresses); they are anonymous COW pages',
  },
  {
    name: 'fileless',
    description: 'fileless execution: an ELF copied into a memfd and run with fexecve ("fileless")',
    technique: 'T1620',
    expect:
      'process "fileless" (pid=) whose exe is /memfd:vigil-payload (deleted): a shmem inode with no link, ' +
      'mapped executable',
  },
  {
    name: 'fileless-deleted',
    description: 'a program ("deleted-exe") run from /tmp/.vigil-dropper, deleted after it started',
    technique: 'T1070.004',
    expect: 'process "deleted-exe" (pid=) whose exe file /tmp/.vigil-dropper has i_nlink 0 ("(deleted)")',
  },
  {
    name: 'yara-string',
    description: 'a process ("yarastring") holding known-bad strings in memory (lab/attacks/README.md)',
    technique: 'T1027',
    expect:
      'the strings of YARA_STRINGS in the anonymous memory of "yarastring" (heap= and anon= addresses), ' +
      'not in its executable file',
  },
  {
    name: 'rootkit-hide',
    description: 'module vk_hide: ftrace hook on getdents64 hides process "vk-hidden" and a file',
    technique: 'T1014',
    kernel: true,
    expect:
      'pid= in the PID table and task list but missing from `ls /proc`; /tmp/attacks/vk-hidden-file exists ' +
      'but is not listed; __x64_sys_getdents64 traced by an ftrace_ops (IPMODIFY) whose handler lies in vk_hide',
  },
  {
    name: 'rootkit-hidemod',
    description: 'module vk_hidemod: removes itself from the module list and sysfs',
    technique: 'T1014',
    kernel: true,
    expect:
      'module memory (mod_tree, module area) of vk_hidemod not on the `modules` list: not in lsmod, ' +
      '/proc/modules or /sys/module; kernel tainted (out-of-tree, unsigned)',
  },
  {
    name: 'rootkit-dkom',
    description: 'module vk_dkom: unlinks process "vk-unlinked" from the task list (DKOM)',
    technique: 'T1014',
    kernel: true,
    expect:
      'pid= in the PID table (and /proc, ps) but not reachable from init_task.tasks: the cross-view of ' +
      'task list vs PID hash',
  },
  {
    name: 'rootkit-syscall',
    description: 'module vk_syscall: sys_call_table[62] (kill) and IDT vector 0x80 point into the module',
    technique: 'T1014',
    kernel: true,
    expect:
      'sys_call_table[62] is not __x64_sys_kill but an address in vk_syscall; IDT gate 0x80 (idt=1) points ' +
      'into vk_syscall instead of the kernel entry code',
  },
  {
    name: 'rootkit-wp',
    description:
      'module vk_wp: sys_call_table[62] (kill) written in place with CR0.WP cleared (what a watchpoint sees)',
    technique: 'T1014',
    kernel: true,
    expect:
      "a write to sys_call_table[62] at its own address (entry=) from vk_wp's init code, caught by a write " +
      'watchpoint on the entry; the entry then points into vk_wp instead of __x64_sys_kill',
  },
  {
    name: 'rootkit-lstar',
    description:
      'module vk_lstar: MSR_LSTAR (the SYSCALL entry) of every CPU points at a counting stub in the module',
    technique: 'T1014',
    kernel: true,
    expect:
      'IA32_LSTAR of each vCPU is lstar= (vigilkit_lstar_stub in vk_lstar) instead of entry_SYSCALL_64; ' +
      'system calls still work (hits= counted); refused under page-table isolation',
  },
  {
    name: 'rootkit-inline',
    description: 'module vk_inline: jmp patched into tcp4_seq_show hides TCP port 31337 ("vk-hiddenport")',
    technique: 'T1014',
    args: '[PORT]',
    kernel: true,
    expect:
      'kernel text of tcp4_seq_show differs from the image (a jmp into vk_inline where the ftrace nop was); ' +
      'a LISTEN socket on port= (owned by pid=) missing from /proc/net/tcp',
  },
  {
    name: 'rootkit-root',
    description: 'module vk_root: kill(any, 64) gives root; "vk-rooted" goes from uid 1000 to uid 0',
    technique: 'T1548',
    kernel: true,
    expect:
      'process "vk-rooted" (pid=) with uid/euid 0 whose parent "vk-rootparent" (parent=) runs as uid 1000 ' +
      'and whose executable is not set-uid; __x64_sys_kill traced by an ftrace_ops whose handler lies in vk_root',
  },
  {
    name: 'rootkit',
    description: 'module vigilkit with every piece at once, hidden (needs a guest with no other vk_* hooks)',
    technique: 'T1014',
    kernel: true,
    expect:
      'everything of rootkit-hide (hidden_pid=), rootkit-dkom (unlinked_pid=), rootkit-syscall, ' +
      'rootkit-inline (port=, listener=), rootkit-root (rooted_pid=), and rootkit-hidemod for vigilkit',
  },
];

/** The known-bad strings "yara-string" decodes into its memory (lab/attacks/src/yara-strings.txt). */
export const YARA_STRINGS: readonly string[] = [
  'VIGIL-TEST-MALWARE-SIGNATURE-5f3a',
  '/bin/busybox MIRAI',
  'MIRAI: applet not found',
  'stratum+tcp://pool.vigil-test.invalid:3333',
  'XMRig/6.21.0',
  'donate.v2.xmrig.com',
];

export function findAttack(name: string): AttackSpec {
  const a = ATTACKS.find((x) => x.name === name);
  if (!a) {
    throw new VigilError(
      'lab',
      'usage',
      `unknown attack "${name}": one of ${ATTACKS.map((x) => x.name).join(', ')}`,
    );
  }
  return a;
}

export interface AttackResult {
  name: string;
  /** The key=value pairs of the result line. */
  fields: Record<string, string>;
  /** The main process of the attack, when it has one. */
  pid?: number;
  /** Everything the runner printed. */
  output: string;
}

/** Exit status of the console command when the guest has no attack suite. */
const NO_SUITE = 97;
const ARG_RE = /^[A-Za-z0-9._:/-]{1,64}$/;

/** Parse a runner's output: the last "ATTACK <name> k=v…" line, or the reason from "ATTACK-FAIL <name> …". */
export function parseAttackOutput(name: string, output: string, exitCode = 0): AttackResult {
  const lines = output.split('\n').map((l) => l.replace(/\r$/, ''));
  const failed = lines.find((l) => l.startsWith(`ATTACK-FAIL ${name} `));
  if (failed) {
    throw new VigilError(
      'lab',
      'state',
      `attack ${name} failed: ${sanitize(failed.slice(13 + name.length))}`,
    );
  }
  const line = lines.reverse().find((l) => l.startsWith(`ATTACK ${name} `) || l === `ATTACK ${name}`);
  if (!line || exitCode !== 0) {
    const tail = sanitize(output.trim().split('\n').slice(-3).join(' | '), 400);
    throw new VigilError(
      'lab',
      'protocol',
      `attack ${name} ${exitCode !== 0 ? `exited with ${exitCode}` : 'printed no result line'}: ${tail || 'no output'}`,
    );
  }
  const fields: Record<string, string> = {};
  for (const word of line.slice(`ATTACK ${name}`.length).split(' ')) {
    const eq = word.indexOf('=');
    if (eq > 0) fields[word.slice(0, eq)] = sanitize(word.slice(eq + 1), 256);
  }
  const pid = fields.pid !== undefined && /^\d+$/.test(fields.pid) ? Number(fields.pid) : undefined;
  return { name, fields, pid, output };
}

/** Run an attack in a guest booted with the attack suite (attackImage / `vigil lab up --attacks`). */
export async function runAttack(
  guest: GuestState | string,
  name: string,
  args: readonly string[] = [],
  opts: { timeoutMs?: number } = {},
): Promise<AttackResult> {
  findAttack(name);
  for (const a of args) {
    if (!ARG_RE.test(a)) throw new VigilError('lab', 'usage', `bad argument "${a}" for attack ${name}`);
  }
  const runner = `/attacks/run/${name}`;
  // Never `exit` here: that would end the console's shell itself.
  const cmd = `if [ -x ${runner} ]; then ${[runner, ...args].join(' ')}; else (exit ${NO_SUITE}); fi`;
  const r = await execInGuest(guest, cmd, { timeoutMs: opts.timeoutMs ?? 90_000 });
  if (r.exitCode === NO_SUITE) {
    const g = typeof guest === 'string' ? guest : guest.name;
    throw new VigilError(
      'lab',
      'state',
      `guest ${g} has no attack suite: boot it with "vigil lab up --attacks --name ${g}"`,
    );
  }
  return parseAttackOutput(name, r.output, r.exitCode);
}

/** Kernel and initramfs (with the attack suite) to boot an attack guest with: pass them to ensureGuest. */
export async function attackImage(
  opts: { flavour?: KernelFlavour; progress?: Progress } = {},
): Promise<{ kernel: string; initrd: string; kernelRelease: string }> {
  const image = await buildLab({ ...opts, attacks: true });
  return { kernel: image.kernel, initrd: image.initrd, kernelRelease: image.release };
}
