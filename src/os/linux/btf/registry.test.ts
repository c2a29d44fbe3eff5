import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import { TypeRegistry } from './registry.js';
import { BtfWriter, sampleKernel } from './testkit.js';

const { blob, ids } = sampleKernel();
const reg = TypeRegistry.fromBlob(blob);

const vigil = (kind: string, message?: RegExp) => (e: unknown) =>
  e instanceof VigilError && e.origin === 'os' && e.kind === kind && (!message || message.test(e.message));

test('types are found by bare and prefixed names; complete types win over forward declarations', () => {
  assert.equal(reg.find('task_struct'), ids.task);
  assert.equal(reg.find('struct task_struct'), ids.task);
  assert.equal(reg.find('  struct   task_struct '), ids.task);
  assert.equal(reg.find('mm_struct'), ids.mm); // the FWD comes first in the blob
  assert.equal(reg.find('pid_namespace'), reg.find('struct pid_namespace')); // only a FWD exists
  assert.equal(reg.kind('pid_namespace'), 'fwd');
  assert.equal(reg.find('typedef pid_t'), ids.pidT);
  assert.equal(reg.find('enum pid_type'), ids.pidType);
  assert.equal(reg.find('long unsigned int'), ids.ulong);
  assert.equal(reg.find('union task_struct'), undefined);
  assert.equal(reg.find('no_such_type'), undefined);
  assert.throws(() => reg.id('struct no_such_type'), vigil('not-found', /no type "struct no_such_type"/));
  assert.equal(reg.id(ids.task), ids.task);
  assert.throws(() => reg.id(10_000), vigil('not-found'));
});

test('resolve strips typedefs and qualifiers, and a typedef cycle is malformed', () => {
  assert.equal(reg.resolve('task_t'), ids.task);
  assert.equal(reg.resolve(ids.pidT), ids.int);
  assert.equal(reg.resolve(ids.task), ids.task);
  assert.throws(() => reg.resolve('loop_a'), vigil('malformed', /cyclic/));
  assert.throws(() => reg.sizeof('loop_b'), vigil('malformed'));
});

test('sizeof follows the declared sizes', () => {
  assert.equal(reg.sizeof('task_struct'), 128);
  assert.equal(reg.sizeof('task_t'), 128);
  assert.equal(reg.sizeof('list_head'), 16);
  assert.equal(reg.sizeof(ids.comm), 16);
  assert.equal(reg.sizeof(ids.listPtr), 8);
  assert.equal(reg.sizeof('pid_t'), 4);
  assert.equal(reg.pointerSize, 8);
  assert.throws(() => reg.sizeof(0), vigil('unsupported', /void has no size/));
  assert.throws(() => reg.sizeof('pid_namespace'), vigil('unsupported'));
});

test('members: list_head next/prev at 0/8, anonymous members searched through with offsets added', () => {
  assert.deepEqual(
    reg.members('list_head').map((m) => [m.path, m.offset, m.size]),
    [
      ['next', 0, 8],
      ['prev', 8, 8],
    ],
  );
  assert.equal(reg.member('task_struct', 'as_long').offset, 24);
  const y = reg.member('task_struct', 'inner_y');
  assert.equal(y.offset, 28);
  assert.equal(y.bitOffset, 224);
  assert.equal(y.type, ids.int);
  assert.throws(
    () => reg.member('task_struct', 'nope'),
    vigil('not-found', /no field "nope" in struct task_struct/),
  );
  assert.throws(() => reg.members('pid_t'), vigil('usage', /not a struct or union/));
  assert.throws(() => reg.members('pid_namespace'), vigil('unsupported', /only declared/));
});

