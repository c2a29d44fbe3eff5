// `vigil watch`: the long-running monitor. Many VMs at once (from --qmp, a YAML config and discovery
// globs), each re-attached after reboots, pauses and QEMU restarts; alerts to sinks, metrics over HTTP on
// loopback. One log line per VM state change on stderr. SIGINT/SIGTERM stop it cleanly (exit 0); a second
// signal exits at once.
import type { Command } from 'commander';
import {
  applyCliOptions,
  emptyWatchConfig,
  loadWatchConfig,
  type CliWatchOptions,
  type WatchConfig,
} from '../../monitor/config.js';
import { Watcher } from '../../monitor/watch.js';
import { ALL_POLICIES } from '../../policy/policies/index.js';
import { VigilError } from '../../util/errors.js';
import { print, toJson } from '../output.js';

interface WatchOptions {
  qmp?: string[];
  gdb?: string | false;
  config?: string;
  discover?: string[] | true;
  metricsPort?: number;
  jsonl?: string;
  webhook?: string;
  spool?: string;
  checkConfig?: boolean;
}

function port(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535)
    throw new VigilError('cli', 'usage', `--metrics-port: not a port number: ${v}`);
  return n;
}

export function register(program: Command): void {
  program
    .command('watch')
    .description(
      'watch VMs continuously: sweeps, events, reconnects after reboots and restarts (docs/config.md)',
    )
    .option('--qmp <socket...>', 'QMP socket of a VM to watch (several allowed)')
    .option(
      '--gdb <addr>',
      "the --qmp VM's GDB stub (host:port or unix socket) for write watchpoints (default: the one QEMU reports)",
    )
    .option('--no-gdb', 'never attach a GDB stub (sweeps only)')
    .option('--config <file>', 'YAML config file: targets, policies, sinks, metrics (docs/config.md)')
    .option(
      '--discover [glob...]',
      'also watch every QMP socket matching these globs (default /run/vigil/*.qmp)',
    )
    .option('--metrics-port <port>', 'serve Prometheus /metrics and /healthz on 127.0.0.1:PORT', port)
    .option('--jsonl <file>', 'append alerts to this JSON-lines file')
    .option('--webhook <url>', 'POST each alert to this URL (at least once; needs --spool)')
    .option('--spool <dir>', 'where webhook alerts wait until delivered')
    .option('--check-config', 'validate the configuration, print it as JSON and exit')
    .action(async (opts: WatchOptions) => {
      process.exitCode = await watch(opts);
    });
}

export function buildConfig(opts: WatchOptions): WatchConfig {
  const policies = [...ALL_POLICIES];
  const base = opts.config ? loadWatchConfig(opts.config, { policies }) : emptyWatchConfig();
  const cli: CliWatchOptions = {
    ...(opts.qmp ? { qmp: opts.qmp } : {}),
    ...(opts.gdb !== undefined ? { gdb: opts.gdb } : {}),
    ...(opts.discover ? { discover: opts.discover } : {}),
    ...(opts.metricsPort !== undefined ? { metricsPort: opts.metricsPort } : {}),
    ...(opts.jsonl ? { jsonl: opts.jsonl } : {}),
    ...(opts.webhook !== undefined ? { webhook: opts.webhook } : {}),
    ...(opts.spool !== undefined ? { spool: opts.spool } : {}),
  };
  return applyCliOptions(base, cli);
}

async function watch(opts: WatchOptions): Promise<number> {
  const config = buildConfig(opts);
  if (opts.checkConfig) {
    print(toJson(config));
    return 0;
  }
  const watcher = await Watcher.start({ config, policies: [...ALL_POLICIES] });
  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.stderr.write(`${new Date().toISOString()} watch ${sig}: stopping (again to exit at once)\n`);
      const force = () => process.exit(130);
      process.once('SIGINT', force);
      process.once('SIGTERM', force);
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  await watcher.stop();
  // Everything is closed; should a stray handle keep Node alive, do not hang a service manager's stop.
  setTimeout(() => process.exit(0), 3_000).unref();
  return 0;
}
