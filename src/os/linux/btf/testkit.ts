// Test support: writes BTF blobs word by word to the layout of include/uapi/linux/btf.h, independently
// of the parser, so tests can describe types the way the kernel's BTF encoder would emit them.
import { VigilError } from '../../../util/errors.js';
import { BTF_KIND } from './types.js';

type Kind = (typeof BTF_KIND)[keyof typeof BTF_KIND];

export interface HeaderOverrides {
  magic?: number;
  version?: number;
  flags?: number;
  hdrLen?: number;
  typeOff?: number;
  typeLen?: number;
  strOff?: number;
  strLen?: number;
}

export class BtfWriter {
  private readonly strings: string[] = [''];
  private readonly offsets = new Map<string, number>([['', 0]]);
  private strBytes = 1;
  private readonly words: number[] = [];
  private next = 1;

  /** Offset of a string in the string section (deduplicated). */
  str(s: string): number {
    const hit = this.offsets.get(s);
    if (hit !== undefined) return hit;
    const off = this.strBytes;
    this.strings.push(s);
    this.offsets.set(s, off);
    this.strBytes += Buffer.byteLength(s, 'latin1') + 1;
    return off;
  }

  /** Append a btf_type and its trailing words; returns the new type id. */
  type(
    name: string,
    kind: Kind,
    vlen: number,
    kindFlag: boolean,
    sizeOrType: number,
    extra: number[] = [],
  ): number {
    const info = ((kindFlag ? 1 : 0) * 2 ** 31 + kind * 2 ** 24 + vlen) >>> 0;
    this.words.push(this.str(name), info, sizeOrType >>> 0, ...extra.map((x) => x >>> 0));
    return this.next++;
  }

  /** Id of the last type written (the next one gets this + 1). */
  lastId(): number {
    return this.next - 1;
  }

  /** Raw words (for malformed records). Counts as one type id. */
  raw(...words: number[]): number {
    this.words.push(...words.map((x) => x >>> 0));
    return this.next++;
  }

  int(
    name: string,
    size: number,
    opts: { bits?: number; offset?: number; signed?: boolean; char?: boolean; bool?: boolean } = {},
  ) {
    const enc = (opts.signed ? 1 : 0) | (opts.char ? 2 : 0) | (opts.bool ? 4 : 0);
    const data = (enc << 24) | ((opts.offset ?? 0) << 16) | (opts.bits ?? size * 8);
    return this.type(name, BTF_KIND.INT, 0, false, size, [data]);
  }
  ptr(type: number): number {
    return this.type('', BTF_KIND.PTR, 0, false, type);
  }
  array(elem: number, index: number, nelems: number): number {
    return this.type('', BTF_KIND.ARRAY, 0, false, 0, [elem, index, nelems]);
  }
  /** members: [name, type, bitOffset, bitfieldSize?]; kindFlag encodes bitfield sizes in offsets. */
  struct(name: string, size: number, members: [string, number, number, number?][], kindFlag = false): number {
    return this.composite(BTF_KIND.STRUCT, name, size, members, kindFlag);
  }
  union(name: string, size: number, members: [string, number, number, number?][], kindFlag = false): number {
    return this.composite(BTF_KIND.UNION, name, size, members, kindFlag);
  }
  private composite(
    kind: Kind,
    name: string,
    size: number,
    members: [string, number, number, number?][],
    kf: boolean,
  ) {
    const extra: number[] = [];
    for (const [n, t, off, bf] of members) {
      extra.push(this.str(n), t, kf ? ((bf ?? 0) << 24) | off : off);
    }
    return this.type(name, kind, members.length, kf, size, extra);
  }
  enum(name: string, size: number, values: [string, number][], signed = false): number {
    const extra: number[] = [];
    for (const [n, v] of values) extra.push(this.str(n), v);
    return this.type(name, BTF_KIND.ENUM, values.length, signed, size, extra);
  }
  enum64(name: string, size: number, values: [string, bigint][], signed = false): number {
    const extra: number[] = [];
    for (const [n, v] of values) {
      const u = BigInt.asUintN(64, v);
      extra.push(this.str(n), Number(u & 0xffffffffn), Number(u >> 32n));
    }
    return this.type(name, BTF_KIND.ENUM64, values.length, signed, size, extra);
  }
  fwd(name: string, union = false): number {
    return this.type(name, BTF_KIND.FWD, 0, union, 0);
  }
  typedef(name: string, type: number): number {
    return this.type(name, BTF_KIND.TYPEDEF, 0, false, type);
  }
  volatile(type: number): number {
    return this.type('', BTF_KIND.VOLATILE, 0, false, type);
  }
  const(type: number): number {
    return this.type('', BTF_KIND.CONST, 0, false, type);
  }
  restrict(type: number): number {
    return this.type('', BTF_KIND.RESTRICT, 0, false, type);
  }
  func(name: string, proto: number, linkage = 1): number {
    return this.type(name, BTF_KIND.FUNC, linkage, false, proto);
  }
  /** params: [name, type]; variadic appends the (0, 0) marker. */
  funcProto(ret: number, params: [string, number][], variadic = false): number {
    const extra: number[] = [];
    for (const [n, t] of params) extra.push(this.str(n), t);
    if (variadic) extra.push(0, 0);
    return this.type('', BTF_KIND.FUNC_PROTO, params.length + (variadic ? 1 : 0), false, ret, extra);
  }
  var(name: string, type: number, linkage = 1): number {
    return this.type(name, BTF_KIND.VAR, 0, false, type, [linkage]);
  }
  datasec(name: string, size: number, vars: [number, number, number][]): number {
    return this.type(name, BTF_KIND.DATASEC, vars.length, false, size, vars.flat());
  }
  float(name: string, size: number): number {
    return this.type(name, BTF_KIND.FLOAT, 0, false, size);
  }
  declTag(name: string, type: number, componentIdx = -1): number {
    return this.type(name, BTF_KIND.DECL_TAG, 0, false, type, [componentIdx]);
  }
  typeTag(name: string, type: number): number {
    return this.type(name, BTF_KIND.TYPE_TAG, 0, false, type);
  }

