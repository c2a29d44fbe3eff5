// The stub's target description (target.xml and the files it includes) tells which registers exist, their
// numbers and sizes. Numbering follows GDB's rule: a <reg> without `regnum` is one more than the register
// before it, across features and included files, in document order. Comments are stripped first: QEMU's
// i386-64bit.xml keeps commented-out <reg> elements (cs_base and friends) that must not count.

import { VigilError } from '../../util/errors.js';

export interface RegisterInfo {
  readonly name: string;
  readonly regnum: number;
  readonly bitsize: number;
  readonly type?: string;
  readonly group?: string;
  /** The <feature name=…> the register belongs to, e.g. "org.gnu.gdb.i386.core". */
  readonly feature?: string;
}

export interface TargetDescription {
  readonly architecture?: string;
  readonly registers: readonly RegisterInfo[];
  /** Files read, target.xml first. */
  readonly files: readonly string[];
}

export const TARGET_DESCRIPTION_LIMITS = {
  maxFiles: 64,
  maxDepth: 8,
  maxFileChars: 1024 * 1024,
  maxRegisters: 4096,
  maxBitsize: 8192,
};

/** Fetches one annex (file) of the description, e.g. "target.xml" or "i386-64bit.xml". */
export type AnnexReader = (annex: string) => Promise<string>;

