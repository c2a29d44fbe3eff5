// Stop replies: why the target stopped. `S AA` (signal), `T AA key:value;…` (signal with registers,
// thread, watchpoint address, stop reason), `W AA` (exited), `X AA` (terminated). QEMU answers a
// hardware watchpoint hit with e.g. "T05thread:01;watch:ffffffff8a2d1000;".

import { VigilError } from '../../util/errors.js';
import { fromHex } from './packet.js';

export type WatchKind = 'watch' | 'rwatch' | 'awatch';

export interface StopReply {
  readonly kind: 'signal' | 'exited' | 'terminated';
  /** GDB signal number (2 = SIGINT after an interrupt, 5 = SIGTRAP at a breakpoint); exit status for W. */
  readonly signal: number;
  /** Thread id as the stub wrote it (QEMU: vCPU index + 1, in hex). */
  readonly thread?: string;
  readonly core?: number;
  /** Data watchpoint that fired: its kind and the address accessed. */
  readonly watch?: { kind: WatchKind; address: bigint };
  /** swbreak / hwbreak / watch / … when the stub says. */
  readonly reason?: string;
  /** Registers the stub sent along, by register number, in target byte order. */
  readonly registers: ReadonlyMap<number, Buffer>;
  /** The packet text (bounded), for evidence and debugging. */
  readonly raw: string;
}

const MAX_PAIRS = 1024;
const STOP = /^(?:[ST][0-9a-fA-F]{2}|[WX][0-9a-fA-F]{2}(?:;.*)?)/s;

/** True for payloads shaped like a stop reply; no other reply GDB commands produce starts this way. */
export function looksLikeStopReply(payload: string): boolean {
  return STOP.test(payload) && (payload[0] !== 'S' || payload.length === 3);
}

export function parseStopReply(payload: string): StopReply {
  const raw = payload.length > 512 ? payload.slice(0, 512) + '…' : payload;
  const code = payload[0];
  const sig = /^[0-9a-fA-F]{2}/.test(payload.slice(1, 3)) ? parseInt(payload.slice(1, 3), 16) : NaN;
  if (!'STWX'.includes(code) || payload.length < 3 || Number.isNaN(sig)) {
    throw new VigilError('vmm', 'malformed', `not a GDB stop reply: "${raw.slice(0, 60)}"`);
  }
  const registers = new Map<number, Buffer>();
  if (code === 'S') {
    if (payload.length !== 3)
      throw new VigilError('vmm', 'malformed', `S stop reply with trailing data: "${raw}"`);
    return { kind: 'signal', signal: sig, registers, raw };
  }
  if (code === 'W' || code === 'X') {
    return { kind: code === 'W' ? 'exited' : 'terminated', signal: sig, registers, raw };
  }
  const out: { -readonly [K in keyof StopReply]?: StopReply[K] } = {
    kind: 'signal',
    signal: sig,
    registers,
    raw,
  };
  const body = payload.slice(3);
  const pairs = body.length === 0 ? [] : body.split(';');
  if (pairs.length > MAX_PAIRS + 1) {
    throw new VigilError('vmm', 'bound', `stop reply with more than ${MAX_PAIRS} fields`);
  }
  for (const pair of pairs) {
    if (pair.length === 0) continue;
    const colon = pair.indexOf(':');
    const key = colon < 0 ? pair : pair.slice(0, colon);
    const value = colon < 0 ? '' : pair.slice(colon + 1);
    if (/^[0-9a-fA-F]+$/.test(key) && colon >= 0) {
      const regnum = parseInt(key, 16);
      // Spec: a hex key is a register number; "xx…" marks it unavailable.
      if (!/^x+$/i.test(value)) registers.set(regnum, fromHex(value, `register ${key} in stop reply`));
      continue;
    }
    switch (key) {
      case 'thread':
        out.thread = value;
        break;
      case 'core':
        if (/^[0-9a-fA-F]{1,8}$/.test(value)) out.core = parseInt(value, 16);
        break;
      case 'watch':
      case 'rwatch':
      case 'awatch':
        if (!/^[0-9a-fA-F]{1,16}$/.test(value)) {
          throw new VigilError(
            'vmm',
            'malformed',
            `bad ${key} address in stop reply: "${value.slice(0, 40)}"`,
          );
        }
        out.watch = { kind: key, address: BigInt('0x' + value) };
        out.reason = 'watch';
        break;
      default:
        // swbreak, hwbreak, library, replaylog, fork, exec, create…: keep the reason, ignore the value.
        if (/^[a-z]+$/.test(key) && out.reason === undefined) out.reason = key;
    }
  }
  return out as StopReply;
}