  /** The blob: 24-byte header, type section, string section (header fields overridable). */
  blob(h: HeaderOverrides = {}): Buffer {
    const types = Buffer.alloc(this.words.length * 4);
    this.words.forEach((w, i) => types.writeUInt32LE(w, i * 4));
    const strs = Buffer.from(this.strings.map((s) => s + '\0').join(''), 'latin1');
    const header = Buffer.alloc(24);
    header.writeUInt16LE(h.magic ?? 0xeb9f, 0);
    header[2] = h.version ?? 1;
    header[3] = h.flags ?? 0;
    header.writeUInt32LE(h.hdrLen ?? 24, 4);
    header.writeUInt32LE(h.typeOff ?? 0, 8);
    header.writeUInt32LE(h.typeLen ?? types.length, 12);
    header.writeUInt32LE(h.strOff ?? types.length, 16);
    header.writeUInt32LE(h.strLen ?? strs.length, 20);
    return Buffer.concat([header, types, strs]);
  }
}

/** Bytes-backed virtual memory for view tests: sparse regions; reads outside them are 'unmapped'. */
export class FakeMemory {
  private readonly regions: { at: bigint; bytes: Buffer }[] = [];
  reads = 0;

  put(at: bigint, bytes: Buffer): void {
    this.regions.push({ at, bytes });
  }

  read(va: bigint, length: number): Buffer {
    this.reads++;
    for (const r of this.regions) {
      if (va >= r.at && va + BigInt(length) <= r.at + BigInt(r.bytes.length)) {
        const off = Number(va - r.at);
        return Buffer.from(r.bytes.subarray(off, off + length));
      }
    }
    throw new VigilError('arch', 'unmapped', `unmapped read of ${length} at 0x${va.toString(16)}`);
  }
}

/**
 * A small kernel-like type set shared by the registry and view tests: list_head, task_struct with an
 * anonymous union holding an anonymous struct, bitfields in both encodings, a char array, pointers,
 * a flexible-ish array in struct pid, an enum, typedefs and a function pointer.
 */
