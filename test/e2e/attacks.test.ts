// The attack suite end to end: every attack runs in a lab guest booted with the suite, and the guest's own
// view (/proc, /sys, dmesg, the kernel's task-list dump, the network) proves that it really happened. The
// first run builds the suite (kernel headers from apt, the rootkit modules): allow minutes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildAttacks } from '../../src/lab/attacks-build.js';
import { ATTACKS, YARA_STRINGS, attackImage, runAttack, type AttackResult } from '../../src/lab/attacks.js';
import { fetchKernel, stopGuest, type GuestState } from '../../src/lab/index.js';
import { VigilError } from '../../src/util/errors.js';
import { guestExec, guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-attacks';
const GUEST_ALL = 'vigil-test-attacks-rootkit';
const here = dirname(fileURLToPath(import.meta.url));
const mainUrl = pathToFileURL(join(here, '../../src/cli/main.js')).href;
const progress = (line: string) => process.stderr.write(`[attacks] ${line}\n`);

function vigil(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const script = `import { main } from ${JSON.stringify(mainUrl)}; process.exitCode = await main(process.argv.slice(1));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A result field that must be there. */
function field(r: AttackResult, key: string): string {
  const v = r.fields[key];
  assert.ok(v !== undefined, `attack ${r.name} reported no ${key}= (${JSON.stringify(r.fields)})`);
  return v;
}

const num = (r: AttackResult, key: string) => Number(field(r, key));

/** `count` bytes of a guest process's memory at `addr`, as hex, read by the guest itself. */
async function guestMemHex(g: GuestState, pid: number, addr: string, count: number): Promise<string> {
  const out = await guestRun(
    g,
    `dd if=/proc/${pid}/mem bs=1 skip=$((${addr})) count=${count} 2>/dev/null | od -An -tx1`,
  );
  return out.replace(/\s+/g, '');
}

/** Bytes of a guest file at `offset`, as hex. */
async function guestFileHex(g: GuestState, path: string, offset: number, count: number): Promise<string> {
  const out = await guestRun(g, `dd if=${path} bs=1 skip=${offset} count=${count} 2>/dev/null | od -An -tx1`);
  return out.replace(/\s+/g, '');
}

/** Lines of /proc/net/tcp as [local "ADDR:PORT" in hex, remote, state, inode]. */
async function procNetTcp(
  g: GuestState,
): Promise<{ local: string; remote: string; state: string; inode: string }[]> {
  const text = await guestRun(g, 'cat /proc/net/tcp');
  return text
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 9)
    .map((f) => ({ local: f[1], remote: f[2], state: f[3], inode: f[9] }));
}

const hexPort = (port: number) => port.toString(16).toUpperCase().padStart(4, '0');

/** The socket inode each of a process's fds 0, 1 and 2 refers to (undefined when not a socket). */
async function stdioSockets(g: GuestState, pid: number): Promise<(string | undefined)[]> {
  const out = await guestRun(g, `for f in 0 1 2; do readlink /proc/${pid}/fd/$f; done`);
  return out
    .trim()
    .split('\n')
    .map((l) => /^socket:\[(\d+)\]$/.exec(l)?.[1]);
}

/** Kernel symbol addresses from the guest's /proc/kallsyms: "name" or "name [module]" → address. */
async function kallsyms(g: GuestState, pattern: string): Promise<Map<string, bigint>> {
  const out = await guestRun(g, `grep -E '${pattern}' /proc/kallsyms`);
  const m = new Map<string, bigint>();
  for (const line of out.split('\n')) {
    const f = /^([0-9a-f]+) \S (\S+)(?:\t\[(\S+)\])?$/.exec(line.trim());
    if (f) m.set(f[3] ? `${f[2]} [${f[3]}]` : f[2], BigInt(`0x${f[1]}`));
  }
  return m;
}

/**
 * Task names in the kernel's own walk of the task list (sysrq t), from the last dump in the log. The dump
 * is long: read what else the log must show before asking for it.
 */
async function taskListComms(g: GuestState): Promise<string[]> {
  await guestRun(g, 'echo t > /proc/sysrq-trigger');
  const out = await guestRun(
    g,
    `dmesg | awk '/sysrq: Show State/ { n = NR } { l[NR] = $0 } END { for (i = n; i <= NR; i++) print l[i] }'`,
  );
  return [...out.matchAll(/task:(\S+)/g)].map((m) => m[1]);
}

const procList = async (g: GuestState) => (await guestRun(g, 'ls /proc')).split(/\s+/).filter(Boolean);
const comm = async (g: GuestState, pid: number) => (await guestRun(g, `cat /proc/${pid}/comm`)).trim();

describe('attack suite, one attack at a time', { timeout: 1_800_000 }, () => {
  let g: GuestState;

  before(async () => {
    const image = await attackImage({ progress });
    g = await sharedGuest(GUEST, image);
  });

  after(async () => {
    // Two cores: this file's guests are its own, stop each once done.
    await stopGuest(GUEST);
  });

  it('lists every attack with a technique and the evidence to expect', () => {
    const list = vigil(['lab', 'attack', '--list']);
    assert.equal(list.status, 0, list.stderr);
    for (const a of ATTACKS) assert.match(list.stdout, new RegExp(`^${a.name}\\b.*${a.technique}`, 'm'));
    const json = JSON.parse(vigil(['lab', 'attack', '--list', '--json']).stdout) as { name: string }[];
    assert.deepEqual(
      json.map((a) => a.name),
      ATTACKS.map((a) => a.name),
    );
  });

  it('sniffer: a raw packet socket that really receives frames', async () => {
    const r = await runAttack(g, 'sniffer');
    const pid = r.pid as number;
    const inode = field(r, 'inode');
    assert.equal(await comm(g, pid), 'sniffer');
    const packet = await guestRun(g, 'cat /proc/net/packet');
    const row = packet.split('\n').find((l) => l.trim().split(/\s+/)[8] === inode);
    assert.ok(row, `inode ${inode} not in /proc/net/packet:\n${packet}`);
    assert.equal(row.trim().split(/\s+/)[3], '0003'); // ETH_P_ALL
    assert.match(
      await guestRun(g, `readlink /proc/${pid}/fd/${field(r, 'fd')}`),
      new RegExp(`socket:\\[${inode}\\]`),
    );
    const before = Number((await guestRun(g, 'cat /tmp/attacks/sniffer.count 2>/dev/null || echo 0')).trim());
    await guestRun(g, 'ping -c 2 -W 2 10.0.2.2 >/dev/null');
    const after = Number((await guestRun(g, 'cat /tmp/attacks/sniffer.count')).trim());
    assert.ok(after >= before + 4, `sniffer counted ${before} then ${after} frames`); // 2 requests + 2 replies
  });

  it('promisc: eth0 in promiscuous mode', async () => {
    const r = await runAttack(g, 'promisc');
    assert.equal(field(r, 'iface'), 'eth0');
    const flags = Number((await guestRun(g, 'cat /sys/class/net/eth0/flags')).trim());
    assert.ok(flags & 0x100, `IFF_PROMISC not in ${flags.toString(16)}`);
    assert.match(await guestRun(g, 'dmesg'), /device eth0 entered promiscuous mode/);
  });

  it('bindshell: a listener on 4444 and a shell whose stdio are its socket', async () => {
    const r = await runAttack(g, 'bindshell');
    const listener = r.pid as number;
    const shell = num(r, 'shell');
    assert.equal(num(r, 'port'), 4444);
    assert.equal(await comm(g, listener), 'bindshell');
    assert.equal(await comm(g, num(r, 'client')), 'bindshell-cli');
    assert.equal(await comm(g, shell), 'sh');
    assert.match(
      await guestRun(g, `cat /proc/${shell}/stat`),
      new RegExp(`^${shell} \\(sh\\) S ${listener} `),
    );
    const tcp = await procNetTcp(g);
    const listen = tcp.find((t) => t.local === `00000000:${hexPort(4444)}` && t.state === '0A');
    assert.ok(listen, 'no LISTEN socket on 0.0.0.0:4444 in /proc/net/tcp');
    assert.equal(listen.inode, field(r, 'inode'));
    const socks = await stdioSockets(g, shell);
    assert.ok(socks[0] && socks.every((s) => s === socks[0]), `shell stdio ${JSON.stringify(socks)}`);
    const conn = tcp.find((t) => t.inode === socks[0]);
    assert.ok(
      conn && conn.state === '01' && conn.local === `0100007F:${hexPort(4444)}`,
      JSON.stringify(conn),
    );
    assert.match(
      await guestRun(g, 'cat /tmp/attacks/bindshell.out'),
      new RegExp(`VIGIL-BINDSHELL-OK ${shell}\\nuid=0`),
    );
  });

  it('revshell: a shell connected out to a catcher in the guest', async () => {
    const r = await runAttack(g, 'revshell');
    const shell = r.pid as number;
    assert.equal(await comm(g, shell), 'sh');
    assert.equal(await comm(g, num(r, 'catcher')), 'revshell-c2');
    const socks = await stdioSockets(g, shell);
    assert.ok(socks[0] && socks.every((s) => s === socks[0]), `shell stdio ${JSON.stringify(socks)}`);
    assert.equal(socks[0], field(r, 'inode'));
    const conn = (await procNetTcp(g)).find((t) => t.inode === socks[0]);
    assert.ok(
      conn && conn.state === '01' && conn.remote === `0100007F:${hexPort(4445)}`,
      JSON.stringify(conn),
    );
    assert.match(
      await guestRun(g, 'cat /tmp/attacks/revshell.out'),
      new RegExp(`VIGIL-REVSHELL-OK ${shell}\\nuid=0`),
    );
  });

  it('revshell: a shell that connects out to the host through the QEMU gateway', async () => {
    let server: Server | undefined;
    let timer: NodeJS.Timeout | undefined;
    const sockets: Socket[] = [];
    const answered = new Promise<string>((resolve, reject) => {
      server = createServer((sock: Socket) => {
        sockets.push(sock);
        let text = '';
        sock.on('data', (d) => {
          text += d.toString('latin1');
          if (/VIGIL-HOST-42/.test(text)) resolve(text);
        });
        sock.on('error', reject);
        sock.write('echo VIGIL-HOST-$((6*7))\n');
      });
      timer = setTimeout(() => reject(new Error('the reverse shell did not answer the host')), 30_000);
    });
    answered.catch(() => undefined); // awaited below; a failure before that must not go unhandled
    try {
      const port = await new Promise<number>((resolve) => {
        server?.listen(0, '127.0.0.1', () => {
          const a = server?.address();
          resolve(typeof a === 'object' && a ? a.port : 0);
        });
      });
      const r = await runAttack(g, 'revshell', ['10.0.2.2', String(port)]);
      assert.equal(field(r, 'addr'), '10.0.2.2');
      await answered;
      const socks = await stdioSockets(g, r.pid as number);
      const conn = (await procNetTcp(g)).find((t) => t.inode === socks[0]);
      assert.ok(conn && conn.remote === `0202000A:${hexPort(port)}`, JSON.stringify(conn));
    } finally {
      clearTimeout(timer);
      for (const sock of sockets) sock.destroy();
      server?.close();
    }
  });

  it('revshell: refuses any other address', async () => {
    await assert.rejects(
      runAttack(g, 'revshell', ['192.0.2.1', '80']),
      (e: unknown) => e instanceof VigilError && /refusing to connect to 192\.0\.2\.1/.test(e.message),
    );
  });

  it('patch-text: the running code differs from the executable file', async () => {
    const r = await runAttack(g, 'patch-text');
    const pid = r.pid as number;
    assert.equal(await comm(g, pid), 'patchtext');
    const len = num(r, 'len');
    const patched = { mprotect_addr: 'b801000000c3', procmem_addr: 'b8adde0000c3' } as const;
    for (const [key, bytes] of Object.entries(patched)) {
      const addr = field(r, key);
      assert.equal(await guestMemHex(g, pid, addr, len), bytes, key);
      // Static, non-PIE: the file maps at 0x400000 with file offset = address - 0x400000.
      const onDisk = await guestFileHex(g, field(r, 'exe'), Number(addr) - 0x400000, len);
      assert.notEqual(onDisk, bytes, `${key}: the file holds the patch too`);
    }
    await guestRun(g, 'sleep 2');
    assert.equal(await guestRun(g, `cat /tmp/attacks/patchtext.log 2>/dev/null; echo`), '\n', 'lost a patch');
  });

  it('fileless: a process running from a memfd', async () => {
    const r = await runAttack(g, 'fileless');
    const pid = r.pid as number;
    assert.equal(await comm(g, pid), 'fileless');
    assert.equal((await guestRun(g, `readlink /proc/${pid}/exe`)).trim(), '/memfd:vigil-payload (deleted)');
    assert.match(await guestRun(g, `cat /proc/${pid}/maps`), / r-xp .*\/memfd:vigil-payload \(deleted\)/);
  });

  it('fileless-deleted: a process whose executable was deleted', async () => {
    const r = await runAttack(g, 'fileless-deleted');
    const pid = r.pid as number;
    assert.equal(await comm(g, pid), 'deleted-exe');
    assert.equal((await guestRun(g, `readlink /proc/${pid}/exe`)).trim(), '/tmp/.vigil-dropper (deleted)');
    assert.equal((await guestExec(g, 'test -e /tmp/.vigil-dropper')).exitCode, 1);
  });

  it('yara-string: the known-bad strings in process memory, not in the executable', async () => {
    const r = await runAttack(g, 'yara-string');
    const pid = r.pid as number;
    assert.equal(await comm(g, pid), 'yarastring');
    assert.equal(num(r, 'strings'), YARA_STRINGS.length);
    assert.equal(num(r, 'marker_len'), YARA_STRINGS[0].length);
    // Compared by hash inside the guest: the strings themselves never cross the console.
    const all = Buffer.from(YARA_STRINGS.map((s) => `${s}\0`).join(''), 'latin1');
    for (const key of ['heap', 'anon']) {
      const cmd = `dd if=/proc/${pid}/mem bs=1 skip=$((${field(r, key)})) count=${all.length} 2>/dev/null | sha256sum`;
      assert.equal((await guestRun(g, cmd)).split(' ')[0], sha256(all), `${key} holds the strings`);
    }
    const kernel = await fetchKernel('amd64');
    const suite = await buildAttacks(kernel);
    const exe = readFileSync(join(suite.dir, 'bin', 'yarastring'));
    for (const s of YARA_STRINGS) assert.equal(exe.indexOf(s), -1, `the executable holds "${s}" in clear`);
  });

  it('macchange: eth0 gets another MAC address and still talks to the gateway', async () => {
    const r = await runAttack(g, 'macchange');
    assert.equal(field(r, 'old'), '52:54:00:12:34:56'); // QEMU's default for the first NIC
    assert.equal(field(r, 'new'), '02:56:49:47:49:4c');
    assert.equal((await guestRun(g, 'cat /sys/class/net/eth0/address')).trim(), '02:56:49:47:49:4c');
    await guestRun(g, 'ping -c 1 -W 3 10.0.2.2 >/dev/null');
  });

  it('rootkit-hide: a process and a file gone from listings but still there', async () => {
    const r = await runAttack(g, 'rootkit-hide');
    const pid = r.pid as number;
    assert.ok(!(await procList(g)).includes(String(pid)), `${pid} still listed in /proc`);
    assert.equal(await comm(g, pid), 'vk-hidden');
    assert.ok(!(await guestRun(g, 'ps')).includes('vk-hidden'));
    assert.ok(!(await guestRun(g, 'ls -a /tmp/attacks')).includes('vk-hidden-file'));
    assert.equal(await guestRun(g, `cat ${field(r, 'file')}`), 'vigilkit hidden file\n');
    const dmesg = await guestRun(g, 'dmesg | grep vk_hide:');
    assert.match(dmesg, /ftrace hook on __x64_sys_getdents64 \(0x[0-9a-f]+\) -> hook_getdents64 \[vk_hide\]/);
    assert.match(await guestRun(g, 'cat /proc/modules'), /^vk_hide /m);
  });

  it('rootkit-hidemod: a loaded module missing from lsmod, /proc/modules and sysfs', async () => {
    await runAttack(g, 'rootkit-hidemod');
    assert.doesNotMatch(await guestRun(g, 'lsmod'), /vk_hidemod/);
    assert.doesNotMatch(await guestRun(g, 'cat /proc/modules'), /vk_hidemod/);
    assert.equal((await guestExec(g, 'test -e /sys/module/vk_hidemod')).exitCode, 1);
    const dmesg = await guestRun(g, 'dmesg | grep vk_hidemod:');
    assert.match(dmesg, /removed from the module list/);
    assert.match(dmesg, /vk_hidemod: loaded/);
    assert.notEqual((await guestExec(g, 'rmmod vk_hidemod 2>/dev/null')).exitCode, 0);
    const tainted = Number((await guestRun(g, 'cat /proc/sys/kernel/tainted')).trim());
    assert.ok(tainted & (1 << 12) && tainted & (1 << 13), `taint ${tainted}: out-of-tree and unsigned`);
  });

  it('rootkit-dkom: a process in /proc but not on the task list', async () => {
    const r = await runAttack(g, 'rootkit-dkom');
    const pid = r.pid as number;
    assert.ok((await procList(g)).includes(String(pid)));
    assert.equal(await comm(g, pid), 'vk-unlinked');
    assert.match(await guestRun(g, 'ps'), new RegExp(`^\\s*${pid} .*vk-unlinked`, 'm'));
    assert.match(
      await guestRun(g, 'dmesg | grep vk_dkom:'),
      new RegExp(`unlinked pid ${pid} \\(vk-unlinked\\)`),
    );
    const tasks = await taskListComms(g);
    assert.ok(tasks.includes('vigil-idle') && tasks.includes('sniffer'), 'the task dump works');
    assert.ok(!tasks.includes('vk-unlinked'), 'vk-unlinked is still on the task list');
  });

  it('rootkit-syscall: sys_call_table[62] and IDT 0x80 point into the module, int 0x80 goes through it', async () => {
    const r = await runAttack(g, 'rootkit-syscall');
    assert.equal(field(r, 'idt'), '1'); // no page-table isolation under TCG -cpu max
    const log = await guestRun(g, 'dmesg | grep vk_syscall:');
    const syms = await kallsyms(g, '( sys_call_table|\\[vk_syscall\\])$');
    const table =
      /sys_call_table\[62\] at 0x([0-9a-f]+): __x64_sys_kill -> table_kill \[vk_syscall\] \(0x([0-9a-f]+)\)/.exec(
        log,
      );
    assert.ok(table, log);
    assert.equal(BigInt(`0x${table[1]}`), (syms.get('sys_call_table') as bigint) + 62n * 8n);
    assert.equal(BigInt(`0x${table[2]}`), syms.get('table_kill [vk_syscall]'));
    const idt =
      /idt\[0x80\] at 0x[0-9a-f]+: (\S+) -> vigilkit_idt_stub \[vk_syscall\] \(0x([0-9a-f]+)\)/.exec(log);
    assert.ok(idt, log);
    assert.equal(BigInt(`0x${idt[2]}`), syms.get('vigilkit_idt_stub [vk_syscall]'));
    const hits = async () =>
      Number((await guestRun(g, 'cat /sys/module/vk_syscall/parameters/idt_hits')).trim());
    const before = await hits();
    assert.match(await guestRun(g, '/attacks/bin/int80'), /^INT80 ret=(\d+) pid=\1$/m);
    assert.equal(await hits(), before + 1);
  });

  it('rootkit-inline: kernel text patched, a listening port missing from /proc/net/tcp', async () => {
    const r = await runAttack(g, 'rootkit-inline');
    const port = num(r, 'port');
    assert.equal(await comm(g, r.pid as number), 'vk-hiddenport');
    const tcp = await procNetTcp(g);
    assert.ok(!tcp.some((t) => t.local.endsWith(`:${hexPort(port)}`)), `port ${port} still in /proc/net/tcp`);
    assert.ok(
      tcp.some((t) => t.local === `00000000:${hexPort(4444)}`),
      'other ports are still listed',
    );
    assert.doesNotMatch(await guestRun(g, 'netstat -tln'), new RegExp(`:${port}\\b`));
    assert.equal(await guestRun(g, `nc 127.0.0.1 ${port} </dev/null`), 'VIGIL-HIDDEN-PORT\n');
    const log = await guestRun(g, 'dmesg | grep vk_inline:');
    const hook =
      /inline hook at tcp4_seq_show\+0 \(0x([0-9a-f]+)\): jmp hooked_tcp4_seq_show \[vk_inline\]/.exec(log);
    assert.ok(hook, log);
    const syms = await kallsyms(g, ' tcp4_seq_show$');
    assert.equal(BigInt(`0x${hook[1]}`), syms.get('tcp4_seq_show'));
  });

  it('rootkit-root: a uid-1000 process becomes root through the magic signal', async () => {
    const r = await runAttack(g, 'rootkit-root');
    const pid = r.pid as number;
    const parent = num(r, 'parent');
    assert.equal(num(r, 'uid_before'), 1000);
    assert.equal(await comm(g, pid), 'vk-rooted');
    assert.equal(await comm(g, parent), 'vk-rootparent');
    assert.match(
      await guestRun(g, `grep -E '^(Uid|Gid|PPid):' /proc/${pid}/status`),
      new RegExp(`PPid:\\s+${parent}\\nUid:\\s+0\\s+0\\s+0\\s+0\\nGid:\\s+0\\s+0\\s+0\\s+0`),
    );
    assert.match(
      await guestRun(g, `grep '^Uid:' /proc/${parent}/status`),
      /^Uid:\s+1000\s+1000\s+1000\s+1000$/m,
    );
    assert.match(
      await guestRun(g, 'dmesg | grep vk_root:'),
      new RegExp(`magic signal 64: pid ${pid} \\(vk-rooted\\) is root now`),
    );
  });

  it('runs an attack through the CLI', async () => {
    const r = vigil(['lab', 'attack', '--name', GUEST, '--json', 'fileless']);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { name: string; pid: number; technique: string };
    assert.equal(out.name, 'fileless');
    assert.equal(out.technique, 'T1620');
    assert.equal(await comm(g, out.pid), 'fileless');
    const bad = vigil(['lab', 'attack', '--name', GUEST, 'no-such-attack']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown attack "no-such-attack"/);
  });
});

describe('attack suite, the whole rootkit at once', { timeout: 1_200_000 }, () => {
  let g: GuestState;

  before(async () => {
    await stopGuest(GUEST); // one guest at a time
    g = await sharedGuest(GUEST_ALL, await attackImage({ progress }));
  });

  after(async () => {
    await stopGuest(GUEST_ALL);
  });

  it('hides, unlinks, hooks, patches, gives root and hides itself', async () => {
    const r = await runAttack(g, 'rootkit');
    assert.equal(field(r, 'module'), 'vigilkit');
    const hidden = num(r, 'hidden_pid');
    const unlinked = num(r, 'unlinked_pid');
    const procs = await procList(g);
    assert.ok(!procs.includes(String(hidden)) && procs.includes(String(unlinked)));
    assert.ok(!(await guestRun(g, 'ls /tmp/attacks')).includes('vk-hidden-file'));
    const port = num(r, 'port');
    assert.ok(!(await procNetTcp(g)).some((t) => t.local.endsWith(`:${hexPort(port)}`)));
    assert.equal(await guestRun(g, `nc 127.0.0.1 ${port} </dev/null`), 'VIGIL-HIDDEN-PORT\n');
    assert.match(
      await guestRun(g, `grep '^Uid:' /proc/${num(r, 'rooted_pid')}/status`),
      /^Uid:\s+0\s+0\s+0\s+0$/m,
    );
    assert.doesNotMatch(await guestRun(g, 'cat /proc/modules'), /vigilkit/);
    assert.equal((await guestExec(g, 'test -e /sys/module/vigilkit')).exitCode, 1);
    assert.match(await guestRun(g, '/attacks/bin/int80'), /^INT80 ret=(\d+) pid=\1$/m);
    const log = await guestRun(g, 'dmesg | grep vigilkit:');
    for (const want of [
      /ftrace hook on __x64_sys_getdents64/,
      /ftrace hook on __x64_sys_kill/,
      /unlinked pid \d+ \(vk-unlinked\)/,
      /sys_call_table\[62\]/,
      /idt\[0x80\]/,
      /inline hook at tcp4_seq_show/,
      /removed from the module list/,
      /removed \/sys\/module\/vigilkit/,
    ]) {
      assert.match(log, want);
    }
    const tasks = await taskListComms(g);
    assert.ok(
      tasks.includes('vk-hidden') && !tasks.includes('vk-unlinked'),
      'task list: hidden yes, unlinked no',
    );
  });
});

describe('attack suite, a guest booted without it', { timeout: 600_000 }, () => {
  it('says how to boot one with it, and leaves the console working', async () => {
    // The plain lab guest, shared with lab.test.ts (the test runner stops it at the end).
    const g = await sharedGuest('vigil-test-lab');
    await assert.rejects(
      runAttack(g, 'sniffer'),
      (e: unknown) =>
        e instanceof VigilError &&
        e.kind === 'state' &&
        /has no attack suite: boot it with "vigil lab up --attacks/.test(e.message),
    );
    assert.equal(await guestRun(g, 'echo alive'), 'alive\n');
  });
});
