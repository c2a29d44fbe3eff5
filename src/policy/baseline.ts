// Baselines: what a policy saw on a clean system, kept per VM in a file a person can read and diff
// (pretty-printed JSON, one top-level key per policy, a "_vigil" header). Baselines are tied to a kernel
// identity (banner + KASLR slide): after a reboot the slide moves every kernel address, so a policy asks
// `identityChanged` instead of raising alerts for every moved pointer.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VigilError, describeSysError } from '../util/errors.js';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Which kernel a baseline was learned on (the os layer derives it after bootstrap). */
export type { KernelIdentity } from '../os/linux/live-kernel.js';
import type { KernelIdentity } from '../os/linux/live-kernel.js';

/** A kernel identity as stored in the file: the slide in hex, so it reads like an address. */
export interface StoredIdentity {
  release?: string;
  banner: string;
  kaslrOffset: string;
}

export interface BaselineHeader {
  /** vigil version that wrote the file. */
  vigil: string;
  vm: string;
  created: string;
  updated: string;
  /** The kernel of the most recent save. */
  kernel?: StoredIdentity;
}

export interface PolicySection {
  /** Kernel the values belong to. */
  identity?: StoredIdentity;
  learned: string;
  updated: string;
  values: Record<string, JsonValue>;
}

/** One VM's baselines in memory. */
export interface BaselineDoc {
  header: BaselineHeader;
  policies: Map<string, PolicySection>;
}

/** Where baselines live. The file store is the real one; the memory store serves tests and dry runs. */
export interface BaselineStore {
  readonly description: string;
  /** The VM's baselines, or undefined when none were saved. Throws VigilError 'malformed' on a bad file. */
  load(vm: string): Promise<BaselineDoc | undefined>;
  save(vm: string, doc: BaselineDoc): Promise<void>;
  /** Forget one policy's baseline, or all of the VM's. Returns whether anything was removed. */
  reset(vm: string, policy?: string): Promise<boolean>;
}

/** A policy's view of its baseline during one run (see StagedBaseline). */
export interface BaselineAccess {
  /** The policy has a baseline (it learned, or stored values, before). */
  readonly exists: boolean;
  /**
   * The kernel differs from the one the values were learned on (a reboot: different banner or KASLR
   * slide). Stored addresses are then meaningless: re-learn (`clear()`) or rebase and `acceptIdentity()`.
   */
  readonly identityChanged: boolean;
  /** ISO time the baseline was first learned. */
  readonly learnedAt: string | undefined;
  get<T extends JsonValue = JsonValue>(key: string): T | undefined;
  /** Store a JSON value (copied and frozen). Throws VigilError 'bound' past the size limits. */
  set(key: string, value: JsonValue): void;
  delete(key: string): void;
  keys(): string[];
  /** Forget all values and adopt the current kernel identity. */
  clear(): void;
  /** Keep the values but adopt the current kernel identity (after rebasing them). */
  acceptIdentity(): void;
}

export const HEADER_KEY = '_vigil';
/** A policy's values are capped so a hostile guest cannot make a policy grow its baseline without end. */
export const MAX_POLICY_BYTES = 4 * 1024 * 1024;
export const MAX_POLICY_KEYS = 100_000;
export const MAX_KEY_LENGTH = 512;
const MAX_FILE_BYTES = 64 * 1024 * 1024;

export const storedIdentity = (id: KernelIdentity): StoredIdentity => ({
  ...(id.release !== undefined ? { release: id.release } : {}),
  banner: id.banner,
  kaslrOffset: '0x' + id.kaslrOffset.toString(16),
});

const sameIdentity = (a: StoredIdentity, b: StoredIdentity): boolean =>
  a.banner === b.banner && BigInt(a.kaslrOffset) === BigInt(b.kaslrOffset);

/** The vigil state root: $VIGIL_STATE, else $XDG_STATE_HOME/vigil, else ~/.local/state/vigil. */
export function stateRoot(): string {
  if (process.env.VIGIL_STATE) return resolve(process.env.VIGIL_STATE);
  const xdg = process.env.XDG_STATE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.local', 'state'), 'vigil');
}

