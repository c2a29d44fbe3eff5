// QEMU's migration stream (the savevm format, version 3), read far enough to find device state: vCPU
// registers that no other QEMU interface offers (MSR_LSTAR and friends live only in vmstate `cpu`).
//
// Layout (migration/savevm.c, scripts/analyze-migration.py in QEMU's tree):
//   "QEVM" be32(3)
//   0x07 configuration: be32 len + machine type, then subsections (capabilities, target page bits, uuid)
//   sections: 0x01 START / 0x04 FULL: be32 section id, u8 len + idstr, be32 instance id, be32 version id
//             0x02 PART / 0x03 END: be32 section id
//             each followed by 0x7e + be32 section id (the footer) when the machine type sends footers
//   0x00 EOF
//   0x06 be32 len + JSON: every device section's fields with their sizes in bytes (the "vmdesc")
// Device state has no length prefix: only the vmdesc says how long each field is, so it is found first
// (it ends the stream) and every device section is walked by it. The "ram" section has a format of its
// own (be64 address|flags records) that is walked and skipped, never kept.
//
// Every length is checked against what is left of the buffer before use; nothing is allocated from a
// size read in the stream (slices only). Anything unexpected is VigilError('vmm', 'malformed'), a
// feature this reader does not handle (compressed RAM, postcopy…) is 'unsupported'.
import { VigilError } from '../../util/errors.js';
import { sanitize } from '../../util/sanitize.js';

export const QEMU_VM_FILE_MAGIC = 0x5145564d; // "QEVM"
export const QEMU_VM_FILE_VERSION = 3;

export const SectionType = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  SUBSECTION: 0x05,
  VMDESCRIPTION: 0x06,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
  FOOTER: 0x7e,
} as const;

/** Flags in the low bits of a RAM record's be64 (migration/ram.c RAM_SAVE_FLAG_*). */
export const RamFlag = {
  ZERO: 0x02,
  MEM_SIZE: 0x04,
  PAGE: 0x08,
  EOS: 0x10,
  CONTINUE: 0x20,
  XBZRLE: 0x40,
  HOOK: 0x80,
  COMPRESS_PAGE: 0x100,
  MULTIFD_FLUSH: 0x200,
} as const;

/** MIG_CMD_PACKAGED: a nested stream with a be32 length (postcopy only). */
const MIG_CMD_PACKAGED = 8;

export interface StreamLimits {
  /** Longest vmdesc JSON accepted (default 16 MiB; QEMU 7.2 writes ~55 KB for a q35 guest). */
  maxDescriptionBytes?: number;
  /** Most sections (START/PART/END/FULL) walked (default 100,000). */
  maxSections?: number;
  /** Most fields over all device descriptions (default 1,000,000). */
  maxFields?: number;
  /** Deepest nesting of structs and subsections (default 16). */
  maxDepth?: number;
  /** Most RAM blocks in one MEM_SIZE list (default 4096). */
  maxRamBlocks?: number;
}

const DEFAULT_LIMITS: Required<StreamLimits> = {
  maxDescriptionBytes: 16 << 20,
  maxSections: 100_000,
  maxFields: 1_000_000,
  maxDepth: 16,
  maxRamBlocks: 4096,
};
const MAX_NAME = 255;
/** Longest page QEMU uses for RAM records (TARGET_PAGE_SIZE; 64 KiB on some targets). */
const MAX_PAGE_SIZE = 1 << 16;
const MAX_CAPABILITIES = 256;

// ---- the device description (vmdesc) -----------------------------------------------------------------

export interface FieldDesc {
  name: string;
  type: string;
  /** Bytes of one element as written. */
  size: number;
  /** Elements when QEMU compressed an array of equal elements into one entry. */
  count: number;
  /** Present for struct fields: their own fields (already counted in `size`). */
  struct?: VmsdDesc;
}

export interface VmsdDesc {
  vmsdName: string;
  version: number;
  fields: FieldDesc[];
  /** The subsections that were sent, in stream order. */
  subsections: VmsdDesc[];
}

export interface DeviceDesc extends VmsdDesc {
  /** The section's idstr, e.g. "cpu", "0000:00:02.0/virtio-net". */
  name: string;
  instanceId: number;
}

export interface StreamDescription {
  pageSize: number;
  devices: DeviceDesc[];
}

/** Where one field of a device section lies in the stream. */
export interface FieldLocation {
  name: string;
  type: string;
  /** Stream offset of the first element. */
  offset: number;
  size: number;
  count: number;
}

/** A device section's fields by offset; subsections by their vmsd name ("cpu/msr_smi_count"). */
export interface SectionLayout {
  offset: number;
  fields: FieldLocation[];
  subsections: Map<string, SectionLayout>;
}

