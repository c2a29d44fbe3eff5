// `vigil sockets`: every socket in the guest like `ss -a` shows it — TCP, UDP, raw, UNIX and packet sockets
// of every network namespace, read from the kernel's own tables — with the processes holding each open.
import type { Command } from 'commander';
import { listSockets, NETIDS, socketOwners, type NetId, type Socket } from '../../os/linux/net/index.js';
import { VigilError } from '../../util/errors.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';
import type { WalkIssue } from '../../os/linux/walk.js';

interface SocketsOptions extends TargetOptions {
  json?: boolean;
  netid?: string;
  owners: boolean;
}

/** "tcp,udp" → the netids asked for; a family name without 6 also takes its IPv6 table. */
export function parseNetids(spec: string): Set<NetId> {
  const out = new Set<NetId>();
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const hits = NETIDS.filter((n) => n === part || n === `${part}6`);
    if (hits.length === 0) {
      throw new VigilError('cli', 'usage', `unknown socket kind "${part}" (one of ${NETIDS.join(', ')})`);
    }
    for (const h of hits) out.add(h);
  }
  return out;
}

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('sockets')
      .description('sockets of every network namespace (TCP, UDP, raw, UNIX, packet) and their processes')
      .option('--netid <kinds>', 'only these kinds, comma-separated (tcp, udp, raw, unix, packet…)')
      .option('--no-owners', 'skip finding which processes hold each socket')
      .option('--json', 'print JSON'),
  ).action(async (opts: SocketsOptions) => {
    const only = opts.netid !== undefined ? parseNetids(opts.netid) : undefined;
    const { sockets, issues } = await withTarget(opts, async (t) => {
      const k = await t.kernel();
      let list = listSockets(k);
      if (only) list = list.filter((s) => only.has(s.netid));
      if (opts.owners) socketOwners(k, list);
      return { sockets: list, issues: k.issues.items };
    });
    print(opts.json ? toJson(sockets) : table(sockets));
    reportIssues(issues);
  });
}

const owners = (s: Socket): string =>
  s.owners === undefined
    ? ''
    : s.owners
        .map((o) => `${o.pid}/${o.comm}`)
        .filter((v, i, a) => a.indexOf(v) === i)
        .join(',');

function table(sockets: readonly Socket[]): string {
  return renderTable(sockets, [
    { header: 'NETID', get: (s) => s.netid },
    { header: 'TYPE', get: (s) => s.type },
    { header: 'STATE', get: (s) => s.state },
    { header: 'LOCAL', get: (s) => s.local, max: 60 },
    { header: 'PEER', get: (s) => s.remote, max: 48 },
    { header: 'INODE', get: (s) => s.inode, align: 'right' },
    { header: 'UID', get: (s) => s.uid, align: 'right' },
    { header: 'NETNS', get: (s) => s.netns, align: 'right' },
    { header: 'PROCESSES', get: owners, max: 60 },
  ]);
}

/** Why a walk stopped early, on stderr: the table may be incomplete (a hostile guest can cause this). */
function reportIssues(issues: readonly WalkIssue[]): void {
  for (const i of issues) process.stderr.write(`vigil: note: ${i.walker} ${i.kind}: ${i.detail}\n`);
}
