// Asking the guest through qemu-guest-agent, bounded: its `ps` (procps or busybox, whichever the guest
// has), /proc/modules and the /proc/net tables. Every call has a time limit of its own on top of the
// agent's, and every failure — a timeout, an agent gone, an exit status, output too large or of the wrong
// shape — comes back as a reason instead of a listing: a view the guest did not give is never compared.
import { isVigilError, VigilError, type ErrorKind } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import type { GuestAgent } from '../../vmm/types.js';
import {
  MAX_LISTING_BYTES,
  parseProcModules,
  parseProcNet,
  parsePs,
  type ProcModule,
  type ProcNetListing,
  type ProcNetTable,
  type PsListing,
} from './guest-views.js';

/** What one question to the guest gave: a parsed listing, or why there is none. */
export type Answer<T> = { ok: true; value: T; source: string } | { ok: false; kind: string; detail: string };

export interface AskOptions {
  /** Per call: the agent's own bound, and ours on top of it (after as long again, at most a second). */
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Ways of running ps, in the order tried: procps (and busybox with -o support), then busybox plainly. */
export const PS_COMMANDS: readonly { path: string; args: readonly string[] }[] = [
  { path: 'ps', args: ['-eo', 'pid=,comm='] },
  { path: '/bin/busybox', args: ['ps', '-o', 'pid,comm'] },
  { path: '/bin/busybox', args: ['ps'] },
];

const MAX_PS_OUTPUT = 8 << 20;
/** /proc/net of a busy server is large (~150 bytes a socket); past this the table is not compared. */
const MAX_FILE_BYTES = Math.min(MAX_LISTING_BYTES, 16 << 20);

/**
 * Errors that say the agent itself is not answering (out of time, its socket lost, its client closed):
 * trying another command would only wait again. An error the agent answered with ('protocol': no such
 * program, no such file) is about that one command.
 */
const AGENT_DOWN: readonly string[] = ['timeout', 'io', 'state'] satisfies ErrorKind[];

/** True when a failed answer says the agent is not answering (as opposed to one listing being bad). */
export const agentDown = (a: Answer<unknown>): boolean => !a.ok && AGENT_DOWN.includes(a.kind);

/** Which ps form worked last on this VM, so that later sweeps start with it. */
export interface AskState {
  psForm: number;
}

async function bounded<T>(what: string, p: Promise<T>, o: AskOptions): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new VigilError('policy', 'timeout', `${what} took over ${o.timeoutMs} ms`)),
          o.timeoutMs + Math.min(1000, o.timeoutMs),
        );
        if (o.signal) {
          onAbort = () => reject(new VigilError('policy', 'timeout', `${what}: the policy run was aborted`));
          if (o.signal.aborted) onAbort();
          else o.signal.addEventListener('abort', onAbort, { once: true });
        }
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) o.signal?.removeEventListener('abort', onAbort);
  }
}

const failure = (e: unknown): { ok: false; kind: string; detail: string } => ({
  ok: false,
  kind: isVigilError(e) ? e.kind : 'malformed',
  detail: sanitize(isVigilError(e) ? e.message : e instanceof Error ? e.message : String(e), 300),
});

const commandLine = (c: (typeof PS_COMMANDS)[number]): string => [c.path, ...c.args].join(' ');

/** The guest's process list from its own ps. */
export async function askPs(agent: GuestAgent, state: AskState, o: AskOptions): Promise<Answer<PsListing>> {
  const start = state.psForm >= 0 && state.psForm < PS_COMMANDS.length ? state.psForm : 0;
  const order = [start, ...PS_COMMANDS.keys()].filter((v, i, a) => a.indexOf(v) === i);
  let first: { ok: false; kind: string; detail: string } | undefined;
  for (const i of order) {
    const c = PS_COMMANDS[i]!;
    const line = commandLine(c);
    try {
      const r = await bounded(
        `guest ${line}`,
        agent.exec(c.path, c.args, { timeoutMs: o.timeoutMs, maxOutput: MAX_PS_OUTPUT }),
        o,
      );
      if (r.truncated) {
        throw new VigilError('policy', 'bound', `output cut at ${r.stdout.length} bytes`);
      }
      if (r.exitCode !== 0) {
        const err = sanitize(r.stderr.toString('latin1').trim().split('\n')[0] ?? '', 120);
        throw new VigilError('policy', 'malformed', `exited with ${r.exitCode}${err ? `: ${err}` : ''}`);
      }
      const value = parsePs(r.stdout);
      state.psForm = i;
      return { ok: true, value, source: line };
    } catch (e) {
      const f = failure(e);
      f.detail = `guest ${line}: ${f.detail}`;
      first ??= f;
      if (isVigilError(e) && AGENT_DOWN.includes(e.kind)) return f;
    }
  }
  return first!;
}

/** A whole guest file through the agent; more than `maxBytes` is refused, not cut. */
async function askFile(agent: GuestAgent, path: string, o: AskOptions): Promise<Buffer> {
  const buf = await bounded(`guest read of ${path}`, agent.readFile(path, { maxBytes: MAX_FILE_BYTES }), o);
  if (buf.length >= MAX_FILE_BYTES) {
    throw new VigilError('policy', 'bound', `${path} is at least ${MAX_FILE_BYTES} bytes: not compared`);
  }
  return buf;
}

export async function askModules(agent: GuestAgent, o: AskOptions): Promise<Answer<ProcModule[]>> {
  try {
    return {
      ok: true,
      value: parseProcModules(await askFile(agent, '/proc/modules', o)),
      source: '/proc/modules',
    };
  } catch (e) {
    const f = failure(e);
    return { ...f, detail: `guest /proc/modules: ${f.detail}` };
  }
}

export async function askNet(
  agent: GuestAgent,
  table: ProcNetTable,
  o: AskOptions,
): Promise<Answer<ProcNetListing>> {
  const path = `/proc/net/${table}`;
  try {
    return { ok: true, value: parseProcNet(await askFile(agent, path, o), table), source: path };
  } catch (e) {
    const f = failure(e);
    return { ...f, detail: `guest ${path}: ${f.detail}` };
  }
}
