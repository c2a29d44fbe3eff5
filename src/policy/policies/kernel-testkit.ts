// Test support for the kernel-integrity policies (memory-access, kernel-hooks, hidden-module): a small
// synthetic x86-64 kernel with real 4-level page tables over a Buffer, BTF written with the kernel's own
// type and member names (6.1 layouts), and the symbols those policies read — text with fentry nops, jump
// labels, static calls, rodata with sys_call_table and __jump_table, the IDT, ftrace, kprobes, the module
// list, sysfs kobjects, mod_tree and a module area. Tests write into it like a rootkit would.
//
// Virtual layout:
//   KT            0xffffffff81000000  text (1 MiB) · init text at +1.5 MiB · rodata at +2 MiB · data at +4 MiB
//   MODULE_AREA   0xffffffffc0000000  1 MiB of 4 KiB pages (module memory, ftrace trampolines)
//   CEA_IDT       0xfffffe0000000000  the read-only IDT alias, mapped to idt_table's page
import { Epoch } from '../../arch/epoch.js';
import { PageTableAddressSpace, PagingCache } from '../../arch/x86_64/index.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../../arch/x86_64/test-memory.js';
import { BtfWriter } from '../../os/linux/btf/testkit.js';
import { parseBtf, StructView, TypeRegistry, type TypeRef } from '../../os/linux/btf/index.js';
import { SymbolTable, type KernelSymbol } from '../../os/linux/kallsyms/symbol-table.js';
import { WalkIssues } from '../../os/linux/walk.js';
import { VigilError } from '../../util/errors.js';

export const KT = 0xffffffff81000000n;
export const TEXT_SIZE = 0x100000n;
export const INIT_TEXT = KT + 0x180000n;
export const RODATA = KT + 0x200000n;
export const RODATA_SIZE = 0x40000n;
export const DATA = KT + 0x400000n;
export const KERNEL_END = KT + 0x800000n;
export const MODULE_AREA = 0xffffffffc0000000n;
export const MODULE_AREA_SIZE = 0x100000n;
export const CEA_IDT = 0xfffffe0000000000n;
const PA_MODULES = 0x800000n;
const PA_TABLES = 0xe00000n;
const RAM = 0x1000000;

/** Functions, from KT + 0x1000, 0x100 apart. Each starts with the fentry nop (an ftrace record). */
export const FUNCTIONS = [
  '__x64_sys_read',
  '__x64_sys_write',
  '__x64_sys_open',
  '__x64_sys_close',
  'sys_ni_syscall',
  '__x64_sys_kill',
  '__x64_sys_getdents64',
  'tcp4_seq_show',
  'vfs_read',
  'asm_exc_divide_error',
  'asm_exc_page_fault',
  'asm_int80_emulation',
  'ftrace_caller',
  'ftrace_regs_caller',
  'ftrace_stub',
  'entry_SYSCALL_64',
  'aggr_pre_handler',
  'kprobe_ftrace_handler',
  'endbr_function',
] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

/** Syscall table: 8 entries. */
export const SYSCALLS: readonly FunctionName[] = [
  '__x64_sys_read',
  '__x64_sys_write',
  '__x64_sys_open',
  '__x64_sys_close',
  'sys_ni_syscall',
  '__x64_sys_kill',
  'sys_ni_syscall',
  '__x64_sys_getdents64',
];

export const NOP5 = Buffer.from([0x0f, 0x1f, 0x44, 0x00, 0x00]);
export const NOP2 = Buffer.from([0x66, 0x90]);
const ENDBR64 = Buffer.from([0xf3, 0x0f, 0x1e, 0xfa]);

/** Variables' addresses (data unless noted). */
const AT = {
  sysCallTable: RODATA + 0x400n, // rodata
  afterSysCallTable: RODATA + 0x440n,
  jumpTable: RODATA + 0x1000n, // rodata: 3 entries
  staticCallSites: RODATA + 0x2000n, // rodata: 1 site
  roString: RODATA + 0x3000n,
  modules: DATA,
  moduleKset: DATA + 0x10n,
  kset: DATA + 0x40n,
  moduleKtype: DATA + 0x100n,
  ftraceOpsList: DATA + 0x200n,
  ftraceListEnd: DATA + 0x300n,
  ftracePagesStart: DATA + 0x400n,
  modTree: DATA + 0x500n,
  kprobeTable: DATA + 0x600n, // 64 heads
  afterKprobeTable: DATA + 0x800n,
  syscallsMetadata: DATA + 0x900n,
  idtTable: DATA + 0x10000n, // page-aligned
} as const;

