// Hostile-input fuzzing: random and mutated blobs through the parser, the registry, the printer and
// typed views. Only VigilError may escape, and nothing may hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import { parseBtf } from './parse.js';
import { TypeRegistry } from './registry.js';
import { BtfWriter, sampleKernel } from './testkit.js';
import { StructView, type ByteReader } from './view.js';

/** xorshift32: reproducible runs; the seed is printed on failure. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Memory where every address holds bytes derived from it, so pointers always lead somewhere. */
const noise: ByteReader = {
  read(va: bigint, length: number): Buffer {
    const b = Buffer.alloc(length);
    let s = Number(va & 0xffffffffn) ^ 0x9e3779b9;
    for (let i = 0; i < length; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      b[i] = s >>> 24;
    }
    return b;
  },
};

function allKinds(): Buffer {
  const w = new BtfWriter();
  const int = w.int('int', 4, { signed: true });
  const char = w.int('char', 1, { char: true });
  const p = w.ptr(int);
  const arr = w.array(char, int, 8);
  const inner = w.struct(
    '',
    8,
    [
      ['a', int, 0],
      ['b', int, 32, 5],
    ],
    true,
  );
  w.struct('task_struct', 32, [
    ['', inner, 0],
    ['p', p, 64],
    ['name', arr, 128],
    ['c', w.const(w.volatile(w.restrict(p))), 192],
  ]);
  w.union('u', 8, [['x', int, 0]]);
  w.enum('e', 4, [['E0', 0]]);
  w.enum64('e64', 8, [['F0', 5n]]);
  w.fwd('f');
  w.typedef('t', int);
  const proto = w.funcProto(int, [['x', int]], true);
  w.func('fn', proto);
  const v = w.var('v', int);
  w.datasec('.data', 4, [[v, 0, 4]]);
  w.float('float', 4);
  w.declTag('tag', int);
  w.typeTag('user', int);
  return w.blob();
}

function exercise(reg: TypeRegistry): void {
  const n = Math.min(reg.count, 400);
  for (let id = 0; id <= n; id++) {
    const attempts: (() => unknown)[] = [
      () => reg.type(id),
      () => reg.typeName(id),
      () => reg.format(id),
      () => reg.sizeof(id),
      () => reg.resolve(id),
      () => reg.describe(id),
    ];
    const t = reg.type(id);
    if (t.kind === 'struct' || t.kind === 'union') {
      for (const m of t.members.slice(0, 16)) {
        attempts.push(() => reg.member(id, m.name || 'x'));
        attempts.push(() => reg.field(id, `${m.name || 'x'}[1]`));
        attempts.push(() => {
          const v = new StructView(reg, id, 0xffff888000000000n, noise);
          const path = m.name || 'x';
          for (const read of [
            () => v.int(path),
            () => v.u32(path),
            () => v.ptr(path),
            () => v.cstring(path),
            () => v.bytes(path),
            () => v.field(path),
            () => v.deref(path),
            () => v.int(`${path}->${path}`),
          ]) {
            try {
              read();
            } catch (e) {
              if (!(e instanceof VigilError)) throw e;
            }
          }
        });
      }
    }
    if (t.kind === 'enum' || t.kind === 'enum64') {
      for (const e of t.values.slice(0, 4)) attempts.push(() => reg.enumValue(e.name));
    }
    attempts.push(() => reg.find(t.name));
    for (const attempt of attempts) {
      try {
        attempt();
      } catch (e) {
        if (!(e instanceof VigilError)) throw e;
      }
    }
  }
}

function mutate(base: Buffer, next: () => number): Buffer {
  const b = Buffer.from(base);
  const edits = 1 + (next() % 3);
  for (let i = 0; i < edits; i++) {
    const mode = next() % 20;
    const word = (24 + (next() % (b.length - 24))) & ~3;
    if (mode < 10 && word + 4 <= b.length) {
      // Small values land on ids, offsets and counts: the mutations most likely to still parse.
      b.writeUInt32LE(next() % 64, word);
    } else if (mode < 14) {
      b[24 + (next() % (b.length - 24))] = next() & 0xff;
    } else if (mode < 17 && word + 4 <= b.length) {
      b.writeUInt32LE(next() >>> 0, word);
    } else {
      // A header field: lengths and offsets.
      b.writeUInt32LE(next() % (b.length + 64), 8 + 4 * (next() % 4));
    }
  }
  return b;
}

test('2000 random and mutated blobs: only VigilError, never a hang', () => {
  const seed = Number(process.env.VIGIL_FUZZ_SEED ?? 0x5eed1234);
  const next = rng(seed);
  const bases = [sampleKernel().blob, allKinds()];
  const started = performance.now();
  let parsed = 0;
  let slowest = 0;
  for (let i = 0; i < 2000; i++) {
    let blob: Buffer;
    if (i % 10 === 0) {
      // Pure noise behind a valid-looking header.
      blob = Buffer.alloc(24 + (next() % 512));
      for (let k = 0; k < blob.length; k++) blob[k] = next() & 0xff;
      blob.writeUInt32LE(0x0001eb9f, 0);
      blob.writeUInt32LE(24, 4);
      blob.writeUInt32LE(0, 8);
      const tl = (next() % (blob.length - 24)) & ~3;
      blob.writeUInt32LE(tl, 12);
      blob.writeUInt32LE(tl, 16);
      blob.writeUInt32LE(blob.length - 24 - tl, 20);
    } else {
      blob = mutate(bases[i % 2]!, next);
    }
    const t0 = performance.now();
    try {
      const reg = new TypeRegistry(parseBtf(blob));
      parsed++;
      exercise(reg);
    } catch (e) {
      if (!(e instanceof VigilError)) {
        assert.fail(`seed ${seed}, blob ${i}: ${e instanceof Error ? e.stack : String(e)}`);
      }
    }
    slowest = Math.max(slowest, performance.now() - t0);
  }
  // Some mutations must survive parsing, or the registry and views were never exercised.
  assert.ok(parsed > 100, `only ${parsed} blobs parsed`);
  assert.ok(slowest < 5000, `slowest blob took ${slowest} ms`);
  assert.ok(performance.now() - started < 120_000);
});