/**
 * A VM name as a file name. VM names come from the operator (libvirt allows nearly anything), so plain
 * names stay as they are and anything else is %-escaped: readable, and two names never share a file.
 */
export function vmFileName(vm: string): string {
  if (vm.length === 0) throw new VigilError('policy', 'usage', 'empty VM name');
  if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(vm)) return vm;
  return [...Buffer.from(vm, 'utf8')]
    .map((b) => {
      const c = String.fromCharCode(b);
      return /[A-Za-z0-9_-]/.test(c) ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
    })
    .join('')
    .slice(0, 200);
}

let cachedVersion: string | undefined;
/** vigil's version from its package.json, found from this module's location. */
export function vigilVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  cachedVersion = 'unknown';
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const v = (JSON.parse(readFileSync(pkg, 'utf8')) as { version?: unknown }).version;
        if (typeof v === 'string') cachedVersion = v;
      } catch {
        // A broken package.json only costs the header its version.
      }
      break;
    }
    dir = dirname(dir);
  }
  return cachedVersion;
}

export function newBaselineDoc(vm: string, now: string, version = vigilVersion()): BaselineDoc {
  return { header: { vigil: version, vm, created: now, updated: now }, policies: new Map() };
}

/** Pretty JSON: the header first, then policies in id order, so diffs between saves stay small. */
export function serializeBaseline(doc: BaselineDoc): string {
  const out: Record<string, unknown> = { [HEADER_KEY]: doc.header };
  for (const id of [...doc.policies.keys()].sort()) {
    const s = doc.policies.get(id)!;
    out[id] = {
      ...(s.identity ? { identity: s.identity } : {}),
      learned: s.learned,
      updated: s.updated,
      values: s.values,
    };
  }
  return JSON.stringify(out, null, 2) + '\n';
}