export function sampleKernel() {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const uint = w.int('unsigned int', 4);
  const ulong = w.int('long unsigned int', 8);
  const long = w.int('long int', 8, { signed: true });
  const char = w.int('char', 1, { signed: true, char: true });
  const u8 = w.int('unsigned char', 1);
  const bool = w.int('_Bool', 1, { bool: true });
  const u64 = w.typedef('u64', ulong);
  const pidT = w.typedef('pid_t', int);
  // list_head points at itself: its members use the pointer type written right after it.
  const selfPtr = w.lastId() + 2;
  const listHead = w.struct('list_head', 16, [
    ['next', selfPtr, 0],
    ['prev', selfPtr, 64],
  ]);
  const listPtr = w.ptr(listHead);
  const mmFwd = w.fwd('mm_struct');
  const mm = w.struct('mm_struct', 24, [
    ['mmap_base', ulong, 0],
    ['task_size', ulong, 64],
    ['pgd', w.ptr(ulong), 128],
  ]);
  const mmPtr = w.ptr(mm);
  const nsFwd = w.fwd('pid_namespace');
  const upid = w.struct('upid', 16, [
    ['nr', int, 0],
    ['ns', w.ptr(nsFwd), 64],
  ]);
  const upidArr = w.array(upid, int, 1);
  const pid = w.struct('pid', 24, [
    ['count', uint, 0],
    ['level', uint, 32],
    ['numbers', upidArr, 64],
  ]);
  const pidPtr = w.ptr(pid);
  const pidType = w.enum('pid_type', 4, [
    ['PIDTYPE_PID', 0],
    ['PIDTYPE_TGID', 1],
    ['PIDTYPE_PGID', 2],
    ['PIDTYPE_SID', 3],
    ['PIDTYPE_MAX', 4],
  ]);
  const se = w.struct('sched_entity', 16, [
    ['exec_start', u64, 0],
    ['vruntime', u64, 64],
  ]);
  const inner = w.struct('', 8, [
    ['inner_x', int, 0],
    ['inner_y', int, 32],
  ]);
  const anonUnion = w.union('', 8, [
    ['as_long', long, 0],
    ['', inner, 0],
  ]);
  const comm = w.array(char, int, 16);
  const constChar = w.const(char);
  const charPtr = w.ptr(constChar);
  const voidPtr = w.ptr(0);
  const volLong = w.volatile(long);
  const taskFwd = w.fwd('task_struct');
  const cbProto = w.funcProto(int, [['task', w.ptr(taskFwd)]]);
  const cbPtr = w.ptr(cbProto);
  const task = w.struct(
    'task_struct',
    128,
    [
      ['state', volLong, 0],
      ['tasks', listHead, 64],
      ['', anonUnion, 192],
      ['pid', pidT, 256],
      ['in_execve', uint, 288, 1],
      ['in_iowait', uint, 289, 1],
      ['sbf', int, 290, 3],
      ['wide', ulong, 293, 40],
      ['comm', comm, 384],
      ['se', se, 512],
      ['mm', mmPtr, 640],
      ['thread_pid', pidPtr, 704],
      ['name', charPtr, 768],
      ['private', voidPtr, 832],
      ['type', pidType, 896],
      ['flag', bool, 928],
      ['small', u8, 936],
      ['callback', cbPtr, 960],
    ],
    true,
  );
  // Old-style bitfields (kind_flag 0): the width lives in the INT type.
  const int3 = w.int('int', 4, { signed: true, bits: 3 });
  const uint5 = w.int('unsigned int', 4, { bits: 5 });
  const oldBf = w.struct('old_bf', 4, [
    ['x', int3, 0],
    ['y', uint5, 3],
  ]);
  const taskTd = w.typedef('task_t', w.const(task));
  w.typedef('anon_pair_t', inner);
  // typedef loop_a -> typedef loop_b -> loop_a.
  const loopA = w.typedef('loop_a', w.lastId() + 2);
  const loopB = w.typedef('loop_b', loopA);
  return {
    blob: w.blob(),
    ids: {
      int,
      uint,
      ulong,
      char,
      u64,
      pidT,
      listHead,
      listPtr,
      mmFwd,
      mm,
      mmPtr,
      upid,
      pid,
      pidType,
      se,
      inner,
      anonUnion,
      comm,
      charPtr,
      voidPtr,
      task,
      taskFwd,
      oldBf,
      taskTd,
      loopA,
      loopB,
      cbPtr,
    },
  };
}
