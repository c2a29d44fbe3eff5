// Finding and reaching a VM's qemu-guest-agent from QMP with zero configuration: the agent's port is a
// virtserialport named org.qemu.guest_agent.0 somewhere in QOM (/machine/peripheral for devices with an id,
// /machine/peripheral-anon for the rest), its `chardev` property names the chardev, and query-chardev gives
// that chardev's socket ("unix:/path,server=on", prefixed "disconnected:" while no client holds it).

import { VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';
import { QgaClient } from '../qga/client.js';

/** The QMP surface this needs (QmpClient has it). */
export interface QmpExecutor {
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
}

export const AGENT_PORT_NAME = 'org.qemu.guest_agent.0';
const QOM_BASES = ['/machine/peripheral', '/machine/peripheral-anon'] as const;
const MAX_QOM_CHILDREN = 4096;
const MAX_PORTS = 64;

/** Where a VM's agent is, or why it cannot be used; neither field when the VM has no agent port. */
export interface AgentLocation {
  /** The chardev socket: a unix path or host:port. */
  socket?: string;
  problem?: string;
}

interface Chardev {
  label: string;
  filename: string;
  'frontend-open'?: boolean;
}

/** A socket chardev's filename → its address and whether a client holds it; undefined for other kinds. */
export function parseChardevFilename(filename: string): { address: string; connected: boolean } | undefined {
  const disconnected = filename.startsWith('disconnected:');
  let rest = disconnected ? filename.slice('disconnected:'.length) : filename;
  // A connected TCP chardev reads "tcp:HOST:PORT,server=on <-> PEER:PORT": the listening side comes first.
  const arrow = rest.indexOf(' <-> ');
  if (arrow >= 0) rest = rest.slice(0, arrow);
  const m = /^(unix|tcp):(.+)$/.exec(rest.replace(/,server(=on)?$/, ''));
  if (!m) return undefined;
  return { address: m[1] === 'unix' ? m[2] : `tcp:${m[2]}`, connected: !disconnected };
}

async function qomChildren(qmp: QmpExecutor, path: string): Promise<{ name: string; type: string }[]> {
  const list = await qmp.execute<unknown>('qom-list', { path }).catch(() => []);
  if (!Array.isArray(list)) return [];
  return list
    .slice(0, MAX_QOM_CHILDREN)
    .filter(
      (c): c is { name: string; type: string } =>
        typeof c === 'object' && c !== null && typeof c.name === 'string' && typeof c.type === 'string',
    );
}

/** The ids of the chardevs behind every virtserialport named org.qemu.guest_agent.0. */
export async function agentChardevs(qmp: QmpExecutor): Promise<string[]> {
  const ids: string[] = [];
  let ports = 0;
  for (const base of QOM_BASES) {
    for (const child of await qomChildren(qmp, base)) {
      if (child.type !== 'child<virtserialport>') continue;
      if (++ports > MAX_PORTS) return ids;
      const path = `${base}/${child.name}`;
      const name = await qmp.execute<unknown>('qom-get', { path, property: 'name' }).catch(() => undefined);
      if (name !== AGENT_PORT_NAME) continue;
      const chardev = await qmp
        .execute<unknown>('qom-get', { path, property: 'chardev' })
        .catch(() => undefined);
      if (typeof chardev === 'string' && chardev.length > 0) ids.push(chardev);
    }
  }
  return ids;
}

/** Where the VM's agent socket is, from QOM and query-chardev. */
export async function locateAgent(qmp: QmpExecutor): Promise<AgentLocation> {
  const ids = await agentChardevs(qmp);
  if (ids.length === 0) return {};
  const list = await qmp.execute<unknown>('query-chardev').catch(() => []);
  const chardevs = (Array.isArray(list) ? list : []).filter(
    (c): c is Chardev =>
      typeof c === 'object' && c !== null && typeof c.label === 'string' && typeof c.filename === 'string',
  );
  const id = ids[0];
  const chardev = chardevs.find((c) => c.label === id);
  const what = `the guest agent port's chardev "${sanitize(id, 64)}"`;
  if (!chardev) return { problem: `${what} is not in query-chardev` };
  const parsed = parseChardevFilename(chardev.filename);
  if (!parsed) {
    return { problem: `${what} is not a socket vigil can open (${sanitize(chardev.filename, 200)})` };
  }
  const socket = parsed.address;
  if (chardev['frontend-open'] === false) {
    return {
      socket,
      problem: 'the guest has not opened its agent port (qemu-ga is not running in the guest)',
    };
  }
  if (parsed.connected) {
    // QEMU serves one client per chardev socket: a second one would wait for nothing.
    return {
      socket,
      problem: `another client (libvirt?) holds the guest agent socket ${sanitize(socket, 200)}`,
    };
  }
  return { socket };
}

export interface AgentAttachment {
  agent?: QgaClient;
  socket?: string;
  /** Why the VM's agent is not reachable, when it has one (or one was named). */
  problem?: string;
}

/**
 * Reach a VM's agent: `'auto'` finds it through QMP, a string names its socket, `false` skips it. Never
 * throws: an agent that cannot be used leaves `agent` undefined and says why in `problem`.
 */
export async function attachAgent(
  qmp: QmpExecutor,
  option: string | false,
  options: { timeoutMs?: number } = {},
): Promise<AgentAttachment> {
  if (option === false) return {};
  let socket: string | undefined = option === 'auto' ? undefined : option;
  if (socket === undefined) {
    let found: AgentLocation;
    try {
      found = await locateAgent(qmp);
    } catch (e) {
      return { problem: `looking for the guest agent failed: ${describe(e)}` };
    }
    if (found.problem || !found.socket) return found;
    socket = found.socket;
  }
  const timeoutMs = options.timeoutMs ?? 3000;
  try {
    const agent = await QgaClient.connect(socket, { connectTimeoutMs: timeoutMs, syncTimeoutMs: timeoutMs });
    return { agent, socket };
  } catch (e) {
    return { socket, problem: describe(e) };
  }
}

function describe(e: unknown): string {
  if (e instanceof VigilError) return e.message;
  return e instanceof Error ? e.message : String(e);
}
