import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeBranch } from './branch.js';

const NOP5 = Buffer.from([0x0f, 0x1f, 0x44, 0x00, 0x00]);

/** A jmp (or, with op 0xe8, a call) rel32 at `from` to `to`. */
function jmp(from: bigint, to: bigint, op = 0xe9): Buffer {
  const b = Buffer.alloc(5);
  b[0] = op;
  b.writeInt32LE(Number(BigInt.asIntN(32, to - from - 5n)), 1);
  return b;
}

describe('x86 branch shapes', () => {
  test('rel32, rel8, jmp [rip], movabs + jmp reg, push + ret, int3', () => {
    const va = 0xffffffff81001000n;
    const b = (...x: number[]) => Buffer.from(x);
    assert.deepEqual(decodeBranch(jmp(va, 0xffffffffc0001040n), 0, va), {
      kind: 'jmp',
      length: 5,
      destination: 0xffffffffc0001040n,
    });
    assert.equal(decodeBranch(jmp(va, va - 0x100n, 0xe8), 0, va)?.destination, va - 0x100n);
    assert.deepEqual(decodeBranch(b(0xeb, 0xfe), 0, va), { kind: 'jmp-short', length: 2, destination: va });
    const ind = b(0xff, 0x25, 0x10, 0, 0, 0);
    assert.deepEqual(
      decodeBranch(ind, 0, va, (p) => (p === va + 6n + 0x10n ? 0xffffffffc0000000n : undefined)),
      { kind: 'jmp-indirect', length: 6, destination: 0xffffffffc0000000n },
    );
    assert.deepEqual(decodeBranch(ind, 0, va), { kind: 'jmp-indirect', length: 6 });
    const movabs = Buffer.alloc(12);
    movabs[0] = 0x48;
    movabs[1] = 0xb8; // rax
    movabs.writeBigUInt64LE(0xffffffffc0002000n, 2);
    movabs[10] = 0xff;
    movabs[11] = 0xe0;
    assert.deepEqual(decodeBranch(movabs, 0, va), {
      kind: 'movabs-jmp',
      length: 12,
      destination: 0xffffffffc0002000n,
    });
    const r11 = Buffer.concat([b(0x49, 0xbb), Buffer.alloc(8, 0x11), b(0x41, 0xff, 0xe3)]);
    assert.equal(decodeBranch(r11, 0, va)?.kind, 'movabs-jmp');
    assert.equal(
      decodeBranch(Buffer.concat([b(0x48, 0xb8), Buffer.alloc(8), b(0xff, 0xe1)]), 0, va),
      undefined,
    );
    assert.deepEqual(decodeBranch(b(0x68, 0x00, 0x10, 0x00, 0xc0, 0xc3), 0, va), {
      kind: 'push-ret',
      length: 6,
      destination: 0xffffffffc0001000n,
    });
    assert.equal(decodeBranch(b(0xcc), 0, va)?.kind, 'int3');
    assert.equal(decodeBranch(NOP5, 0, va), undefined);
    assert.equal(decodeBranch(b(0xe9, 0x00), 0, va), undefined); // truncated
  });
});
