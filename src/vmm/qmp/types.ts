// Shapes of the QMP messages and command results vigil uses (QEMU's qapi schema, trimmed to what we read).

import type { VmEvent } from '../types.js';

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

/** An asynchronous QMP event. */
export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  /** Milliseconds since the epoch, from QEMU's own timestamp (receive time if QEMU gave none). */
  readonly time: number;
}

export interface QmpStatus {
  status: string;
  running: boolean;
  singlestep?: boolean;
}

export interface RxFilterInfo {
  name: string;
  promiscuous: boolean;
  'main-mac': string;
  multicast?: string;
  unicast?: string;
  vlan?: string;
  'broadcast-allowed'?: boolean;
  'multicast-overflow'?: boolean;
  'unicast-overflow'?: boolean;
  'unicast-table'?: string[];
  'multicast-table'?: string[];
  'vlan-table'?: number[];
}

export interface CpuInfoFast {
  'cpu-index': number;
  'qom-path': string;
  'thread-id': number;
  target: string;
  props?: Record<string, number>;
}

export type QmpConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed';

export interface ReconnectPolicy {
  /** Connection attempts before giving up (default 10). */
  attempts?: number;
  /** Delay before the second attempt; doubles each time (default 100 ms). */
  initialDelayMs?: number;
  /** Upper bound of the delay (default 5000 ms). */
  maxDelayMs?: number;
}

export interface QmpClientOptions {
  /** Connect, read the greeting and negotiate capabilities within this time (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Default per-command reply timeout (default 30000 ms). */
  commandTimeoutMs?: number;
  /** Capacity of each events() stream (default 1024); older events are dropped and counted beyond it. */
  eventBufferSize?: number;
  /** Longest accepted JSON line (default 64 MiB). */
  maxLineBytes?: number;
  /** Reconnect by itself when the connection drops; events() streams survive the gap. */
  autoReconnect?: boolean | ReconnectPolicy;
}

/** A QMP event in the machine-neutral shape of src/vmm/types.ts. */
export function toVmEvent(e: QmpEvent): VmEvent {
  return { source: 'qmp', name: e.event, time: e.time, data: e.data };
}
