// Commands over a guest's serial console (a QEMU unix socket, one client at a time). Each command is wrapped
// in unique markers; the markers are written with a quote inside ("BEG""IN_id") so the tty's echo of the
// command line never matches the marker the shell prints, whatever the echo looks like.
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { VigilError, describeSysError } from '../util/errors.js';

export interface ExecResult {
  output: string;
  exitCode: number;
}

/** Longest command line sent to the console; longer ones get mangled by the tty. Put scripts in lab/. */
export const MAX_COMMAND_LENGTH = 400;
/** Cap on what one command may print, so a runaway command cannot exhaust memory. */
export const MAX_OUTPUT_BYTES = 64 << 20;

export function wrapCommand(id: string, command: string): string {
  const body = command.trim() || 'true';
  // "cmd &;" is a syntax error: a background command needs no separator.
  const sep = /[^&]&$/.test(body) ? ' ' : '; ';
  return `echo "BEG""IN_${id}"; ${body}${sep}echo "EN""D_${id} $?"\n`;
}

/**
 * Find a wrapped command's result in console text, or undefined while the end marker has not arrived.
 * Output is what lies between the BEGIN line and the END marker, with '\r' removed.
 */
export function parseExecOutput(text: string, id: string): ExecResult | undefined {
  const begin = new RegExp(`(?:^|\\n)BEGIN_${id}\\r*\\n`).exec(text);
  if (!begin) return undefined;
  const rest = text.slice(begin.index + begin[0].length);
  const end = new RegExp(`END_${id} (\\d+)\\r*\\n`).exec(rest);
  if (!end) return undefined;
  return { output: rest.slice(0, end.index).replace(/\r/g, ''), exitCode: Number(end[1]) };
}

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    sock.once('connect', () => {
      sock.removeAllListeners('error');
      resolve(sock);
    });
    sock.once('error', (e) => {
      sock.destroy();
      reject(e);
    });
  });
}

/**
 * Connect to the console socket. QEMU serves one client and keeps a backlog of one, so while another
 * process holds the console, connect() fails with EAGAIN: retry until the deadline.
 */
async function open(path: string, timeoutMs: number): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    try {
      return await connectOnce(path);
    } catch (e) {
      const code = (e as { code?: string }).code;
      const busy = code === 'EAGAIN' || code === 'ECONNREFUSED';
      if (!busy) {
        throw new VigilError('lab', 'io', `serial console ${path}: ${describeSysError(e)}`, { cause: e });
      }
      if (Date.now() + delay > deadline) {
        throw new VigilError('lab', 'timeout', `serial console ${path} stayed busy for ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Read from the console until `done(text)` returns a value, `timeoutMs` passes, or `abort()` says stop. */
async function readUntil<T>(
  sock: Socket,
  done: (text: string) => T | undefined,
  timeoutMs: number,
  what: string,
  abort?: () => string | undefined,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let text = '';
    let bytes = 0;
    const finish = (err: Error | undefined, value?: T) => {
      clearTimeout(timer);
      clearInterval(poll);
      sock.off('data', onData);
      sock.off('close', onClose);
      if (err) reject(err);
      else resolve(value as T);
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > MAX_OUTPUT_BYTES) {
        finish(new VigilError('lab', 'bound', `${what}: more than ${MAX_OUTPUT_BYTES} bytes of output`));
        return;
      }
      text += chunk.toString('latin1');
      const v = done(text);
      if (v !== undefined) finish(undefined, v);
    };
    const onClose = () => finish(new VigilError('lab', 'io', `${what}: the serial console closed`));
    const timer = setTimeout(() => {
      const tail = JSON.stringify(text.slice(-200));
      finish(
        new VigilError('lab', 'timeout', `${what}: no answer within ${timeoutMs} ms (last output ${tail})`),
      );
    }, timeoutMs);
    const poll = setInterval(() => {
      const why = abort?.();
      if (why) finish(new VigilError('lab', 'state', `${what}: ${why}`));
    }, 250);
    sock.on('data', onData);
    sock.on('close', onClose);
  });
}

// One command at a time per console within this process; other processes queue in QEMU's listen backlog.
const queues = new Map<string, Promise<unknown>>();

function serialise<T>(key: string, job: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve();
  const next = prev.then(job, job);
  const tail = next.catch(() => undefined);
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return next;
}

export interface ExecOptions {
  timeoutMs?: number;
}

/** Run one shell command on the console and return its output and exit status. */
export function serialExec(socketPath: string, command: string, opts: ExecOptions = {}): Promise<ExecResult> {
  if (command.includes('\n')) {
    throw new VigilError('lab', 'usage', 'a console command must be one line: put scripts in lab/scripts');
  }
  if (command.length > MAX_COMMAND_LENGTH) {
    throw new VigilError(
      'lab',
      'usage',
      `console command too long (${command.length} > ${MAX_COMMAND_LENGTH} characters): put it in a lab/scripts script`,
    );
  }
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return serialise(socketPath, async () => {
    const sock = await open(socketPath, timeoutMs);
    try {
      const id = randomBytes(6).toString('hex');
      sock.write(wrapCommand(id, command));
      try {
        return await readUntil(
          sock,
          (t) => parseExecOutput(t, id),
          timeoutMs,
          `console command "${command}"`,
        );
      } catch (e) {
        // Interrupt whatever still runs (or a half-typed line), so the next command finds a prompt.
        sock.write('\x03\n');
        await new Promise((r) => setTimeout(r, 100));
        throw e;
      }
    } finally {
      sock.destroy();
    }
  });
}

/** Wait for a line containing `marker` on the console, e.g. while the guest boots. */
export function waitForMarker(
  socketPath: string,
  marker: string,
  timeoutMs: number,
  abort?: () => string | undefined,
): Promise<string> {
  return serialise(socketPath, async () => {
    const sock = await open(socketPath, timeoutMs);
    try {
      return await readUntil(
        sock,
        (t) => {
          const i = t.indexOf(marker);
          if (i < 0) return undefined;
          const eol = t.indexOf('\n', i);
          return eol < 0 ? undefined : t.slice(i, eol).replace(/\r/g, '');
        },
        timeoutMs,
        `waiting for "${marker}"`,
        abort,
      );
    } finally {
      sock.destroy();
    }
  });
}