export interface DeviceSection {
  name: string;
  instanceId: number;
  versionId: number;
  sectionId: number;
  /** Stream offset of the state (after the section header) and its length. */
  offset: number;
  length: number;
  layout: SectionLayout;
}

export interface RamSummary {
  /** RAM blocks listed in the MEM_SIZE record: name and size (in the stream whether sent or not). */
  blocks: { name: string; size: bigint }[];
  /** Pages sent with their content, and pages sent as a fill byte. */
  pages: number;
  zeroPages: number;
}

export interface MigrationStream {
  readonly buffer: Buffer;
  machineType: string;
  /** Capabilities the source declared in the configuration section (e.g. "x-ignore-shared"). */
  capabilities: string[];
  pageSize: number;
  devices: DeviceSection[];
  ram: RamSummary;
}

// ---- a bounded big-endian reader -------------------------------------------------------------------

class Cursor {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly end: number,
  ) {}

  need(n: number, what: string): void {
    if (!Number.isSafeInteger(n) || n < 0 || this.pos + n > this.end) {
      throw malformed(
        `truncated at offset ${this.pos}: ${what} needs ${n} bytes, ${this.end - this.pos} left`,
      );
    }
  }
  peek(): number | undefined {
    return this.pos < this.end ? this.buf[this.pos] : undefined;
  }
  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }
  be16(what: string): number {
    this.need(2, what);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  be32(what: string): number {
    this.need(4, what);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  be64(what: string): bigint {
    this.need(8, what);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  skip(n: number, what: string): void {
    this.need(n, what);
    this.pos += n;
  }
  /** A string of `len` bytes (printable ASCII only: QEMU's idstrs are). */
  str(len: number, what: string): string {
    this.need(len, what);
    const s = this.buf.toString('latin1', this.pos, this.pos + len);
    if (!/^[\x20-\x7e]*$/.test(s)) throw malformed(`${what} at offset ${this.pos} is not printable text`);
    this.pos += len;
    return s;
  }
  /** u8 length + string. */
  name(what: string): string {
    return this.str(this.u8(`${what} length`), what);
  }
}

const malformed = (message: string): VigilError =>
  new VigilError('vmm', 'malformed', `migration stream: ${message}`);
const unsupported = (message: string): VigilError =>
  new VigilError('vmm', 'unsupported', `migration stream: ${message}`);

// ---- the vmdesc ------------------------------------------------------------------------------------

/**
 * Find the vmdesc that ends the stream: 0x06, be32 length, JSON running exactly to the end of the buffer.
 * Returns the offset of the 0x06 byte. The JSON holds no control bytes, so the first match from the end
 * is the real one.
 */
export function findDescription(buf: Buffer, maxBytes = DEFAULT_LIMITS.maxDescriptionBytes): number {
  const lowest = Math.max(0, buf.length - 5 - maxBytes);
  for (let p = buf.length - 6; p >= lowest; p--) {
    if (buf[p] !== SectionType.VMDESCRIPTION) continue;
    if (buf.readUInt32BE(p + 1) === buf.length - p - 5 && buf[p + 5] === 0x7b /* { */) return p;
  }
  throw unsupported(
    'no device description (vmdesc) at its end: the machine may run with suppress-vmdesc=on, or the ' +
      'stream was cut short',
  );
}

/** Parse and bound the vmdesc JSON. */
export function parseDescription(json: Buffer | string, limits: StreamLimits = {}): StreamDescription {
  const lim = { ...DEFAULT_LIMITS, ...limits };
  const text = typeof json === 'string' ? json : json.toString('utf8');
  if (text.length > lim.maxDescriptionBytes) throw malformed(`vmdesc of ${text.length} bytes is too long`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new VigilError('vmm', 'malformed', 'migration stream: vmdesc is not JSON', { cause: e });
  }
  if (!isObject(raw)) throw malformed('vmdesc is not a JSON object');
  const pageSize = raw.page_size;
  if (
    typeof pageSize !== 'number' ||
    !Number.isInteger(pageSize) ||
    pageSize < 512 ||
    pageSize > MAX_PAGE_SIZE ||
    (pageSize & (pageSize - 1)) !== 0
  ) {
    throw malformed(`vmdesc page_size ${String(pageSize)} is not a power of two between 512 and 64 KiB`);
  }
  if (!Array.isArray(raw.devices)) throw malformed('vmdesc has no devices list');
  const budget = { fields: lim.maxFields };
  const devices: DeviceDesc[] = [];
  for (const d of raw.devices as unknown[]) {
    if (!isObject(d)) throw malformed('vmdesc device entry is not an object');
    const name = textField(d.name, 'device name');
    const instanceId = intField(d.instance_id, `instance_id of ${name}`, 0xffffffff);
    const vmsd = vmsdDesc(d, name, 0, lim.maxDepth, budget);
    devices.push({ ...vmsd, name, instanceId });
  }
  return { pageSize, devices };
}

function vmsdDesc(
  o: Record<string, unknown>,
  where: string,
  depth: number,
  maxDepth: number,
  budget: { fields: number },
): VmsdDesc {
  if (depth > maxDepth) throw malformed(`vmdesc nests deeper than ${maxDepth} levels at ${where}`);
  const vmsdName = o.vmsd_name === undefined ? where : textField(o.vmsd_name, `vmsd_name in ${where}`);
  const version = o.version === undefined ? 0 : intField(o.version, `version of ${where}`, 0xffffffff);
  if (!Array.isArray(o.fields)) throw malformed(`vmdesc entry ${sanitize(where, 80)} has no fields list`);
  const fields: FieldDesc[] = [];
  for (const f of o.fields as unknown[]) {
    if (--budget.fields < 0) throw malformed('vmdesc describes too many fields');
    if (!isObject(f)) throw malformed(`a field of ${sanitize(where, 80)} is not an object`);
    const name = textField(f.name, `field name in ${where}`);
    const at = `${where}.${name}`;
    const field: FieldDesc = {
      name,
      type: f.type === undefined ? 'unknown' : textField(f.type, `type of ${at}`),
      size: intField(f.size, `size of ${at}`, 0x7fffffff),
      count: f.array_len === undefined ? 1 : intField(f.array_len, `array_len of ${at}`, 0x7fffffff),
    };
    if (f.struct !== undefined) {
      if (!isObject(f.struct)) throw malformed(`struct of ${sanitize(at, 80)} is not an object`);
      field.struct = vmsdDesc(f.struct, at, depth + 1, maxDepth, budget);
    }
    fields.push(field);
  }
  const subsections: VmsdDesc[] = [];
  if (o.subsections !== undefined) {
    if (!Array.isArray(o.subsections)) throw malformed(`subsections of ${sanitize(where, 80)} is not a list`);
    for (const s of o.subsections as unknown[]) {
      if (!isObject(s)) throw malformed(`a subsection of ${sanitize(where, 80)} is not an object`);
      subsections.push(vmsdDesc(s, `${where}/subsection`, depth + 1, maxDepth, budget));
    }
  }
  return { vmsdName, version, fields, subsections };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function textField(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_NAME) {
    throw malformed(`vmdesc ${sanitize(what, 80)} is not a short string`);
  }
  return v;
}

function intField(v: unknown, what: string, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    throw malformed(`vmdesc ${sanitize(what, 80)} is not an integer in 0..${max}`);
  }
  return v;
}

// ---- walking the stream ------------------------------------------------------------------------------

/** Parse a whole migration stream held in memory. */
export function parseMigrationStream(buf: Buffer, limits: StreamLimits = {}): MigrationStream {
  const lim = { ...DEFAULT_LIMITS, ...limits };
  if (buf.length < 8) throw malformed(`${buf.length} bytes is too short for a header`);
  if (buf.readUInt32BE(0) !== QEMU_VM_FILE_MAGIC) throw malformed('no QEVM magic at its start');
  const version = buf.readUInt32BE(4);
  if (version !== QEMU_VM_FILE_VERSION) {
    throw unsupported(`file version ${version} (only ${QEMU_VM_FILE_VERSION} is known)`);
  }
  const descAt = findDescription(buf, lim.maxDescriptionBytes);
  const desc = parseDescription(buf.subarray(descAt + 5), lim);
  const byKey = new Map<string, DeviceDesc>();
  for (const d of desc.devices) byKey.set(`${d.name}\0${d.instanceId}`, d);

  // Everything up to the vmdesc; the EOF byte must be the last of it.
  const c = new Cursor(buf, descAt);
  c.pos = 8;
  const out: MigrationStream = {
    buffer: buf,
    machineType: '',
    capabilities: [],
    pageSize: desc.pageSize,
    devices: [],
    ram: { blocks: [], pages: 0, zeroPages: 0 },
  };
  const iterable = new Map<number, string>(); // section id → idstr of START sections ("ram")
  const ramState = { named: false };
  let sections = 0;
  for (;;) {
    const at = c.pos;
    const type = c.u8('section type');
    if (type === SectionType.EOF) break;
    if (type === SectionType.CONFIGURATION) {
      readConfiguration(c, out);
      continue;
    }
    if (type === SectionType.COMMAND) {
      const cmd = c.be16('command');
      if (cmd === MIG_CMD_PACKAGED) throw unsupported('a packaged (postcopy) command');
      c.skip(c.be16('command length'), 'command data');
      continue;
    }
    if (++sections > lim.maxSections) throw malformed(`more than ${lim.maxSections} sections`);
    if (type === SectionType.START || type === SectionType.FULL) {
      const sectionId = c.be32('section id');
      const name = c.name('section idstr');
      const instanceId = c.be32('instance id');
      const versionId = c.be32('version id');
      if (type === SectionType.START) {
        if (name !== 'ram')
          throw unsupported(`iterative section "${sanitize(name, 80)}" (only ram is known)`);
        if (versionId !== 4) throw unsupported(`ram section version ${versionId} (only 4 is known)`);
        iterable.set(sectionId, name);
        readRam(c, out, lim, ramState);
      } else {
        const d = byKey.get(`${name}\0${instanceId}`);
        if (!d) {
          throw malformed(`section "${sanitize(name, 80)}" instance ${instanceId} is not in the vmdesc`);
        }
        const offset = c.pos;
        const layout = walkVmsd(c, d, `${name}[${instanceId}]`);
        out.devices.push({ name, instanceId, versionId, sectionId, offset, length: c.pos - offset, layout });
      }
      readFooter(c, sectionId);
      continue;
    }
    if (type === SectionType.PART || type === SectionType.END) {
      const sectionId = c.be32('section id');
      if (iterable.get(sectionId) !== 'ram') {
        throw malformed(`section part at offset ${at} for unknown section id ${sectionId}`);
      }
      readRam(c, out, lim, ramState);
      readFooter(c, sectionId);
      continue;
    }
    throw malformed(`unknown section type 0x${type.toString(16)} at offset ${at}`);
  }
  if (c.pos !== descAt) {
    throw malformed(`${descAt - c.pos} bytes between the EOF marker (offset ${c.pos - 1}) and the vmdesc`);
  }
  return out;
}

function readFooter(c: Cursor, sectionId: number): void {
  // Machine types before QEMU 2.4 send no footers; later ones always do.
  if (c.peek() !== SectionType.FOOTER) return;
  c.pos++;
  const id = c.be32('section footer');
  if (id !== sectionId) throw malformed(`footer of section ${sectionId} names section ${id}`);
}

/**
 * The configuration section. QEMU 7.2 does not describe it in the vmdesc: its subsections are read by
 * their known layout (savevm.c vmstate_configuration).
 */
function readConfiguration(c: Cursor, out: MigrationStream): void {
  const len = c.be32('machine type length');
  if (len > MAX_NAME) throw malformed(`machine type of ${len} bytes`);
  out.machineType = c.str(len, 'machine type');
  while (c.peek() === SectionType.SUBSECTION) {
    c.pos++;
    const name = c.name('configuration subsection');
    c.be32('configuration subsection version');
    if (name === 'configuration/capabilities') {
      const n = c.be32('capability count');
      if (n > MAX_CAPABILITIES) throw malformed(`${n} capabilities`);
      for (let i = 0; i < n; i++) out.capabilities.push(c.name('capability'));
    } else if (name === 'configuration/target-page-bits') {
      c.be32('target page bits');
    } else if (name === 'configuration/uuid') {
      c.skip(16, 'uuid');
    } else {
      throw unsupported(`configuration subsection "${sanitize(name, 80)}"`);
    }
  }
}

/** One part of the ram section: records up to EOS. Page contents are skipped, never copied. */
function readRam(
  c: Cursor,
  out: MigrationStream,
  lim: Required<StreamLimits>,
  state: { named: boolean },
): void {
  const pageSize = BigInt(out.pageSize);
  const ignoreShared = out.capabilities.includes('x-ignore-shared');
  // Each record consumes at least 8 bytes, so this loop ends with the buffer.
  for (;;) {
    const at = c.pos;
    const word = c.be64('ram record');
    let flags = Number(word & (pageSize - 1n));
    const addr = word & ~(pageSize - 1n);
    if (flags & RamFlag.MEM_SIZE) {
      let remaining = addr;
      let blocks = 0;
      while (remaining > 0n) {
        if (++blocks > lim.maxRamBlocks) throw malformed(`more than ${lim.maxRamBlocks} RAM blocks`);
        const name = c.name('RAM block name');
        const size = c.be64('RAM block size');
        if (ignoreShared) c.be64('RAM block address');
        if (size === 0n) throw malformed(`RAM block "${sanitize(name, 80)}" of size 0`);
        out.ram.blocks.push({ name, size });
        remaining -= size;
      }
      if (remaining !== 0n) throw malformed(`RAM block sizes exceed the announced total at offset ${at}`);
      flags &= ~RamFlag.MEM_SIZE;
    }
    if (flags & (RamFlag.XBZRLE | RamFlag.COMPRESS_PAGE | RamFlag.HOOK)) {
      throw unsupported(`RAM record flags 0x${flags.toString(16)} (xbzrle, compression or RDMA)`);
    }
    if (flags & (RamFlag.ZERO | RamFlag.PAGE)) {
      if (flags & RamFlag.CONTINUE) {
        // The block named last, possibly in an earlier part (QEMU's loader keeps it across parts).
        if (!state.named) throw malformed(`RAM record at offset ${at} continues no block`);
      } else {
        c.name('RAM block name');
        state.named = true;
      }
      if (flags & RamFlag.ZERO) {
        c.skip(1, 'fill byte');
        out.ram.zeroPages++;
      } else {
        c.skip(out.pageSize, 'RAM page');
        out.ram.pages++;
      }
      flags &= ~(RamFlag.ZERO | RamFlag.PAGE | RamFlag.CONTINUE);
    }
    flags &= ~RamFlag.MULTIFD_FLUSH;
    if (flags & RamFlag.EOS) {
      if (flags !== RamFlag.EOS)
        throw malformed(`RAM flags 0x${flags.toString(16)} with EOS at offset ${at}`);
      return;
    }
    if (flags !== 0) throw malformed(`unknown RAM flags 0x${flags.toString(16)} at offset ${at}`);
  }
}

/**
 * Walk one vmstate (a device section or a subsection) by its description: fields by their sizes (a
 * struct's size covers its own nested subsections), then the subsections that were sent, each with its
 * 0x05 marker, name and version.
 */
function walkVmsd(c: Cursor, d: VmsdDesc, where: string): SectionLayout {
  const layout: SectionLayout = { offset: c.pos, fields: [], subsections: new Map() };
  for (const f of d.fields) {
    const bytes = f.size * f.count;
    layout.fields.push({ name: f.name, type: f.type, offset: c.pos, size: f.size, count: f.count });
    c.skip(bytes, `field ${sanitize(where, 80)}.${sanitize(f.name, 80)}`);
  }
  for (const s of d.subsections) {
    const at = c.pos;
    if (c.u8('subsection marker') !== SectionType.SUBSECTION) {
      throw malformed(
        `subsection ${sanitize(s.vmsdName, 80)} of ${sanitize(where, 80)} missing at offset ${at}`,
      );
    }
    const name = c.name('subsection name');
    if (name !== s.vmsdName) {
      throw malformed(
        `subsection at offset ${at} is "${sanitize(name, 80)}", vmdesc says "${sanitize(s.vmsdName, 80)}"`,
      );
    }
    c.be32('subsection version');
    layout.subsections.set(name, walkVmsd(c, s, name));
  }
  return layout;
}

// ---- reading fields -----------------------------------------------------------------------------------

/** The device sections named `name` (e.g. "cpu": one per vCPU, instance id = vCPU index). */
export function sectionsNamed(stream: MigrationStream, name: string): DeviceSection[] {
  return stream.devices.filter((d) => d.name === name);
}

/** Where field `name` of a section lies: its own fields first, then its subsections' (depth first). */
export function findField(layout: SectionLayout, name: string): FieldLocation | undefined {
  const own = layout.fields.find((f) => f.name === name);
  if (own) return own;
  for (const sub of layout.subsections.values()) {
    const hit = findField(sub, name);
    if (hit) return hit;
  }
  return undefined;
}

/** An unsigned big-endian integer field of 1, 2, 4 or 8 bytes (element `index` of an array). */
export function readUnsignedField(
  stream: MigrationStream,
  section: DeviceSection,
  name: string,
  index = 0,
): bigint | undefined {
  const f = findField(section.layout, name);
  if (!f) return undefined;
  if (![1, 2, 4, 8].includes(f.size)) {
    throw malformed(`field ${sanitize(name, 80)} of ${section.name} is ${f.size} bytes, not an integer`);
  }
  if (!Number.isInteger(index) || index < 0 || index >= f.count) {
    throw new VigilError('vmm', 'usage', `field ${name} has ${f.count} elements, no element ${index}`);
  }
  const at = f.offset + index * f.size;
  let v = 0n;
  for (let i = 0; i < f.size; i++) v = (v << 8n) | BigInt(stream.buffer[at + i]!);
  return v;
}