test('field paths walk embedded structs and arrays; pointers need a view', () => {
  assert.equal(reg.offsetof('task_struct', 'tasks.prev'), 16);
  assert.equal(reg.offsetof('task_struct', 'se.exec_start'), 64);
  assert.equal(reg.offsetof('task_struct', 'se.vruntime'), 72);
  assert.equal(reg.offsetof('task_struct', 'pid'), 32);
  const c = reg.field('task_struct', 'comm[3]');
  assert.deepEqual([c.offset, c.size, c.type], [51, 1, ids.char]);
  assert.equal(reg.offsetof('pid', 'numbers[0].nr'), 8);
  assert.equal(reg.offsetof('pid', 'numbers[0].ns'), 16);
  assert.equal(reg.field('task_t', 'pid').type, ids.pidT);
  assert.throws(() => reg.field('pid', 'numbers[1]'), vigil('bound', /index 1 past numbers\[1\]/));
  assert.throws(() => reg.field('task_struct', 'mm.mmap_base'), vigil('usage', /has no members/));
  assert.throws(() => reg.field('task_struct', 'mm->mmap_base'), vigil('usage', /follows a pointer/));
  assert.throws(() => reg.field('task_struct', 'pid[0]'), vigil('usage', /not an array/));
  assert.throws(
    () => reg.field('task_struct', 'se.nope'),
    vigil('not-found', /no field "nope" in struct sched_entity/),
  );
  for (const bad of ['', 'a..b', '1a', 'a[', 'a[x]', 'a.', 'a-b', 'a->']) {
    assert.throws(() => reg.field('task_struct', bad), vigil('usage', /bad field path/), bad);
  }
});

test('bitfields in both encodings', () => {
  const e = reg.field('task_struct', 'in_iowait');
  assert.deepEqual([e.bitOffset, e.bitfieldSize, e.offset], [289, 1, 36]);
  assert.equal(reg.field('task_struct', 'wide').bitfieldSize, 40);
  assert.throws(() => reg.offsetof('task_struct', 'in_execve'), vigil('usage', /bitfield/));
  const [x, y] = reg.members('old_bf');
  assert.deepEqual([x!.bitOffset, x!.bitfieldSize], [0, 3]);
  assert.deepEqual([y!.bitOffset, y!.bitfieldSize], [3, 5]);
});

test('arrays and enums', () => {
  assert.deepEqual(reg.arrayInfo(ids.comm), { elementType: ids.char, count: 16, elementSize: 1 });
  assert.throws(() => reg.arrayInfo('task_struct'), vigil('usage'));
  assert.equal(reg.enumValue('PIDTYPE_PID'), 0n);
  assert.equal(reg.enumValue('PIDTYPE_TGID'), 1n);
  assert.equal(reg.enumValue('PIDTYPE_SID', 'enum pid_type'), 3n);
  assert.equal(reg.enumName('pid_type', 2), 'PIDTYPE_PGID');
  assert.equal(reg.enumName('pid_type', 99), undefined);
  assert.throws(() => reg.enumValue('PIDTYPE_NOPE'), vigil('not-found'));
  assert.throws(() => reg.enumValue('PIDTYPE_PID', 'task_struct'), vigil('usage', /not an enum/));
});

test('C spelling of types and declarations', () => {
  assert.equal(reg.typeName(ids.listPtr), 'struct list_head *');
  assert.equal(reg.typeName(ids.comm), 'char [16]');
  assert.equal(reg.typeName(ids.charPtr), 'const char *');
  assert.equal(reg.typeName(ids.voidPtr), 'void *');
  assert.equal(reg.typeName(ids.cbPtr), 'int (*)(struct task_struct *task)');
  assert.equal(reg.declaration(ids.cbPtr, 'callback'), 'int (*callback)(struct task_struct *task)');
  assert.equal(reg.declaration(ids.comm, 'comm'), 'char comm[16]');
  assert.equal(reg.typeName('task_t'), 'task_t');
  assert.equal(reg.describe(ids.task), 'struct task_struct');
  assert.equal(reg.describe(ids.inner), `anonymous struct (type ${ids.inner})`);
});

