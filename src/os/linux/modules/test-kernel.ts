// Test support: a small synthetic kernel for the module and table walkers. Real x86-64 page tables over a
// Buffer (arch's test memory), BTF written by the BTF testkit with the kernel's own type and member names,
// and a symbol table — so walkers run unchanged, and tests can corrupt any pointer they like.
//
// Virtual layout (4-level paging, everything mapped linearly):
//   KERNEL_TEXT  0xffffffff81000000  text 960 KiB · init text 64 KiB at +1 MiB · data from +2 MiB · _end +4 MiB
//   MODULE_AREA  0xffffffffc0000000  2 MiB for fake module memory
import { Epoch } from '../../../arch/epoch.js';
import { PageTableAddressSpace, PagingCache } from '../../../arch/x86_64/index.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../../../arch/x86_64/test-memory.js';
import { VigilError } from '../../../util/errors.js';
import { BtfWriter } from '../btf/testkit.js';
import { parseBtf, StructView, TypeRegistry, type TypeRef } from '../btf/index.js';
import { SymbolTable, type KernelSymbol } from '../kallsyms/symbol-table.js';
import { WalkIssues } from '../walk.js';
import type { KernelAccess } from './access.js';

export const KERNEL_TEXT = 0xffffffff81000000n;
export const TEXT_END = KERNEL_TEXT + 0xf0000n;
export const INIT_TEXT = KERNEL_TEXT + 0x100000n;
export const KERNEL_DATA = KERNEL_TEXT + 0x200000n;
export const KERNEL_END = KERNEL_TEXT + 0x400000n;
export const MODULE_AREA = 0xffffffffc0000000n;
const MODULE_AREA_SIZE = 0x200000n;
const PA_KERNEL = 0n;
const PA_MODULES = 0x400000n;
const PA_TABLES = 0x700000n;
const RAM = 0x800000;

/** Kernel text functions of the fake, in address order from KERNEL_TEXT + 0x1000, 0x100 apart. */
export const TEXT_FUNCTIONS = [
  '__x64_sys_read',
  '__x64_sys_write',
  '__x64_sys_open',
  '__x64_sys_close',
  '__x64_sys_ni_syscall',
  'asm_exc_divide_error',
  'asm_exc_debug',
  'asm_exc_page_fault',
  'asm_common_interrupt',
  'entry_SYSCALL_64',
] as const;

export interface FakeKernelOptions {
  /** struct module memory: 6.1's core_layout/init_layout or 6.4's mem[]. Default 'layout'. */
  layout?: 'layout' | 'mem';
  /** Width of module size fields: the kernel's are unsigned int; 8 lets a test plant 2^60. */
  sizeBytes?: 4 | 8;
  /** sys_call_table entries (the next symbol follows at the next 32-byte boundary). Default 8. */
  syscalls?: number;
  /** Leave out the symbol after sys_call_table, so only the walker's bound limits it. */
  noSymbolAfterSyscalls?: boolean;
}

export interface FakeModuleSpec {
  name: string | Buffer;
  state?: number;
  base?: bigint;
  size?: bigint;
  initBase?: bigint;
  initSize?: bigint;
  taints?: bigint;
  refcnt?: number;
}

export const MOD_STATE = { LIVE: 0, COMING: 1, GOING: 2, UNFORMED: 3 } as const;

export class FakeKernel implements KernelAccess {
  readonly memory = new BufferPhysicalMemory(RAM);
  readonly epoch = new Epoch();
  readonly types: TypeRegistry;
  readonly symbols: SymbolTable;
  readonly space: PageTableAddressSpace;
  issues = new WalkIssues();
  readonly options: Required<FakeKernelOptions>;
  /** Addresses of the fake's variables. */
  readonly at: Record<
    'modules' | 'moduleKset' | 'kset' | 'moduleKtype' | 'taintedMask' | 'sysCallTable' | 'idtTable',
    bigint
  >;
  #heap = KERNEL_DATA + 0x10000n;

