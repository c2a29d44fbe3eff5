import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import { parseBtf, parseBtfHeader } from './parse.js';
import { BtfWriter, type HeaderOverrides } from './testkit.js';
import type { BtfEnum } from './types.js';

/** `int` (signed, 32 bits) and `int *`, spelled out byte by byte from include/uapi/linux/btf.h. */
const LITERAL = Buffer.from(
  [
    // btf_header: magic 0xeB9F, version 1, flags 0, hdr_len 24, type_off 0, type_len 28, str_off 28, str_len 5
    [0x9f, 0xeb, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00],
    [0x00, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00],
    // [1] INT name_off 1, info kind 1, size 4, int data: encoding SIGNED, offset 0, bits 32
    [0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x01],
    // [2] PTR name_off 0, info kind 2, type 1
    [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00],
    // strings: "\0int\0"
    [0x00, 0x69, 0x6e, 0x74, 0x00],
  ].flat(),
);

const isMalformed = (e: unknown): boolean =>
  e instanceof VigilError && e.origin === 'os' && e.kind === 'malformed';

test('a blob written byte by byte parses to its two types', () => {
  const d = parseBtf(LITERAL);
  assert.equal(d.count, 2);
  assert.deepEqual(d.type(1), {
    kind: 'int',
    id: 1,
    name: 'int',
    size: 4,
    signed: true,
    char: false,
    bool: false,
    bitOffset: 0,
    bits: 32,
  });
  assert.deepEqual(d.type(2), { kind: 'ptr', id: 2, name: '', type: 1 });
  assert.deepEqual(d.type(0), { kind: 'void', id: 0, name: 'void' });
  // The test writer emits exactly the same bytes, so the other tests' blobs follow the same layout.
  const viaWriter = new BtfWriter();
  const i = viaWriter.int('int', 4, { signed: true });
  viaWriter.ptr(i);
  assert.deepEqual(viaWriter.blob(), LITERAL);
});

test('header fields are read and checked', () => {
  const h = parseBtfHeader(LITERAL);
  assert.deepEqual(h, {
    version: 1,
    flags: 0,
    hdrLen: 24,
    typeOff: 0,
    typeLen: 28,
    strOff: 28,
    strLen: 5,
    length: 57,
  });
  const w = new BtfWriter();
  w.int('int', 4);
  for (const bad of [
    w.blob({ magic: 0x9feb }),
    w.blob({ version: 2 }),
    w.blob({ flags: 1 }),
    w.blob({ hdrLen: 20 }),
    w.blob({ hdrLen: 26 }),
    w.blob({ typeLen: 6 }),
    w.blob({ strLen: 0 }),
    w.blob({ strOff: 4 }), // overlaps the type section
    w.blob({ strOff: 4096 }), // gap after the type section
    LITERAL.subarray(0, 23), // truncated header
  ]) {
    assert.throws(() => parseBtf(bad), isMalformed);
  }
});

test('every kind decodes to the spec', () => {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const char = w.int('char', 1, { signed: true, char: true });
  const bool = w.int('_Bool', 1, { bool: true, bits: 1 });
  const ptr = w.ptr(int);
  const arr = w.array(char, int, 16);
  const st = w.struct(
    's',
    8,
    [
      ['a', int, 0],
      ['b', int, 32, 3],
    ],
    true,
  );
  const un = w.union('u', 4, [['x', int, 0]]);
  const en = w.enum(
    'e',
    4,
    [
      ['NEG', -2],
      ['POS', 7],
    ],
    true,
  );
  const en64 = w.enum64(
    'e64',
    8,
    [
      ['BIG', 0x1_0000_0001n],
      ['MINUS', -1n],
    ],
    true,
  );
  const fwd = w.fwd('later', true);
  const td = w.typedef('int_t', int);
  const vol = w.volatile(int);
  const cst = w.const(int);
  const rst = w.restrict(ptr);
  const proto = w.funcProto(
    int,
    [
      ['x', int],
      ['p', ptr],
    ],
    true,
  );
  const fn = w.func('f', proto, 2);
  const v = w.var('g', int, 1);
  const ds = w.datasec('.data', 16, [[v, 8, 4]]);
  const fl = w.float('double', 8);
  const dt = w.declTag('tag', st, 1);
  const tt = w.typeTag('user', int);
  const d = parseBtf(w.blob());
  assert.equal(d.count, tt);
  assert.equal(d.kind(char), 'int');
  assert.deepEqual(d.type(char), {
    kind: 'int',
    id: char,
    name: 'char',
    size: 1,
    signed: true,
    char: true,
    bool: false,
    bitOffset: 0,
    bits: 8,
  });
  assert.equal((d.type(bool) as { bool: boolean }).bool, true);
  assert.deepEqual(d.type(ptr), { kind: 'ptr', id: ptr, name: '', type: int });
  assert.deepEqual(d.type(arr), { kind: 'array', id: arr, name: '', type: char, indexType: int, nelems: 16 });
  assert.deepEqual(d.type(st), {
    kind: 'struct',
    id: st,
    name: 's',
    size: 8,
    kindFlag: true,
    members: [
      { name: 'a', type: int, bitOffset: 0, bitfieldSize: 0 },
      { name: 'b', type: int, bitOffset: 32, bitfieldSize: 3 },
    ],
  });
  assert.equal(d.kind(un), 'union');
  assert.deepEqual(d.type(en), {
    kind: 'enum',
    id: en,
    name: 'e',
    size: 4,
    signed: true,
    values: [
      { name: 'NEG', value: -2n },
      { name: 'POS', value: 7n },
    ],
  });
  assert.deepEqual((d.type(en64) as { values: unknown }).values, [
    { name: 'BIG', value: 0x1_0000_0001n },
    { name: 'MINUS', value: -1n },
  ]);
  assert.deepEqual(d.type(fwd), { kind: 'fwd', id: fwd, name: 'later', union: true });
  assert.deepEqual(d.type(td), { kind: 'typedef', id: td, name: 'int_t', type: int });
  assert.equal(d.kind(vol), 'volatile');
  assert.equal(d.kind(cst), 'const');
  assert.deepEqual(d.type(rst), { kind: 'restrict', id: rst, name: '', type: ptr });
  assert.deepEqual(d.type(proto), {
    kind: 'func_proto',
    id: proto,
    name: '',
    returnType: int,
    params: [
      { name: 'x', type: int },
      { name: 'p', type: ptr },
    ],
    variadic: true,
  });
  assert.deepEqual(d.type(fn), { kind: 'func', id: fn, name: 'f', type: proto, linkage: 2 });
  assert.deepEqual(d.type(v), { kind: 'var', id: v, name: 'g', type: int, linkage: 1 });
  assert.deepEqual(d.type(ds), {
    kind: 'datasec',
    id: ds,
    name: '.data',
    size: 16,
    vars: [{ type: v, offset: 8, size: 4 }],
  });
  assert.deepEqual(d.type(fl), { kind: 'float', id: fl, name: 'double', size: 8 });
  assert.deepEqual(d.type(dt), { kind: 'decl_tag', id: dt, name: 'tag', type: st, componentIdx: 1 });
  assert.deepEqual(d.type(tt), { kind: 'type_tag', id: tt, name: 'user', type: int });
  // Unsigned enums keep their values unsigned.
  const u = new BtfWriter();
  u.enum('flags', 4, [['HIGH', 0x80000000]]);
  assert.equal((parseBtf(u.blob()).type(1) as BtfEnum).values[0]!.value, 0x80000000n);
});