test('the pretty printer writes C-like definitions with offsets', () => {
  assert.equal(
    reg.format('list_head'),
    [
      'struct list_head {',
      '    struct list_head *next;                     /* 0 8 */',
      '    struct list_head *prev;                     /* 8 8 */',
      '}; /* size 16 */',
    ].join('\n'),
  );
  const task = reg.format('task_struct').split('\n');
  assert.ok(task.includes('    union {'));
  assert.ok(task.includes('        struct {'));
  assert.ok(task.some((l) => /^ {12}int inner_y; +\/\* 28 4 \*\/$/.test(l)));
  assert.ok(task.some((l) => /^ {4}unsigned int in_iowait:1; +\/\* 36:1 4 \*\/$/.test(l)));
  assert.ok(
    task.some((l) => /^ {4}int \(\*callback\)\(struct task_struct \*task\); +\/\* 120 8 \*\/$/.test(l)),
  );
  assert.ok(task.some((l) => /^ {4}enum pid_type type; +\/\* 112 4 \*\/$/.test(l)));
  assert.equal(task.at(-1), '}; /* size 128 */');
  assert.equal(reg.format('typedef pid_t'), 'typedef int pid_t;');
  assert.equal(
    reg.format('anon_pair_t'),
    [
      'typedef struct {',
      '    int inner_x;                                /* 0 4 */',
      '    int inner_y;                                /* 4 4 */',
      '} anon_pair_t; /* size 8 */',
    ].join('\n'),
  );
  assert.equal(
    reg.format('pid_type'),
    'enum pid_type {\n    PIDTYPE_PID = 0,\n    PIDTYPE_TGID = 1,\n    PIDTYPE_PGID = 2,\n    PIDTYPE_SID = 3,\n    PIDTYPE_MAX = 4,\n}; /* size 4 */',
  );
  assert.equal(reg.format('pid_namespace'), 'struct pid_namespace;');
  // Printing a cyclic typedef does not loop.
  assert.equal(reg.format('loop_a'), 'typedef loop_b loop_a;');
});

test('every other kind prints', () => {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const char = w.int('char', 1, { signed: true, char: true });
  const user = w.typeTag('user', char);
  const up = w.ptr(user);
  const cp = w.const(up);
  const proto = w.funcProto(int, [['fmt', cp]], true);
  w.func('printk', proto, 1);
  w.func('helper', w.funcProto(0, []), 0);
  const v = w.var('jiffies', w.volatile(w.int('long unsigned int', 8)), 1);
  w.datasec('.data', 8, [[v, 0, 8]]);
  w.float('double', 8);
  w.enum64('big', 8, [['HUGE', 1n << 40n]]);
  w.declTag('kfunc', int, -1);
  w.struct('evil\u001b[2J', 4, [['x\nforged', int, 0]]);
  const r = TypeRegistry.fromBlob(w.blob());
  assert.equal(r.format('printk'), 'int printk(char __user *const fmt, ...);');
  assert.equal(r.format('helper'), 'static void helper(void);');
  assert.equal(r.format('jiffies'), 'volatile long unsigned int jiffies;');
  assert.match(
    r.format('datasec .data'),
    /^SEC\("\.data"\) \{ \/\* size 8 \*\/\n {4}volatile long unsigned int jiffies; +\/\* 0 8 \*\/\n\};$/,
  );
  assert.equal(r.format('double'), 'double');
  assert.equal(r.format('enum big'), 'enum big {\n    HUGE = 1099511627776,\n}; /* size 8 */');
  assert.equal(r.enumValue('HUGE'), 1n << 40n);
  // Guest names cannot smuggle escape sequences or newlines into output.
  const evil = r.format(r.idsOfKind('struct')[0]!);
  assert.ok(!/[\u001b\n]forged/.test(evil) && evil.includes('evil\\x1b[2J') && evil.includes('x\\x0aforged'));
});

test('anonymous members that fan out exponentially hit a budget, not a hang', () => {
  const w = new BtfWriter();
  const int = w.int('int', 4);
  let prev = w.struct('', 4, [['leaf', int, 0]]);
  for (let i = 0; i < 30; i++) {
    prev = w.struct('', 4, [
      ['', prev, 0],
      ['', prev, 0],
    ]);
  }
  w.struct('top', 4, [['', prev, 0]]);
  const r = TypeRegistry.fromBlob(w.blob());
  const t0 = performance.now();
  assert.equal(r.member('top', 'leaf').offset, 0);
  assert.throws(() => r.member('top', 'missing'), vigil('bound'));
  assert.ok(r.format('top').split('\n').length < 25_000);
  assert.ok(performance.now() - t0 < 5000);
});
