// Shared by the sink tests: alerts to send, temporary directories, bounded waiting, and an RFC 5424 parser
// written from the RFC (not from syslog-format.ts) to read back what the syslog sink sent.

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Alert } from '../../policy/types.js';

export function makeAlert(over: Partial<Alert> = {}): Alert {
  return {
    id: randomUUID(),
    time: '2026-11-26T14:00:00.123Z',
    vm: 'web01',
    policy: 'raw-socket',
    severity: 'high',
    technique: 'T1040',
    summary: 'raw socket opened by nc',
    evidence: { pid: 42, comm: 'nc', inode: 1234 },
    key: 'raw-socket:pid=42:inode=1234',
    ...over,
  };
}

export function tempDir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), `vigil-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Poll `check` every few ms until it holds or `timeoutMs` passes; returns whether it held. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  stepMs = 10,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return check();
}

export interface Rfc5424 {
  pri: number;
  facility: number;
  severity: number;
  version: number;
  timestamp: string;
  hostname: string;
  appName: string;
  procId: string;
  msgId: string;
  sd: { id: string; params: Record<string, string> }[];
  msg: string;
}

/** Parse one RFC 5424 message (§6); throws on anything that does not follow the ABNF. */
export function parseRfc5424(text: string): Rfc5424 {
  const m = /^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) /.exec(text);
  if (!m) throw new Error(`bad header: ${JSON.stringify(text.slice(0, 120))}`);
  const pri = Number(m[1]);
  const field = (s: string, max: number) => {
    if (s.length > max || !/^[!-~]+$/.test(s)) throw new Error(`bad header field ${JSON.stringify(s)}`);
    return s;
  };
  let i = m[0].length;
  const sd: Rfc5424['sd'] = [];
  if (text[i] === '-') {
    i++;
  } else {
    while (text[i] === '[') {
      i++;
      const idEnd = text.slice(i).search(/[ \]]/);
      const id = text.slice(i, i + idEnd);
      i += idEnd;
      const params: Record<string, string> = {};
      while (text[i] === ' ') {
        i++;
        const eq = text.indexOf('="', i);
        const name = text.slice(i, eq);
        if (!/^[!#-<>-\\^-~]{1,32}$/.test(name)) throw new Error(`bad param name ${name}`);
        i = eq + 2;
        let value = '';
        for (;;) {
          const c = text[i++];
          if (c === undefined) throw new Error('unterminated param value');
          if (c === '"') break;
          if (c === '\\' && (text[i] === '"' || text[i] === '\\' || text[i] === ']')) {
            value += text[i++];
            continue;
          }
          if (c === ']') throw new Error('unescaped ] in param value');
          value += c;
        }
        params[name] = value;
      }
      if (text[i++] !== ']') throw new Error('SD element not closed');
      sd.push({ id, params });
    }
  }
  let msg = '';
  if (i < text.length) {
    if (text[i] !== ' ') throw new Error('no space before MSG');
    msg = text.slice(i + 1).replace(/^\ufeff/, '');
  }
  return {
    pri,
    facility: pri >> 3,
    severity: pri & 7,
    version: Number(m[2]),
    timestamp: m[3]!,
    hostname: field(m[4]!, 255),
    appName: field(m[5]!, 48),
    procId: field(m[6]!, 128),
    msgId: field(m[7]!, 32),
    sd,
    msg,
  };
}