  constructor(options: FakeKernelOptions = {}) {
    this.options = {
      layout: options.layout ?? 'layout',
      sizeBytes: options.sizeBytes ?? 4,
      syscalls: options.syscalls ?? 8,
      noSymbolAfterSyscalls: options.noSymbolAfterSyscalls ?? false,
    };
    const builder = new PageTableBuilder(this.memory, 4, PA_TABLES);
    builder.mapRange(KERNEL_TEXT, PA_KERNEL, KERNEL_END - KERNEL_TEXT);
    builder.mapRange(MODULE_AREA, PA_MODULES, MODULE_AREA_SIZE);
    this.space = new PageTableAddressSpace(this.memory, builder.root, 4, new PagingCache(this.epoch));
    this.types = new TypeRegistry(parseBtf(writeTypes(this.options)));

    const d = KERNEL_DATA;
    this.at = {
      modules: d,
      moduleKset: d + 0x10n,
      kset: d + 0x40n,
      moduleKtype: d + 0x100n,
      taintedMask: d + 0x200n,
      sysCallTable: d + 0x1000n,
      idtTable: d + 0x8000n,
    };
    const syms: KernelSymbol[] = [
      { name: '_text', type: 'T', address: KERNEL_TEXT },
      { name: '_stext', type: 'T', address: KERNEL_TEXT },
      { name: '_etext', type: 'T', address: TEXT_END },
      { name: 'early_idt_handler_array', type: 'T', address: INIT_TEXT },
      { name: '_sinittext', type: 'T', address: INIT_TEXT },
      { name: '_einittext', type: 'T', address: INIT_TEXT + 0x10000n },
      { name: '_end', type: 'B', address: KERNEL_END },
      { name: 'modules', type: 'D', address: this.at.modules },
      { name: 'module_kset', type: 'B', address: this.at.moduleKset },
      { name: 'module_ktype', type: 'D', address: this.at.moduleKtype },
      { name: 'tainted_mask', type: 'b', address: this.at.taintedMask },
      { name: 'sys_call_table', type: 'D', address: this.at.sysCallTable },
      { name: 'idt_table', type: 'b', address: this.at.idtTable },
      ...TEXT_FUNCTIONS.map((name) => ({ name, type: 'T', address: this.fn(name) })),
    ];
    if (!this.options.noSymbolAfterSyscalls) {
      const n = BigInt(this.options.syscalls) * 8n;
      syms.push({ name: 'vdso_mapping', type: 'd', address: this.at.sysCallTable + ((n + 31n) & ~31n) });
    }
    this.symbols = SymbolTable.fromSymbols(syms);

    // Empty lists point at themselves; module_kset points at a kset with an empty list.
    this.writeU64(this.at.modules, this.at.modules);
    this.writeU64(this.at.modules + 8n, this.at.modules);
    this.writeU64(this.at.moduleKset, this.at.kset);
    const ksetList = this.at.kset + BigInt(this.types.offsetof('kset', 'list'));
    this.writeU64(ksetList, ksetList);
    this.writeU64(ksetList + 8n, ksetList);
    for (let nr = 0; nr < this.options.syscalls; nr++) {
      this.writeU64(this.at.sysCallTable + BigInt(nr) * 8n, this.fn(TEXT_FUNCTIONS[Math.min(nr, 4)]!));
    }
  }

  /** Address of a fake text function. */
  fn(name: (typeof TEXT_FUNCTIONS)[number]): bigint {
    return KERNEL_TEXT + 0x1000n + BigInt(TEXT_FUNCTIONS.indexOf(name)) * 0x100n;
  }

  // KernelAccess, as Kernel implements it.
  view = (type: TypeRef, va: bigint): StructView => new StructView(this.types, type, va, this.space);
  sym = (name: string): bigint => {
    const va = this.symbols.address(name);
    if (va === undefined) throw new VigilError('os', 'not-found', `kernel symbol ${name} not found`);
    return va;
  };
  readPointer = (va: bigint): bigint | undefined => this.space.tryRead(va, 8)?.readBigUInt64LE(0);
  symbolize = (va: bigint): string | undefined => this.symbols.symbolize(va);

  /** Physical address of a fake virtual address. */
  pa(va: bigint): bigint {
    if (va >= KERNEL_TEXT && va < KERNEL_END) return va - KERNEL_TEXT + PA_KERNEL;
    if (va >= MODULE_AREA && va < MODULE_AREA + MODULE_AREA_SIZE) return va - MODULE_AREA + PA_MODULES;
    throw new Error(`fake kernel: 0x${va.toString(16)} is not mapped`);
  }

  writeU64(va: bigint, v: bigint): void {
    this.memory.writeU64(this.pa(va), v);
  }
  writeU32(va: bigint, v: number): void {
    this.memory.bytes.writeUInt32LE(v >>> 0, Number(this.pa(va)));
  }
  write(va: bigint, bytes: Uint8Array): void {
    this.memory.write(this.pa(va), bytes);
  }

