// `vigil netdev`: network devices of every namespace as the kernel holds them — flags (a sniffer's
// promiscuous mode included), MTU, hardware address, state and the driver's operations table.
import type { Command } from 'commander';
import { listNetDevices, type NetDevice } from '../../os/linux/net/index.js';
import { print, renderTable, toJson } from '../output.js';
import { addTargetOptions, withTarget, type TargetOptions } from '../target.js';
import type { WalkIssue } from '../../os/linux/walk.js';

export function register(program: Command): void {
  addTargetOptions(
    program
      .command('netdev')
      .description('network devices of every namespace: flags, promiscuity, MTU, MAC, driver ops')
      .option('--json', 'print JSON'),
  ).action(async (opts: TargetOptions & { json?: boolean }) => {
    const { devices, issues } = await withTarget(opts, async (t) => {
      const k = await t.kernel();
      return { devices: listNetDevices(k), issues: k.issues.items };
    });
    print(opts.json ? toJson(devices) : table(devices));
    reportIssues(issues);
  });
}

function table(devices: readonly NetDevice[]): string {
  return renderTable(devices, [
    { header: 'INDEX', get: (d) => d.ifindex, align: 'right' },
    { header: 'NAME', get: (d) => d.name },
    { header: 'FLAGS', get: (d) => d.flags.join(',') },
    { header: 'MTU', get: (d) => d.mtu, align: 'right' },
    { header: 'MAC', get: (d) => d.mac ?? '?' },
    { header: 'PROMISC', get: (d) => d.promiscuity, align: 'right' },
    { header: 'STATE', get: (d) => d.operstate },
    { header: 'NETNS', get: (d) => d.netns, align: 'right' },
    { header: 'OPS', get: (d) => d.netdevOpsSymbol ?? d.netdevOps, max: 40 },
  ]);
}

/** Why a walk stopped early, on stderr: the table may be incomplete (a hostile guest can cause this). */
function reportIssues(issues: readonly WalkIssue[]): void {
  for (const i of issues) process.stderr.write(`vigil: note: ${i.walker} ${i.kind}: ${i.detail}\n`);
}