/** Places inside functions that the kernel patches at run time. */
export const SITES = {
  /** A 5-byte jump label in vfs_read (+0x10), target vfs_read+0x40. */
  jump5: { fn: 'vfs_read' as FunctionName, at: 0x10, target: 0x40 },
  /** A 2-byte jump label in vfs_read (+0x20), target vfs_read+0x30. */
  jump2: { fn: 'vfs_read' as FunctionName, at: 0x20, target: 0x30 },
  /** A static call site in __x64_sys_write (+0x10) calling vfs_read. */
  staticCall: { fn: '__x64_sys_write' as FunctionName, at: 0x10 },
};

export interface TestModuleSpec {
  name: string;
  /** Core memory base (module area); the struct module is placed at base + structAt. */
  base: bigint;
  size: bigint;
  structAt?: bigint;
  state?: number;
  taints?: bigint;
  /** Put it on the modules list (default true), sysfs (default true), mod_tree (default true). */
  list?: boolean;
  sysfs?: boolean;
  modTree?: boolean;
}

export class IntegrityTestKernel {
  readonly memory = new BufferPhysicalMemory(RAM);
  readonly epoch = new Epoch();
  readonly types: TypeRegistry;
  readonly symbols: SymbolTable;
  readonly space: PageTableAddressSpace;
  readonly builder: PageTableBuilder;
  issues = new WalkIssues();
  readonly at = AT;
  #heap = DATA + 0x20000n;
  #modTreeNodes: bigint[] = [];

  constructor() {
    this.builder = new PageTableBuilder(this.memory, 4, PA_TABLES);
    for (let off = 0n; off < KERNEL_END - KT; off += 0x200000n) this.builder.map(KT + off, off, 0x200000n);
    this.builder.mapRange(MODULE_AREA, PA_MODULES, MODULE_AREA_SIZE);
    this.builder.map(CEA_IDT, this.pa(AT.idtTable), 0x1000n, { writable: false });
    this.space = new PageTableAddressSpace(this.memory, this.builder.root, 4, new PagingCache(this.epoch));
    this.types = new TypeRegistry(parseBtf(writeTypes()));

    const syms: KernelSymbol[] = [
      { name: '_text', type: 'T', address: KT },
      { name: '_stext', type: 'T', address: KT },
      { name: '_etext', type: 'T', address: KT + TEXT_SIZE },
      { name: 'early_idt_handler_array', type: 'T', address: INIT_TEXT },
      { name: '_sinittext', type: 'T', address: INIT_TEXT },
      { name: '_einittext', type: 'T', address: INIT_TEXT + 0x10000n },
      { name: '__start_rodata', type: 'D', address: RODATA },
      { name: 'sys_call_table', type: 'D', address: AT.sysCallTable },
      { name: 'vdso_image', type: 'd', address: AT.afterSysCallTable },
      { name: '__start___jump_table', type: 'D', address: AT.jumpTable },
      { name: '__stop___jump_table', type: 'D', address: AT.jumpTable + 3n * 16n },
      { name: '__start_static_call_sites', type: 'D', address: AT.staticCallSites },
      { name: '__stop_static_call_sites', type: 'D', address: AT.staticCallSites + 8n },
      { name: 'ro_string', type: 'r', address: AT.roString },
      { name: '__end_rodata', type: 'D', address: RODATA + RODATA_SIZE },
      { name: 'modules', type: 'd', address: AT.modules },
      { name: 'module_kset', type: 'b', address: AT.moduleKset },
      { name: 'module_ktype', type: 'd', address: AT.moduleKtype },
      { name: 'ftrace_ops_list', type: 'd', address: AT.ftraceOpsList },
      { name: 'ftrace_list_end', type: 'd', address: AT.ftraceListEnd },
      { name: 'ftrace_pages_start', type: 'b', address: AT.ftracePagesStart },
      { name: 'mod_tree', type: 'b', address: AT.modTree },
      { name: 'kprobe_table', type: 'b', address: AT.kprobeTable },
      { name: 'kprobe_blacklist', type: 'b', address: AT.afterKprobeTable },
      { name: 'syscalls_metadata', type: 'b', address: AT.syscallsMetadata },
      { name: 'idt_table', type: 'b', address: AT.idtTable },
      { name: '_end', type: 'B', address: KERNEL_END },
      { name: 'ftrace_call', type: 'T', address: this.fn('ftrace_caller') + 0x20n },
      ...FUNCTIONS.map((name) => ({ name, type: 'T', address: this.fn(name) })),
    ];
    this.symbols = SymbolTable.fromSymbols(syms);
    this.#buildText();
    this.#buildData();
  }

