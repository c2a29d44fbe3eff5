// The control transfers an inline hook writes over kernel code (jmp/call rel32, jmp rel8, jmp [rip+x],
// movabs + jmp reg, push + ret, int3), decoded with where they go: evidence for a changed instruction.
export type BranchKind = 'jmp' | 'call' | 'jmp-short' | 'jmp-indirect' | 'movabs-jmp' | 'push-ret' | 'int3';

export interface Branch {
  kind: BranchKind;
  /** Instruction length in bytes. */
  length: number;
  /** Where it goes, when that can be computed from the bytes (and, for `jmp [rip+x]`, memory). */
  destination?: bigint;
}

const U64 = (1n << 64n) - 1n;

/**
 * Decode the control transfer at `b[o]` (at virtual address `va`) in the forms inline hooks use: jmp/call
 * rel32, jmp rel8, jmp [rip+disp32] (the pointer read through `readPointer`), movabs reg, imm64 + jmp reg,
 * push imm32 + ret, int3. Undefined for anything else.
 */
export function decodeBranch(
  b: Buffer,
  o: number,
  va: bigint,
  readPointer?: (va: bigint) => bigint | undefined,
): Branch | undefined {
  const op = b[o];
  if (op === undefined) return undefined;
  if ((op === 0xe9 || op === 0xe8) && o + 5 <= b.length) {
    return {
      kind: op === 0xe9 ? 'jmp' : 'call',
      length: 5,
      destination: (va + 5n + BigInt(b.readInt32LE(o + 1))) & U64,
    };
  }
  if (op === 0xeb && o + 2 <= b.length) {
    return { kind: 'jmp-short', length: 2, destination: (va + 2n + BigInt(b.readInt8(o + 1))) & U64 };
  }
  if (op === 0xff && b[o + 1] === 0x25 && o + 6 <= b.length) {
    const slot = (va + 6n + BigInt(b.readInt32LE(o + 2))) & U64;
    const destination = readPointer?.(slot);
    return destination !== undefined
      ? { kind: 'jmp-indirect', length: 6, destination }
      : { kind: 'jmp-indirect', length: 6 };
  }
  // movabs $imm64, %reg (48/49 b8+r) then jmp *%reg (ff e0+r, 41 ff e0+r for r8-r15).
  if ((op === 0x48 || op === 0x49) && b[o + 1]! >= 0xb8 && b[o + 1]! <= 0xbf && o + 12 <= b.length) {
    const reg = (b[o + 1]! - 0xb8) | (op === 0x49 ? 8 : 0);
    const j = o + 10;
    const jmpReg =
      reg < 8
        ? b[j] === 0xff && b[j + 1] === 0xe0 + reg
        : b[j] === 0x41 && b[j + 1] === 0xff && b[j + 2] === 0xe0 + (reg - 8);
    if (jmpReg) {
      return { kind: 'movabs-jmp', length: reg < 8 ? 12 : 13, destination: b.readBigUInt64LE(o + 2) };
    }
  }
  // push $imm32 (sign-extended: kernel addresses fit) ; ret
  if (op === 0x68 && b[o + 5] === 0xc3 && o + 6 <= b.length) {
    return { kind: 'push-ret', length: 6, destination: BigInt(b.readInt32LE(o + 1)) & U64 };
  }
  if (op === 0xcc) return { kind: 'int3', length: 1 };
  return undefined;
}