  /** Zeroed kernel memory (8-byte aligned) from the fake's data area. */
  alloc(size: number): bigint {
    const va = this.#heap;
    this.#heap += (BigInt(size) + 7n) & ~7n;
    if (this.#heap > KERNEL_END) throw new Error('fake kernel: data area full');
    this.write(va, Buffer.alloc(size));
    return va;
  }

  off(type: string, path: string): bigint {
    return BigInt(this.types.offsetof(type, path));
  }

  /** Insert `node` after `prev` in a circular list_head list. */
  listAdd(prev: bigint, node: bigint): void {
    const next = this.readPointer(prev)!;
    this.writeU64(node, next);
    this.writeU64(node + 8n, prev);
    this.writeU64(prev, node);
    this.writeU64(next + 8n, node);
  }

  /** A struct module on the `modules` list (at the head, as the kernel's list_add_rcu puts it). */
  addModule(spec: FakeModuleSpec): bigint {
    const m = this.alloc(this.types.sizeof('module'));
    const name = typeof spec.name === 'string' ? Buffer.from(spec.name + '\0', 'latin1') : spec.name;
    this.write(m + this.off('module', 'name'), name.subarray(0, 56));
    this.writeU32(m + this.off('module', 'state'), spec.state ?? MOD_STATE.LIVE);
    const base = spec.base ?? MODULE_AREA;
    const size = spec.size ?? 0x1000n;
    const writeSize = (va: bigint, v: bigint) =>
      this.options.sizeBytes === 8 ? this.writeU64(va, v) : this.writeU32(va, Number(v));
    const region = (path: string, b: bigint, s: bigint) => {
      this.writeU64(m + this.off('module', `${path}.base`), b);
      writeSize(m + this.off('module', `${path}.size`), s);
    };
    if (this.options.layout === 'layout') {
      region('core_layout', base, size);
      region('init_layout', spec.initBase ?? 0n, spec.initSize ?? 0n);
    } else {
      region('mem[0]', base, size); // MOD_TEXT
      region('mem[4]', spec.initBase ?? 0n, spec.initSize ?? 0n); // MOD_INIT_TEXT
    }
    this.writeU64(m + this.off('module', 'taints'), spec.taints ?? 0n);
    this.writeU32(m + this.off('module', 'refcnt.counter'), spec.refcnt ?? 1);
    for (const l of ['source_list', 'target_list']) {
      const h = m + this.off('module', l);
      this.writeU64(h, h);
      this.writeU64(h + 8n, h);
    }
    this.listAdd(this.at.modules, m + this.off('module', 'list'));
    return m;
  }

  /** Record that module `user` uses `used` (struct module_use on used->source_list). */
  addUse(used: bigint, user: bigint): void {
    const u = this.alloc(this.types.sizeof('module_use'));
    this.writeU64(u + this.off('module_use', 'source'), user);
    this.writeU64(u + this.off('module_use', 'target'), used);
    const head = used + this.off('module', 'source_list');
    const prev = this.readPointer(head + 8n)!; // list_add_tail
    this.listAdd(prev, u + this.off('module_use', 'source_list'));
  }

  /** A sysfs module kobject on module_kset's list (tail, as kobj_kset_join adds it). Returns the kobject. */
  addKobject(name: string, module?: bigint): bigint {
    const mk =
      module !== undefined
        ? module + this.off('module', 'mkobj')
        : this.alloc(this.types.sizeof('module_kobject'));
    const kobj = mk + this.off('module_kobject', 'kobj');
    const str = this.alloc(name.length + 1);
    this.write(str, Buffer.from(name + '\0', 'latin1'));
    this.writeU64(kobj + this.off('kobject', 'name'), str);
    this.writeU64(kobj + this.off('kobject', 'ktype'), this.at.moduleKtype);
    this.writeU64(mk + this.off('module_kobject', 'mod'), module ?? 0n);
    const head = this.at.kset + this.off('kset', 'list');
    const prev = this.readPointer(head + 8n)!;
    this.listAdd(prev, kobj + this.off('kobject', 'entry'));
    return kobj;
  }

  /** Write IDT gate `vector` in the CPU's format. */
  setGate(
    vector: number,
    handler: bigint,
    gate: { type?: number; dpl?: number; ist?: number; present?: boolean; selector?: number } = {},
  ): void {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(Number(handler & 0xffffn), 0);
    b.writeUInt16LE(gate.selector ?? 0x10, 2);
    b[4] = (gate.ist ?? 0) & 7;
    b[5] = ((gate.present ?? true) ? 0x80 : 0) | (((gate.dpl ?? 0) & 3) << 5) | ((gate.type ?? 0xe) & 0xf);
    b.writeUInt16LE(Number((handler >> 16n) & 0xffffn), 6);
    b.writeUInt32LE(Number((handler >> 32n) & 0xffffffffn), 8);
    this.write(this.at.idtTable + BigInt(vector) * 16n, b);
  }
}

/** The kernel types the walkers read, by the kernel's names, at 6.1-like offsets. */
function writeTypes(o: Required<FakeKernelOptions>): Buffer {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const uint = w.int('unsigned int', 4);
  const ulong = w.int('long unsigned int', 8);
  const char = w.int('char', 1, { signed: true, char: true });
  const voidPtr = w.ptr(0);
  const charPtr = w.ptr(char);
  const sizeT = o.sizeBytes === 8 ? ulong : uint;
  const selfPtr = w.lastId() + 2;
  const listHead = w.struct('list_head', 16, [
    ['next', selfPtr, 0],
    ['prev', selfPtr, 64],
  ]);
  w.ptr(listHead);
  const atomic = w.struct('', 4, [['counter', int, 0]]);
  const atomicT = w.typedef('atomic_t', atomic);
  const state = w.enum('module_state', 4, [
    ['MODULE_STATE_LIVE', 0],
    ['MODULE_STATE_COMING', 1],
    ['MODULE_STATE_GOING', 2],
    ['MODULE_STATE_UNFORMED', 3],
  ]);
  const kobject = w.struct('kobject', 64, [
    ['name', charPtr, 0],
    ['entry', listHead, 64],
    ['parent', voidPtr, 192],
    ['kset', voidPtr, 256],
    ['ktype', voidPtr, 320],
    ['sd', voidPtr, 384],
  ]);
  w.struct('kset', 96, [
    ['list', listHead, 0],
    ['list_lock', uint, 128],
    ['kobj', kobject, 192],
    ['uevent_ops', voidPtr, 704],
  ]);
  const name56 = w.array(char, int, 56);
  let memberTypes: [string, number, number][];
  if (o.layout === 'layout') {
    const layout = w.struct('module_layout', 16, [
      ['base', voidPtr, 0],
      ['size', sizeT, 64],
    ]);
    memberTypes = [
      ['core_layout', layout, 176 * 8],
      ['init_layout', layout, 192 * 8],
    ];
  } else {
    w.enum('mod_mem_type', 4, [
      ['MOD_TEXT', 0],
      ['MOD_DATA', 1],
      ['MOD_RODATA', 2],
      ['MOD_RO_AFTER_INIT', 3],
      ['MOD_INIT_TEXT', 4],
      ['MOD_INIT_DATA', 5],
      ['MOD_INIT_RODATA', 6],
      ['MOD_MEM_NUM_TYPES', 7],
    ]);
    const mem = w.struct('module_memory', 16, [
      ['base', voidPtr, 0],
      ['size', sizeT, 64],
    ]);
    memberTypes = [['mem', w.array(mem, int, 7), 176 * 8]];
  }
  // struct module and its pointer refer to each other: the pointer comes first, aimed two ids ahead.
  const modPtr = w.ptr(w.lastId() + 3);
  const mkobj = w.struct('module_kobject', 96, [
    ['kobj', kobject, 0],
    ['mod', modPtr, 512],
    ['drivers_dir', voidPtr, 576],
  ]);
  const module = w.struct('module', 352, [
    ['state', state, 0],
    ['list', listHead, 64],
    ['name', name56, 192],
    ['mkobj', mkobj, 640],
    ...memberTypes,
    ['taints', ulong, 304 * 8],
    ['refcnt', atomicT, 312 * 8],
    ['source_list', listHead, 320 * 8],
    ['target_list', listHead, 336 * 8],
  ]);
  if (module !== modPtr + 2) throw new Error('fake kernel: struct module id drifted');
  w.struct('module_use', 48, [
    ['source_list', listHead, 0],
    ['target_list', listHead, 128],
    ['source', modPtr, 256],
    ['target', modPtr, 320],
  ]);
  return w.blob();
}