test('ids outside the table are not-found, not a crash', () => {
  const d = parseBtf(LITERAL);
  for (const id of [3, -1, 1.5, Number.NaN]) {
    assert.throws(
      () => d.type(id),
      (e) => e instanceof VigilError && e.kind === 'not-found',
    );
  }
});

test('malformed records are rejected with a typed error', () => {
  const cases: [RegExp, (w: BtfWriter) => void, HeaderOverrides?][] = [
    [/header describes/, (w) => w.int('int', 4), { typeLen: 4096, strOff: 4096 }],
    [/truncated at the end/, (w) => w.raw(0, 0x02000000)],
    [/name offset 999 beyond/, (w) => w.raw(999, 0x01000000, 4, 32)],
    [/name offset 999 of entry 0/, (w) => w.raw(0, 0x04000001, 4, 999, 0, 0)],
    [/unknown kind 20/, (w) => w.raw(0, 0x14000000, 0)],
    [/unknown kind 0/, (w) => w.raw(0, 0, 0)],
    [/reserved info bits/, (w) => w.raw(0, 0x02010000, 0)],
    [/ptr\): target refers to type 7/, (w) => w.ptr(7)],
    [/member 0 refers to type 9/, (w) => w.struct('s', 4, [['a', 9, 0]])],
    [/member 0 refers to type 0/, (w) => w.struct('s', 4, [['a', 0, 0]])],
    [/element refers to type 0/, (w) => w.array(0, 0, 4)],
    [/type 1 is not a prototype/, (w) => w.func('f', w.int('int', 4))],
    [/void parameter 0/, (w) => w.raw(0, 0x0d000002, 0, 0, 0, 0, 0)],
    [/entry 0 is not a variable/, (w) => w.datasec('.data', 4, [[w.int('int', 4), 0, 4]])],
    [/40 bits at 0/, (w) => w.int('int', 4, { bits: 40 })],
    [/int\): size 3/, (w) => w.int('int', 3, { bits: 8 })],
    [/enum\): size 3/, (w) => w.enum('e', 3, [])],
    [/float\): size 5/, (w) => w.float('f', 5)],
    [/component index -2/, (w) => w.declTag('t', w.int('int', 4), -2)],
    [/runs past the type section/, (w) => w.raw(0, 0x0400ffff, 4)],
  ];
  for (const [message, build, header] of cases) {
    const w = new BtfWriter();
    build(w);
    assert.throws(
      () => parseBtf(w.blob(header)),
      (e) => isMalformed(e) && message.test((e as Error).message),
    );
  }
  // The string section must start and end with NUL.
  const w = new BtfWriter();
  w.int('int', 4);
  const b = w.blob();
  const strStart = 24 + b.readUInt32LE(16);
  const first = Buffer.from(b);
  first[strStart] = 0x41;
  assert.throws(() => parseBtf(first), isMalformed);
  const last = Buffer.from(b);
  last[last.length - 1] = 0x41;
  assert.throws(() => parseBtf(last), isMalformed);
});

test('a longer header with the sections where it says is accepted', () => {
  const w = new BtfWriter();
  w.int('int', 4);
  const b = w.blob();
  const long = Buffer.concat([b.subarray(0, 24), Buffer.alloc(8), b.subarray(24)]);
  long.writeUInt32LE(32, 4);
  const d = parseBtf(long);
  assert.equal(d.name(1), 'int');
});
