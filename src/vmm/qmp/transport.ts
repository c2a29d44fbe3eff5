// Where a QEMU control socket lives and how to open it, with failures worded for a person: a missing
// socket file, a stale one (QEMU gone), a path that is not a socket, a port nobody listens on.

import fs from 'node:fs';
import net from 'node:net';
import { VigilError, describeSysError } from '../../util/errors.js';

export type SocketTarget = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

const TCP = /^(?:tcp:)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/**
 * Parse "unix:/path", "/path/to.sock", "tcp:host:port" or "host:port". A string naming an existing file
 * is a unix socket even if it looks like host:port.
 */
export function parseSocketTarget(spec: string): SocketTarget {
  if (spec.length === 0) throw new VigilError('vmm', 'usage', 'empty socket address');
  if (spec.startsWith('unix:')) return { kind: 'unix', path: spec.slice(5) };
  const m = TCP.exec(spec);
  if (m && !spec.includes('/') && !fs.existsSync(spec)) {
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new VigilError('vmm', 'usage', `port out of range in "${spec}"`);
    const host = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1];
    return { kind: 'tcp', host, port };
  }
  if (spec.startsWith('tcp:')) throw new VigilError('vmm', 'usage', `expected tcp:HOST:PORT, got "${spec}"`);
  return { kind: 'unix', path: spec };
}

export function describeTarget(t: SocketTarget): string {
  return t.kind === 'unix' ? t.path : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** Translate a connect failure into a VigilError that says what to check. */
export function connectError(t: SocketTarget, what: string, e: unknown): VigilError {
  const code = e && typeof e === 'object' && 'code' in e ? String((e as { code: unknown }).code) : '';
  const where = describeTarget(t);
  if (t.kind === 'unix') {
    if (code === 'ENOENT')
      return new VigilError('vmm', 'not-found', `no ${what} socket at ${where}`, { cause: e });
    if (code === 'EACCES' || code === 'EPERM') {
      return new VigilError('vmm', 'denied', `permission denied on ${what} socket ${where}`, { cause: e });
    }
    if (code === 'ENOTSOCK' || (code === 'ECONNREFUSED' && !isSocketFile(t.path))) {
      return new VigilError('vmm', 'usage', `${where} is not a socket (expected QEMU's ${what} socket)`, {
        cause: e,
      });
    }
    if (code === 'ECONNREFUSED') {
      return new VigilError(
        'vmm',
        'io',
        `${what} socket ${where} refused the connection (stale socket file: is QEMU still running?)`,
        { cause: e },
      );
    }
  } else if (code === 'ECONNREFUSED') {
    return new VigilError('vmm', 'io', `nothing listens for ${what} at ${where} (connection refused)`, {
      cause: e,
    });
  } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new VigilError('vmm', 'not-found', `cannot resolve host of ${what} address ${where}`, {
      cause: e,
    });
  }
  return new VigilError('vmm', 'io', `cannot connect to ${what} at ${where}: ${describeSysError(e)}`, {
    cause: e,
  });
}

function isSocketFile(path: string): boolean {
  try {
    return fs.statSync(path).isSocket();
  } catch {
    return false;
  }
}

/** Open a stream socket; resolves once connected, rejects with a worded VigilError. */
export function openSocket(t: SocketTarget, what: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      t.kind === 'unix'
        ? net.createConnection({ path: t.path })
        : net.createConnection({ host: t.host, port: t.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new VigilError(
          'vmm',
          'timeout',
          `connecting to ${what} at ${describeTarget(t)} took over ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      if (t.kind === 'tcp') socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      socket.destroy();
      reject(connectError(t, what, e));
    });
  });
}