const TAG = /<(reg|xi:include|feature|architecture)\b((?:[^>"']|"[^"]*"|'[^']*')*)>|<\/feature\s*>/g;
const ATTR = /([A-Za-z_:][-\w:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;

/** Read target.xml and everything it includes, and number the registers. */
export async function loadTargetDescription(
  read: AnnexReader,
  root = 'target.xml',
): Promise<TargetDescription> {
  const registers: RegisterInfo[] = [];
  const files: string[] = [];
  const state = { next: 0, architecture: undefined as string | undefined };

  const visit = async (annex: string, depth: number, stack: readonly string[]): Promise<void> => {
    if (stack.includes(annex))
      throw new VigilError('vmm', 'malformed', `target description includes ${annex} in a cycle`);
    if (depth > TARGET_DESCRIPTION_LIMITS.maxDepth) {
      throw new VigilError(
        'vmm',
        'bound',
        `target description nests includes deeper than ${TARGET_DESCRIPTION_LIMITS.maxDepth}`,
      );
    }
    if (files.length >= TARGET_DESCRIPTION_LIMITS.maxFiles) {
      throw new VigilError(
        'vmm',
        'bound',
        `target description has more than ${TARGET_DESCRIPTION_LIMITS.maxFiles} files`,
      );
    }
    files.push(annex);
    const xml = await read(annex);
    if (xml.length > TARGET_DESCRIPTION_LIMITS.maxFileChars) {
      throw new VigilError(
        'vmm',
        'bound',
        `target description file ${annex} is over ${TARGET_DESCRIPTION_LIMITS.maxFileChars} characters`,
      );
    }
    const text = stripComments(xml);
    let feature: string | undefined;
    for (const m of text.matchAll(TAG)) {
      const tag = m[1];
      if (tag === undefined) {
        feature = undefined; // </feature>
        continue;
      }
      const attrs = parseAttributes(m[2] ?? '');
      if (tag === 'architecture') {
        const end = text.indexOf('</architecture>', m.index! + m[0].length);
        if (end >= 0) state.architecture = decodeEntities(text.slice(m.index! + m[0].length, end).trim());
      } else if (tag === 'feature') {
        feature = attrs.get('name');
      } else if (tag === 'xi:include') {
        const href = attrs.get('href');
        if (!href) throw new VigilError('vmm', 'malformed', `xi:include without href in ${annex}`);
        await visit(href, depth + 1, [...stack, annex]);
      } else {
        registers.push(parseReg(attrs, state, feature, annex));
        if (registers.length > TARGET_DESCRIPTION_LIMITS.maxRegisters) {
          throw new VigilError(
            'vmm',
            'bound',
            `target description has more than ${TARGET_DESCRIPTION_LIMITS.maxRegisters} registers`,
          );
        }
      }
    }
  };

  await visit(root, 0, []);
  return { architecture: state.architecture, registers, files };
}

function parseReg(
  attrs: Map<string, string>,
  state: { next: number },
  feature: string | undefined,
  annex: string,
): RegisterInfo {
  const name = attrs.get('name');
  if (!name) throw new VigilError('vmm', 'malformed', `<reg> without name in ${annex}`);
  const bitsize = strictInt(attrs.get('bitsize'), `bitsize of ${name}`);
  if (bitsize < 1 || bitsize > TARGET_DESCRIPTION_LIMITS.maxBitsize || bitsize % 8 !== 0) {
    throw new VigilError('vmm', 'malformed', `register ${name} has unusable bitsize ${bitsize}`);
  }
  const explicit = attrs.get('regnum');
  const regnum = explicit === undefined ? state.next : strictInt(explicit, `regnum of ${name}`);
  if (regnum > 1_000_000) throw new VigilError('vmm', 'bound', `register ${name} has regnum ${regnum}`);
  state.next = regnum + 1;
  const reg: { -readonly [K in keyof RegisterInfo]: RegisterInfo[K] } = { name, regnum, bitsize };
  const type = attrs.get('type');
  const group = attrs.get('group');
  if (type !== undefined) reg.type = type;
  if (group !== undefined) reg.group = group;
  if (feature !== undefined) reg.feature = feature;
  return reg;
}

function strictInt(v: string | undefined, what: string): number {
  if (v === undefined || !/^\d{1,9}$/.test(v))
    throw new VigilError('vmm', 'malformed', `target description: bad ${what}: ${v}`);
  return Number(v);
}

function stripComments(xml: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const start = xml.indexOf('<!--', i);
    if (start < 0) return out + xml.slice(i);
    out += xml.slice(i, start);
    const end = xml.indexOf('-->', start + 4);
    if (end < 0) throw new VigilError('vmm', 'malformed', 'unterminated comment in target description');
    i = end + 3;
  }
}

function parseAttributes(s: string): Map<string, string> {
  const attrs = new Map<string, string>();
  for (const m of s.matchAll(ATTR)) attrs.set(m[1], decodeEntities(m[2] ?? m[3] ?? ''));
  return attrs;
}

function decodeEntities(s: string): string {
  return s.replace(
    /&(lt|gt|amp|quot|apos);/g,
    (_, e: string) => ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" })[e]!,
  );
}

/** Registers by name and number, and the layout of the `g` packet (registers in regnum order). */
export class RegisterMap {
  readonly description: TargetDescription;
  readonly #byName = new Map<string, RegisterInfo>();
  readonly #byNumber = new Map<number, RegisterInfo>();
  readonly #ordered: RegisterInfo[];

  constructor(description: TargetDescription) {
    this.description = description;
    for (const r of description.registers) {
      if (this.#byNumber.has(r.regnum)) {
        throw new VigilError('vmm', 'malformed', `target description numbers two registers ${r.regnum}`);
      }
      this.#byNumber.set(r.regnum, r);
      if (!this.#byName.has(r.name)) this.#byName.set(r.name, r);
    }
    this.#ordered = [...description.registers].sort((a, b) => a.regnum - b.regnum);
  }

  get registers(): readonly RegisterInfo[] {
    return this.#ordered;
  }

  byName(name: string): RegisterInfo | undefined {
    return this.#byName.get(name);
  }

  byNumber(regnum: number): RegisterInfo | undefined {
    return this.#byNumber.get(regnum);
  }

  /**
   * Split a `g` reply (already hex-decoded) into registers. The stub sends registers 0, 1, 2… in order
   * and may stop early (registers beyond the reply are then read with `p`). A gap in numbering ends
   * the layout, since the reply cannot say how wide the missing register is. `unavailable` holds
   * the byte offsets of "xx" registers.
   */
  splitG(data: Buffer, unavailable: ReadonlySet<number> = new Set()): Map<string, Buffer | undefined> {
    const out = new Map<string, Buffer | undefined>();
    let offset = 0;
    let expect = this.#ordered[0]?.regnum ?? 0;
    if (expect !== 0) return out;
    for (const r of this.#ordered) {
      if (r.regnum !== expect) break;
      const size = r.bitsize / 8;
      if (offset + size > data.length) break;
      out.set(r.name, unavailable.has(offset) ? undefined : data.subarray(offset, offset + size));
      offset += size;
      expect++;
    }
    return out;
  }
}