  /** Address of a function. */
  fn(name: FunctionName): bigint {
    return KT + 0x1000n + BigInt(FUNCTIONS.indexOf(name)) * 0x100n;
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

  /** A new sweep: what was cached is stale. Call after writing guest memory. */
  refresh(): void {
    this.epoch.bump();
    this.issues = new WalkIssues();
  }

  pa(va: bigint): bigint {
    if (va >= KT && va < KERNEL_END) return va - KT;
    if (va >= MODULE_AREA && va < MODULE_AREA + MODULE_AREA_SIZE) return va - MODULE_AREA + PA_MODULES;
    throw new Error(`test kernel: 0x${va.toString(16)} is not mapped`);
  }
  write(va: bigint, bytes: Uint8Array): void {
    this.memory.write(this.pa(va), bytes);
  }
  writeU64(va: bigint, v: bigint): void {
    this.memory.writeU64(this.pa(va), v);
  }
  writeU32(va: bigint, v: number): void {
    this.memory.bytes.writeUInt32LE(v >>> 0, Number(this.pa(va)));
  }
  read(va: bigint, n: number): Buffer {
    return this.space.read(va, n);
  }
  off(type: string, path: string): bigint {
    return BigInt(this.types.offsetof(type, path));
  }
  alloc(size: number): bigint {
    const va = this.#heap;
    this.#heap += (BigInt(size) + 63n) & ~63n;
    if (this.#heap > KERNEL_END) throw new Error('test kernel: data area full');
    this.write(va, Buffer.alloc(size));
    return va;
  }

  /** `jmp rel32` bytes at `from` to `to`. */
  static jmp(from: bigint, to: bigint, op = 0xe9): Buffer {
    const b = Buffer.alloc(5);
    b[0] = op;
    b.writeInt32LE(Number(BigInt.asIntN(32, to - from - 5n)), 1);
    return b;
  }

  #buildText(): void {
    const text = Buffer.alloc(Number(TEXT_SIZE), 0xcc);
    for (const name of FUNCTIONS) {
      const o = Number(this.fn(name) - KT);
      let p = o;
      if (name === 'endbr_function') {
        ENDBR64.copy(text, p);
        p += 4;
      }
      NOP5.copy(text, p); // fentry
      // push rbp; mov rbp, rsp; a body of nops; pop rbp; ret
      Buffer.from([0x55, 0x48, 0x89, 0xe5]).copy(text, p + 5);
      text.fill(0x90, p + 9, o + 0xf0);
      Buffer.from([0x5d, 0xc3]).copy(text, o + 0xf0);
    }
    const vfs = Number(this.fn('vfs_read') - KT);
    NOP5.copy(text, vfs + SITES.jump5.at);
    NOP2.copy(text, vfs + SITES.jump2.at);
    const sc = this.fn('__x64_sys_write') + BigInt(SITES.staticCall.at);
    IntegrityTestKernel.jmp(sc, this.fn('vfs_read'), 0xe8).copy(text, Number(sc - KT));
    // ftrace_call inside ftrace_caller: call ftrace_stub
    const fc = this.fn('ftrace_caller') + 0x20n;
    IntegrityTestKernel.jmp(fc, this.fn('ftrace_stub'), 0xe8).copy(text, Number(fc - KT));
    this.write(KT, text);
    this.write(INIT_TEXT, Buffer.alloc(0x10000, 0xcc));
    const ro = Buffer.alloc(Number(RODATA_SIZE));
    for (let i = 0; i < ro.length; i++) ro[i] = (i * 131) & 0xff;
    this.write(RODATA, ro);
  }

  #buildData(): void {
    // sys_call_table and the padding up to the next symbol.
    SYSCALLS.forEach((f, nr) => this.writeU64(AT.sysCallTable + BigInt(nr) * 8n, this.fn(f)));
    // __jump_table: the 5- and 2-byte labels, and one whose code is outside text (init: ignored).
    const entries: [bigint, bigint][] = [
      [
        this.fn(SITES.jump5.fn) + BigInt(SITES.jump5.at),
        this.fn(SITES.jump5.fn) + BigInt(SITES.jump5.target),
      ],
      [
        this.fn(SITES.jump2.fn) + BigInt(SITES.jump2.at),
        this.fn(SITES.jump2.fn) + BigInt(SITES.jump2.target),
      ],
      [INIT_TEXT + 0x40n, INIT_TEXT + 0x80n],
    ];
    entries.forEach(([code, target], i) => {
      const e = AT.jumpTable + BigInt(i * 16);
      const b = Buffer.alloc(16);
      b.writeInt32LE(Number(code - e), 0);
      b.writeInt32LE(Number(target - (e + 4n)), 4);
      this.write(e, b);
    });
    const site = Buffer.alloc(8);
    site.writeInt32LE(
      Number(this.fn(SITES.staticCall.fn) + BigInt(SITES.staticCall.at) - AT.staticCallSites),
      0,
    );
    this.write(AT.staticCallSites, site);
    // Empty lists and trees.
    for (const head of [AT.modules]) {
      this.writeU64(head, head);
      this.writeU64(head + 8n, head);
    }
    this.writeU64(AT.moduleKset, AT.kset);
    const ksetList = AT.kset + this.off('kset', 'list');
    this.writeU64(ksetList, ksetList);
    this.writeU64(ksetList + 8n, ksetList);
    this.writeU64(AT.ftraceOpsList, AT.ftraceListEnd);
    this.writeU64(AT.ftraceListEnd + this.off('ftrace_ops', 'func'), this.fn('ftrace_stub'));
    this.writeU64(AT.ftraceListEnd + this.off('ftrace_ops', 'next'), AT.ftraceListEnd);
    // ftrace records: one page with every function's fentry site.
    const recs = this.alloc(FUNCTIONS.length * 16);
    FUNCTIONS.forEach((f, i) =>
      this.writeU64(recs + BigInt(i * 16), this.fn(f) + (f === 'endbr_function' ? 4n : 0n)),
    );
    const page = this.alloc(24);
    this.writeU64(page + this.off('ftrace_page', 'records'), recs);
    this.writeU32(page + this.off('ftrace_page', 'index'), FUNCTIONS.length);
    this.writeU64(AT.ftracePagesStart, page);
    // syscalls_metadata: an array of pointers to { name, nr }.
    const arr = this.alloc(SYSCALLS.length * 8);
    this.writeU64(AT.syscallsMetadata, arr);
    const names = ['read', 'write', 'open', 'close', 'ni', 'kill', 'ni2', 'getdents64'];
    names.forEach((n, nr) => {
      const meta = this.alloc(64);
      const str = this.alloc(32);
      this.write(str, Buffer.from(`sys_${n}\0`, 'latin1'));
      this.writeU64(meta, str);
      this.writeU32(meta + 8n, nr);
      this.writeU64(arr + BigInt(nr * 8), meta);
    });
    // IDT: a few vectors into text, reserved ones into init text, 0x80 into asm_int80_emulation.
    this.setGate(0, this.fn('asm_exc_divide_error'));
    this.setGate(14, this.fn('asm_exc_page_fault'));
    this.setGate(21, INIT_TEXT + 0xbdn);
    this.setGate(0x80, this.fn('asm_int80_emulation'), { dpl: 3 });
  }

