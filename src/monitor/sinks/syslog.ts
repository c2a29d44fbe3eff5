// The syslog sink: RFC 5424 messages (syslog-format.ts) over UDP, TCP or a unix socket (syslog-transport.ts).
//
// Default facility: authpriv (10). Alerts are security messages and their evidence (process names,
// addresses, file paths inside a guest) is not for every local user: syslog daemons route authpriv to a
// root-only file by default (Debian /var/log/auth.log, RHEL /var/log/secure) where security staff already
// look, whereas local0 goes nowhere in particular until someone configures it. Set `facility: local0` (or
// any other) to route vigil separately.

import { hostname as osHostname } from 'node:os';
import type { Alert } from '../../policy/types.js';
import { VigilError } from '../../util/errors.js';
import { SYSLOG_FACILITIES, type SyslogSinkConfig, sinkNameOf } from './config.js';
import { DEFAULT_SD_ID, formatSyslog, frameSyslog, type SyslogFormat } from './syslog-format.js';
import {
  StreamTransport,
  tcpConnector,
  UdpTransport,
  UnixDgramTransport,
  unixStreamConnector,
  type SyslogTransport,
} from './syslog-transport.js';
import {
  MONITOR_ORIGIN,
  silentReporter,
  type SinkDeps,
  type SinkReporter,
  type SinkStatus,
  type VigilSink,
} from './types.js';

export const SYSLOG_DEFAULTS = {
  facility: 'authpriv',
  host: '127.0.0.1',
  port: 514,
  path: '/dev/log',
  socketType: 'dgram',
  sdId: DEFAULT_SD_ID,
  evidence: false,
  maxMessageBytes: 8192,
  maxQueue: 1000,
  reconnectBaseMs: 500,
  reconnectMaxMs: 30_000,
  connectTimeoutMs: 5000,
  closeTimeoutMs: 2000,
} as const;

/** Failures seen by the sink's writes and by its transport in the background. */
class Health {
  failures = 0;
  lastError: string | undefined;
  fail(e: unknown): void {
    this.failures++;
    this.lastError = e instanceof VigilError ? e.toLine() : e instanceof Error ? e.message : String(e);
  }
  ok(): void {
    this.lastError = undefined;
  }
}

export class SyslogSink implements VigilSink {
  readonly name: string;
  private closed = false;

  private constructor(
    config: SyslogSinkConfig,
    private readonly health: Health,
    private readonly transport: SyslogTransport,
    private readonly format: SyslogFormat,
    private readonly framing: 'octet-counting' | 'lf' | 'none',
    private readonly closeTimeoutMs: number,
  ) {
    this.name = sinkNameOf(config);
  }

  static async create(config: SyslogSinkConfig, deps: SinkDeps = {}): Promise<SyslogSink> {
    const d = SYSLOG_DEFAULTS;
    const outer = deps.reporter ?? silentReporter;
    // The transport reports through `health` so that status() sees background failures too.
    const health = new Health();
    const reporter: SinkReporter = {
      failure: (e) => {
        health.fail(e);
        outer.failure(e);
      },
      success: () => {
        health.ok();
        outer.success();
      },
    };
    const facility = config.facility ?? d.facility;
    const format: SyslogFormat = {
      facility: typeof facility === 'number' ? facility : SYSLOG_FACILITIES[facility],
      hostname: config.hostname ?? deps.hostname ?? osHostname(),
      procId: String(process.pid),
      sdId: config.sdId ?? d.sdId,
      evidence: config.evidence ?? d.evidence,
      maxBytes: config.maxMessageBytes ?? d.maxMessageBytes,
    };
    const stream = {
      maxQueue: config.maxQueue ?? d.maxQueue,
      reconnectBaseMs: config.reconnectBaseMs ?? d.reconnectBaseMs,
      reconnectMaxMs: config.reconnectMaxMs ?? d.reconnectMaxMs,
      connectTimeoutMs: config.connectTimeoutMs ?? d.connectTimeoutMs,
      random: deps.random,
    };
    const name = sinkNameOf(config);
    let transport: SyslogTransport;
    let framing: 'octet-counting' | 'lf' | 'none' = 'none';
    if (config.transport === 'udp') {
      transport = await UdpTransport.create(config.host ?? d.host, config.port ?? d.port, reporter);
    } else if (config.transport === 'tcp') {
      framing = config.framing ?? 'octet-counting';
      transport = new StreamTransport(
        name,
        tcpConnector(config.host ?? d.host, config.port ?? d.port),
        stream,
        reporter,
      );
    } else if ((config.socketType ?? d.socketType) === 'stream') {
      // syslog-ng's unix-stream() source, the one common stream /dev/log, reads newline-terminated messages.
      framing = config.framing ?? 'lf';
      transport = new StreamTransport(name, unixStreamConnector(config.path ?? d.path), stream, reporter);
    } else {
      transport = new UnixDgramTransport(config.path ?? d.path, reporter);
    }
    return new SyslogSink(
      config,
      health,
      transport,
      format,
      framing,
      config.closeTimeoutMs ?? d.closeTimeoutMs,
    );
  }

  async write(alert: Alert): Promise<void> {
    if (this.closed) throw new VigilError(MONITOR_ORIGIN, 'state', `${this.name}: sink closed`);
    const frame = frameSyslog(formatSyslog(alert, this.format), this.framing);
    try {
      await this.transport.send(frame);
    } catch (e) {
      this.health.fail(e);
      throw e;
    }
    // A datagram that left is a success; a queued stream message only counts once its connection is up.
    if (this.transport.connected) this.health.ok();
  }

  status(): SinkStatus {
    return {
      healthy: this.health.lastError === undefined,
      pending: this.transport.pending,
      dropped: this.transport.dropped,
      failures: this.health.failures,
      lastError: this.health.lastError,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.transport.close(this.closeTimeoutMs);
  }
}