export function parseBaseline(text: string, where: string): BaselineDoc {
  const bad = (why: string) => new VigilError('policy', 'malformed', `baseline ${where}: ${why}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new VigilError('policy', 'malformed', `baseline ${where} is not valid JSON`, { cause: e });
  }
  if (!isObject(raw)) throw bad('not a JSON object');
  const h = raw[HEADER_KEY];
  if (!isObject(h) || typeof h.vm !== 'string' || typeof h.created !== 'string') {
    throw bad(`missing or broken "${HEADER_KEY}" header`);
  }
  const header: BaselineHeader = {
    vigil: typeof h.vigil === 'string' ? h.vigil : 'unknown',
    vm: h.vm,
    created: h.created,
    updated: typeof h.updated === 'string' ? h.updated : h.created,
    ...(h.kernel !== undefined ? { kernel: parseIdentity(h.kernel, bad) } : {}),
  };
  const policies = new Map<string, PolicySection>();
  for (const [id, s] of Object.entries(raw)) {
    if (id === HEADER_KEY) continue;
    if (!isObject(s) || !isObject(s.values) || typeof s.learned !== 'string') {
      throw bad(`section "${id}" needs "learned" and a "values" object`);
    }
    policies.set(id, {
      ...(s.identity !== undefined ? { identity: parseIdentity(s.identity, bad) } : {}),
      learned: s.learned,
      updated: typeof s.updated === 'string' ? s.updated : s.learned,
      values: deepFreeze(s.values as Record<string, JsonValue>),
    });
  }
  return { header, policies };
}

function parseIdentity(v: unknown, bad: (why: string) => VigilError): StoredIdentity {
  if (!isObject(v) || typeof v.banner !== 'string' || typeof v.kaslrOffset !== 'string') {
    throw bad('kernel identity needs "banner" and "kaslrOffset"');
  }
  if (!/^0x[0-9a-f]{1,16}$/i.test(v.kaslrOffset)) throw bad(`bad kaslrOffset "${v.kaslrOffset}"`);
  return {
    ...(typeof v.release === 'string' ? { release: v.release } : {}),
    banner: v.banner,
    kaslrOffset: v.kaslrOffset,
  };
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

/** Baselines as files: <dir>/<vm>.json, default dir <state root>/baselines. */
export class FileBaselineStore implements BaselineStore {
  readonly dir: string;

  constructor(dir: string = join(stateRoot(), 'baselines')) {
    this.dir = resolve(dir);
  }

  get description(): string {
    return `baseline files in ${this.dir}`;
  }

  pathFor(vm: string): string {
    return join(this.dir, vmFileName(vm) + '.json');
  }

  async load(vm: string): Promise<BaselineDoc | undefined> {
    const path = this.pathFor(vm);
    let text: string;
    try {
      const st = await stat(path);
      if (st.size > MAX_FILE_BYTES) {
        throw new VigilError('policy', 'bound', `baseline ${path} is larger than ${MAX_FILE_BYTES} bytes`);
      }
      text = await readFile(path, 'utf8');
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') return undefined;
      if (e instanceof VigilError) throw e;
      throw new VigilError('policy', 'io', `cannot read baseline ${path}: ${describeSysError(e)}`, {
        cause: e,
      });
    }
    return parseBaseline(text, path);
  }

  async save(vm: string, doc: BaselineDoc): Promise<void> {
    await writeAtomic(this.pathFor(vm), serializeBaseline(doc));
  }

  async reset(vm: string, policy?: string): Promise<boolean> {
    const path = this.pathFor(vm);
    if (policy === undefined) {
      try {
        await unlink(path);
        return true;
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') return false;
        throw new VigilError('policy', 'io', `cannot remove ${path}: ${describeSysError(e)}`, { cause: e });
      }
    }
    const doc = await this.load(vm);
    if (!doc?.policies.delete(policy)) return false;
    await this.save(vm, doc);
    return true;
  }
}

/**
 * Write a file so a reader sees the old or the new content, never half of one: a temp file in the same
 * directory, flushed, then renamed over the target. Mode 0600: baselines describe the guest's internals.
 */
export async function writeAtomic(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw new VigilError('policy', 'io', `cannot write ${path}: ${describeSysError(e)}`, { cause: e });
  }
}

/** Baselines kept in memory, serialised like the files so tests exercise the same format. */
export class MemoryBaselineStore implements BaselineStore {
  readonly description = 'baselines in memory (not kept)';
  readonly texts = new Map<string, string>();

  async load(vm: string): Promise<BaselineDoc | undefined> {
    const t = this.texts.get(vm);
    return t === undefined ? undefined : parseBaseline(t, `memory:${vm}`);
  }

  async save(vm: string, doc: BaselineDoc): Promise<void> {
    this.texts.set(vm, serializeBaseline(doc));
  }

  async reset(vm: string, policy?: string): Promise<boolean> {
    if (policy === undefined) return this.texts.delete(vm);
    const doc = await this.load(vm);
    if (!doc?.policies.delete(policy)) return false;
    await this.save(vm, doc);
    return true;
  }
}

const DELETED = Symbol('deleted');
type Staged = JsonValue | typeof DELETED;

/**
 * One policy's baseline during one run. Writes are staged (copy-on-write: reads of unchanged keys cost
 * nothing) and applied by `commit()` only when the engine decides the run was good, so a policy that
 * throws half-way, or learns from a truncated walk, leaves the stored baseline as it was.
 */
export class StagedBaseline implements BaselineAccess {
  readonly #doc: BaselineDoc;
  readonly #policy: string;
  readonly #current: StoredIdentity | undefined;
  readonly #staged = new Map<string, Staged>();
  #cleared = false;
  #adopt = false;
  /**
   * Size of the section as it will be after commit, kept up to date on every write. Measured lazily on
   * the first write: most runs only read, and measuring means serialising the whole section.
   */
  #size: { bytes: number; keys: number } | undefined;

  constructor(doc: BaselineDoc, policy: string, current: KernelIdentity | undefined) {
    this.#doc = doc;
    this.#policy = policy;
    this.#current = current ? storedIdentity(current) : undefined;
  }

  get #section(): PolicySection | undefined {
    return this.#doc.policies.get(this.#policy);
  }

  get exists(): boolean {
    return this.#section !== undefined || this.#staged.size > 0 || this.#cleared;
  }

  get identityChanged(): boolean {
    if (this.#cleared || this.#adopt) return false;
    const stored = this.#section?.identity;
    return stored !== undefined && this.#current !== undefined && !sameIdentity(stored, this.#current);
  }

  get learnedAt(): string | undefined {
    return this.#section?.learned;
  }

  /** Whether this run changed anything. */
  get dirty(): boolean {
    return this.#staged.size > 0 || this.#cleared || this.#adopt;
  }

  get<T extends JsonValue = JsonValue>(key: string): T | undefined {
    const s = this.#staged.get(key);
    if (s !== undefined) return s === DELETED ? undefined : (s as T);
    if (this.#cleared) return undefined;
    return this.#section?.values[key] as T | undefined;
  }

  set(key: string, value: JsonValue): void {
    checkKey(key, this.#policy);
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw new VigilError('policy', 'malformed', `baseline value "${key}" is not JSON`, { cause: e });
    }
    if (text === undefined)
      throw new VigilError('policy', 'malformed', `baseline value "${key}" is not JSON`);
    const had = this.get(key);
    const size = this.#measure();
    const bytes = size.bytes - (had === undefined ? 0 : entryBytes(key, had)) + key.length + text.length + 6;
    const count = size.keys + (had === undefined ? 1 : 0);
    if (bytes > MAX_POLICY_BYTES || count > MAX_POLICY_KEYS) {
      throw new VigilError(
        'policy',
        'bound',
        `baseline of ${this.#policy} would exceed ${MAX_POLICY_BYTES} bytes or ${MAX_POLICY_KEYS} keys`,
      );
    }
    // The JSON round trip is the copy: the policy cannot alias stored state, and it sees what a reload sees.
    this.#staged.set(key, deepFreeze(JSON.parse(text) as JsonValue));
    size.bytes = bytes;
    size.keys = count;
  }

  delete(key: string): void {
    const had = this.get(key);
    if (had === undefined) return;
    const size = this.#measure();
    size.bytes -= entryBytes(key, had);
    size.keys--;
    this.#staged.set(key, DELETED);
  }

  keys(): string[] {
    const keys = new Set(this.#cleared ? [] : Object.keys(this.#section?.values ?? {}));
    for (const [k, v] of this.#staged) {
      if (v === DELETED) keys.delete(k);
      else keys.add(k);
    }
    return [...keys];
  }

  clear(): void {
    this.#staged.clear();
    this.#cleared = true;
    this.#size = { bytes: 0, keys: 0 };
  }

  acceptIdentity(): void {
    this.#adopt = true;
  }

  #measure(): { bytes: number; keys: number } {
    if (!this.#size) {
      const values = this.#section?.values ?? {};
      this.#size = { bytes: sectionBytes(values), keys: Object.keys(values).length };
    }
    return this.#size;
  }

  /**
   * Apply the staged writes to the document. `learned` marks a completed learn: the section then exists
   * even when the policy stored nothing (an empty baseline is still a baseline). Returns whether the
   * document changed.
   */
  commit(now: string, learned = false): boolean {
    if (!this.dirty && !learned) return false;
    const old = this.#section;
    const values: Record<string, JsonValue> = this.#cleared ? {} : { ...(old?.values ?? {}) };
    for (const [k, v] of this.#staged) {
      if (v === DELETED) delete values[k];
      else values[k] = v;
    }
    const identity = this.#cleared || this.#adopt || !old?.identity ? this.#current : old.identity;
    this.#doc.policies.set(this.#policy, {
      ...(identity ? { identity } : {}),
      learned: learned || this.#cleared || !old ? now : old.learned,
      updated: now,
      values: Object.freeze(values),
    });
    this.#staged.clear();
    this.#cleared = false;
    this.#adopt = false;
    this.#size = undefined;
    return true;
  }
}

function checkKey(key: string, policy: string): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH) {
    throw new VigilError(
      'policy',
      'usage',
      `baseline key of ${policy} must be 1-${MAX_KEY_LENGTH} characters`,
    );
  }
}

// Sizes are estimates of the serialised section (compact JSON plus a little per entry): they bound growth,
// they need not match the pretty file byte for byte.
const entryBytes = (key: string, v: JsonValue): number => key.length + JSON.stringify(v).length + 6;
const sectionBytes = (values: Record<string, JsonValue>): number =>
  Object.entries(values).reduce((n, [k, v]) => n + entryBytes(k, v), 0);