  /** Write IDT gate `vector` in the CPU's format. */
  setGate(
    vector: number,
    handler: bigint,
    gate: { type?: number; dpl?: number; present?: boolean } = {},
  ): void {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(Number(handler & 0xffffn), 0);
    b.writeUInt16LE(0x10, 2);
    b[5] = ((gate.present ?? true) ? 0x80 : 0) | (((gate.dpl ?? 0) & 3) << 5) | ((gate.type ?? 0xe) & 0xf);
    b.writeUInt16LE(Number((handler >> 16n) & 0xffffn), 6);
    b.writeUInt32LE(Number((handler >> 32n) & 0xffffffffn), 8);
    this.write(AT.idtTable + BigInt(vector) * 16n, b);
  }

  /** Insert `node` after `prev` in a circular list. */
  listAdd(prev: bigint, node: bigint): void {
    const next = this.readPointer(prev)!;
    this.writeU64(node, next);
    this.writeU64(node + 8n, prev);
    this.writeU64(prev, node);
    this.writeU64(next + 8n, node);
  }

  /** A loaded module: its struct module inside its own core memory, in the views `spec` asks for. */
  addModule(spec: TestModuleSpec): bigint {
    const m = spec.base + (spec.structAt ?? 0x1000n);
    this.write(m, Buffer.alloc(this.types.sizeof('module')));
    this.write(m + this.off('module', 'name'), Buffer.from(spec.name + '\0', 'latin1'));
    this.writeU32(m + this.off('module', 'state'), spec.state ?? 0);
    this.writeU64(m + this.off('module', 'core_layout.base'), spec.base);
    this.writeU32(m + this.off('module', 'core_layout.size'), Number(spec.size));
    this.writeU64(m + this.off('module', 'core_layout.mtn.mod'), m);
    this.writeU64(m + this.off('module', 'mkobj.mod'), m);
    this.writeU64(m + this.off('module', 'taints'), spec.taints ?? 0n);
    this.writeU32(m + this.off('module', 'refcnt.counter'), 1);
    for (const l of ['source_list', 'target_list']) {
      const h = m + this.off('module', l);
      this.writeU64(h, h);
      this.writeU64(h + 8n, h);
    }
    const list = m + this.off('module', 'list');
    if (spec.list ?? true) this.listAdd(AT.modules, list);
    else {
      // What list_del_rcu leaves behind: next kept, prev poisoned.
      this.writeU64(list, AT.modules);
      this.writeU64(list + 8n, 0xdead000000000122n);
    }
    if (spec.sysfs ?? true) {
      const kobj = m + this.off('module', 'mkobj.kobj');
      const str = this.alloc(spec.name.length + 1);
      this.write(str, Buffer.from(spec.name + '\0', 'latin1'));
      this.writeU64(kobj + this.off('kobject', 'name'), str);
      this.writeU64(kobj + this.off('kobject', 'ktype'), AT.moduleKtype);
      const head = AT.kset + this.off('kset', 'list');
      this.listAdd(this.readPointer(head + 8n)!, kobj + this.off('kobject', 'entry'));
    }
    if (spec.modTree ?? true) {
      this.#modTreeNodes.push(m + this.off('module', 'core_layout.mtn'));
      this.#writeModTree();
    }
    return m;
  }

  /** mod_tree's two rb-trees as right-leaning chains (order does not matter to a walk). */
  #writeModTree(): void {
    const nodeOff = this.off('mod_tree_node', 'node');
    const rb = BigInt(this.types.sizeof('rb_node'));
    const right = this.off('rb_node', 'rb_right');
    const left = this.off('rb_node', 'rb_left');
    for (const copy of [0n, 1n]) {
      const at = (mtn: bigint) => mtn + nodeOff + copy * rb;
      const root = AT.modTree + this.off('mod_tree_root', 'root.tree') + copy * 8n;
      this.writeU64(root, this.#modTreeNodes.length > 0 ? at(this.#modTreeNodes[0]!) : 0n);
      this.#modTreeNodes.forEach((mtn, i) => {
        const next = this.#modTreeNodes[i + 1];
        this.writeU64(at(mtn) + left, 0n);
        this.writeU64(at(mtn) + right, next !== undefined ? at(next) : 0n);
      });
    }
  }

  /** An ftrace_ops on ftrace_ops_list (at its head), filtering on `filters`. */
  addFtraceOps(spec: {
    func: bigint;
    flags?: bigint;
    trampoline?: bigint;
    filters?: bigint[];
    at?: bigint;
  }): bigint {
    const ops = spec.at ?? this.alloc(this.types.sizeof('ftrace_ops'));
    this.writeU64(ops + this.off('ftrace_ops', 'func'), spec.func);
    this.writeU64(ops + this.off('ftrace_ops', 'flags'), spec.flags ?? 0n);
    this.writeU64(ops + this.off('ftrace_ops', 'trampoline'), spec.trampoline ?? 0n);
    this.writeU64(ops + this.off('ftrace_ops', 'trampoline_size'), spec.trampoline ? 0x100n : 0n);
    const local = ops + this.off('ftrace_ops', 'local_hash');
    this.writeU64(ops + this.off('ftrace_ops', 'func_hash'), local);
    if (spec.filters && spec.filters.length > 0) {
      const hash = this.alloc(48);
      const bits = 2;
      const buckets = this.alloc(8 << bits);
      this.writeU64(hash + this.off('ftrace_hash', 'size_bits'), BigInt(bits));
      this.writeU64(hash + this.off('ftrace_hash', 'buckets'), buckets);
      this.writeU64(hash + this.off('ftrace_hash', 'count'), BigInt(spec.filters.length));
      spec.filters.forEach((ip, i) => {
        const e = this.alloc(32);
        this.writeU64(e + this.off('ftrace_func_entry', 'ip'), ip);
        const head = buckets + BigInt((i % (1 << bits)) * 8);
        this.writeU64(e, this.readPointer(head)!); // hlist_add_head
        this.writeU64(head, e);
      });
      this.writeU64(local + this.off('ftrace_ops_hash', 'filter_hash'), hash);
    }
    this.writeU64(ops + this.off('ftrace_ops', 'next'), this.readPointer(AT.ftraceOpsList)!);
    this.writeU64(AT.ftraceOpsList, ops);
    return ops;
  }

  /** A kprobe in kprobe_table's bucket `bucket`. */
  addKprobe(spec: { addr: bigint; pre?: bigint; post?: bigint; bucket?: number }): bigint {
    const kp = this.alloc(this.types.sizeof('kprobe'));
    this.writeU64(kp + this.off('kprobe', 'addr'), spec.addr);
    this.writeU64(kp + this.off('kprobe', 'pre_handler'), spec.pre ?? 0n);
    this.writeU64(kp + this.off('kprobe', 'post_handler'), spec.post ?? 0n);
    const head = AT.kprobeTable + BigInt((spec.bucket ?? 3) * 8);
    this.writeU64(kp + this.off('kprobe', 'hlist'), this.readPointer(head)!);
    this.writeU64(head, kp + this.off('kprobe', 'hlist'));
    return kp;
  }
}

/** The kernel types the three policies read, by the kernel's names, at 6.1 offsets where it matters. */
function writeTypes(): Buffer {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const uint = w.int('unsigned int', 4);
  const ulong = w.int('long unsigned int', 8);
  const long = w.int('long int', 8, { signed: true });
  const s32 = w.typedef('s32', int);
  const char = w.int('char', 1, { signed: true, char: true });
  const charPtr = w.ptr(char);
  const selfPtr = w.lastId() + 2;
  const listHead = w.struct('list_head', 16, [
    ['next', selfPtr, 0],
    ['prev', selfPtr, 64],
  ]);
  w.ptr(listHead);
  const hlistNode = w.struct('hlist_node', 16, [
    ['next', ulong, 0],
    ['pprev', ulong, 64],
  ]);
  w.struct('hlist_head', 8, [['first', ulong, 0]]);
  const rbNode = w.struct('rb_node', 24, [
    ['__rb_parent_color', ulong, 0],
    ['rb_right', ulong, 64],
    ['rb_left', ulong, 128],
  ]);
  const rbRoot = w.struct('rb_root', 8, [['rb_node', ulong, 0]]);
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
    ['parent', ulong, 192],
    ['kset', ulong, 256],
    ['ktype', ulong, 320],
    ['sd', ulong, 384],
  ]);
  w.struct('kset', 96, [
    ['list', listHead, 0],
    ['list_lock', uint, 128],
    ['kobj', kobject, 192],
  ]);
  const latchNode = w.struct('latch_tree_node', 48, [['node', w.array(rbNode, int, 2), 0]]);
  // Pointers to struct module are plain words here: the policies read them as addresses.
  const mtn = w.struct('mod_tree_node', 56, [
    ['mod', ulong, 0],
    ['node', latchNode, 64],
  ]);
  const layout = w.struct('module_layout', 80, [
    ['base', ulong, 0],
    ['size', uint, 64],
    ['text_size', uint, 96],
    ['ro_size', uint, 128],
    ['ro_after_init_size', uint, 160],
    ['mtn', mtn, 192],
  ]);
  const seq = w.struct('', 4, [['seqcount', uint, 0]]);
  const latchRoot = w.struct('latch_tree_root', 24, [
    ['seq', seq, 0],
    ['tree', w.array(rbRoot, int, 2), 64],
  ]);
  w.struct('mod_tree_root', 40, [
    ['root', latchRoot, 0],
    ['addr_min', ulong, 192],
    ['addr_max', ulong, 256],
  ]);
  const mkobj = w.struct('module_kobject', 96, [
    ['kobj', kobject, 0],
    ['mod', ulong, 512],
    ['drivers_dir', ulong, 576],
  ]);
  w.struct('module', 896, [
    ['state', state, 0],
    ['list', listHead, 64],
    ['name', w.array(char, int, 56), 192],
    ['mkobj', mkobj, 640],
    ['core_layout', layout, 320 * 8],
    ['init_layout', layout, 400 * 8],
    ['taints', ulong, 504 * 8],
    ['source_list', listHead, 816 * 8],
    ['target_list', listHead, 832 * 8],
    ['refcnt', atomicT, 856 * 8],
  ]);
  const opsHash = w.struct('ftrace_ops_hash', 48, [
    ['notrace_hash', ulong, 0],
    ['filter_hash', ulong, 64],
  ]);
  w.struct('ftrace_ops', 184, [
    ['func', ulong, 0],
    ['next', ulong, 64],
    ['flags', ulong, 128],
    ['private', ulong, 192],
    ['saved_func', ulong, 256],
    ['local_hash', opsHash, 320],
    ['func_hash', ulong, 704],
    ['old_hash', opsHash, 768],
    ['trampoline', ulong, 1152],
    ['trampoline_size', ulong, 1216],
    ['list', listHead, 1280],
  ]);
  w.enum('', 4, [
    ['FTRACE_OPS_FL_ENABLED', 1],
    ['FTRACE_OPS_FL_DYNAMIC', 2],
    ['FTRACE_OPS_FL_SAVE_REGS', 4],
    ['FTRACE_OPS_FL_IPMODIFY', 4096],
  ]);
  w.struct('ftrace_hash', 48, [
    ['size_bits', ulong, 0],
    ['buckets', ulong, 64],
    ['count', ulong, 128],
    ['flags', ulong, 192],
  ]);
  w.struct('ftrace_func_entry', 32, [
    ['hlist', hlistNode, 0],
    ['ip', ulong, 128],
    ['direct', ulong, 192],
  ]);
  w.struct('ftrace_page', 24, [
    ['next', ulong, 0],
    ['records', ulong, 64],
    ['index', int, 128],
    ['order', int, 160],
  ]);
  w.struct('dyn_ftrace', 16, [
    ['ip', ulong, 0],
    ['flags', ulong, 64],
  ]);
  w.struct('kprobe', 128, [
    ['hlist', hlistNode, 0],
    ['list', listHead, 128],
    ['nmissed', ulong, 256],
    ['addr', ulong, 320],
    ['symbol_name', charPtr, 384],
    ['offset', uint, 448],
    ['pre_handler', ulong, 512],
    ['post_handler', ulong, 576],
  ]);
  w.struct('jump_entry', 16, [
    ['code', s32, 0],
    ['target', s32, 32],
    ['key', long, 64],
  ]);
  w.struct('static_call_site', 8, [
    ['addr', s32, 0],
    ['key', s32, 32],
  ]);
  w.struct('syscall_metadata', 64, [
    ['name', charPtr, 0],
    ['syscall_nr', int, 64],
  ]);
  return w.blob();
}
