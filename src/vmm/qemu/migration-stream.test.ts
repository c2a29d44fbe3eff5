import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VigilError } from '../../util/errors.js';
import { x86SyscallMsrs } from './cpu-state.js';
import {
  RamFlag,
  SectionType,
  findDescription,
  findField,
  parseMigrationStream,
  readUnsignedField,
  sectionsNamed,
} from './migration-stream.js';

// ---- a stream built to the format ---------------------------------------------------------------------

const be16 = (v: number) => Buffer.from([v >> 8, v & 0xff]);
const be32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const be64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
};
const u8str = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s, 'latin1')]);
const PAGE = 4096;

interface BuildOptions {
  ignoreShared?: boolean;
  footers?: boolean;
  /** Replace the vmdesc JSON. */
  desc?: unknown;
  /** Bytes inserted between EOF and the vmdesc. */
  gap?: Buffer;
}

const LSTAR = [0xffffffff81e00080n, 0xffffffff81e00080n];

/** The vmdesc of the built stream: a timer, two vCPUs (one with a subsection), a device with a struct array. */
function description(): Record<string, unknown> {
  const cpu = (i: number, withSub: boolean) => ({
    name: 'cpu',
    instance_id: i,
    vmsd_name: 'cpu',
    version: 12,
    fields: [
      { name: 'env.regs', array_len: 16, type: 'uint64', size: 8 },
      { name: 'env.eip', type: 'uint64', size: 8 },
      {
        name: 'env.segs',
        array_len: 6,
        type: 'struct',
        size: 20,
        struct: { vmsd_name: 'segment', version: 1, fields: [{ name: 'selector', type: 'uint32', size: 4 }] },
      },
      { name: 'env.sysenter_eip', type: 'uint64', size: 8 },
      { name: 'env.star', type: 'uint64', size: 8 },
      { name: 'env.lstar', type: 'uint64', size: 8 },
      { name: 'env.cstar', type: 'uint64', size: 8 },
      { name: 'env.v_tpr', type: 'uint8', size: 1 },
    ],
    ...(withSub
      ? {
          subsections: [
            {
              vmsd_name: 'cpu/msr_smi_count',
              version: 1,
              fields: [{ name: 'env.msr_smi_count', type: 'uint64', size: 8 }],
            },
          ],
        }
      : {}),
  });
  return {
    page_size: PAGE,
    devices: [
      {
        name: 'timer',
        instance_id: 0,
        vmsd_name: 'timer',
        version: 2,
        fields: [{ name: 'cpu_ticks_offset', type: 'int64', size: 8 }],
      },
      { name: 'slirp', instance_id: 0, size: 3, fields: [{ name: 'data', size: 3, type: 'buffer' }] },
      cpu(0, true),
      cpu(1, false),
    ],
  };
}

function cpuState(i: number, withSub: boolean): Buffer {
  const parts: Buffer[] = [];
  for (let r = 0; r < 16; r++) parts.push(be64(BigInt(r + 1)));
  parts.push(be64(0x1000n + BigInt(i))); // eip
  parts.push(Buffer.alloc(6 * 20, 0xee)); // segs
  parts.push(be64(0xffffffff81e018f0n)); // sysenter_eip
  parts.push(be64(0x0023001000000000n)); // star
  parts.push(be64(LSTAR[i]!));
  parts.push(be64(0xffffffff81e019b0n)); // cstar
  parts.push(Buffer.from([7])); // v_tpr
  if (withSub) {
    parts.push(Buffer.from([SectionType.SUBSECTION]), u8str('cpu/msr_smi_count'), be32(1), be64(42n));
  }
  return Buffer.concat(parts);
}

function ramRecord(addr: bigint, flags: number, rest: Buffer[] = []): Buffer {
  return Buffer.concat([be64(addr | BigInt(flags)), ...rest]);
}

function build(o: BuildOptions = {}): Buffer {
  const ignoreShared = o.ignoreShared ?? true;
  const footers = o.footers ?? true;
  const parts: Buffer[] = [be32(0x5145564d), be32(3)];
  // Configuration: machine type, capabilities subsection.
  parts.push(Buffer.from([SectionType.CONFIGURATION]), be32(10), Buffer.from('pc-q35-7.2'));
  if (ignoreShared) {
    parts.push(Buffer.from([SectionType.SUBSECTION]), u8str('configuration/capabilities'), be32(1));
    parts.push(be32(1), u8str('x-ignore-shared'));
  }
  const footer = (id: number) =>
    footers ? Buffer.concat([Buffer.from([SectionType.FOOTER]), be32(id)]) : Buffer.alloc(0);
  const fullHeader = (id: number, name: string, instance: number, version: number) =>
    Buffer.concat([Buffer.from([SectionType.FULL]), be32(id), u8str(name), be32(instance), be32(version)]);

  // ram START: block list (with addresses under x-ignore-shared), then EOS.
  const blocks: [string, bigint][] = [
    ['mem', 0x10000000n],
    ['pc.bios', 0x40000n],
  ];
  const total = blocks.reduce((a, [, s]) => a + s, 0n);
  const blockList = blocks.flatMap(([n, s]) => [u8str(n), be64(s), ...(ignoreShared ? [be64(0n)] : [])]);
  parts.push(Buffer.from([SectionType.START]), be32(2), u8str('ram'), be32(0), be32(4));
  parts.push(ramRecord(total, RamFlag.MEM_SIZE, blockList), ramRecord(0n, RamFlag.EOS), footer(2));
  // ram PART: a zero page (named), a full page (continuing the block), a multifd flush, EOS.
  parts.push(Buffer.from([SectionType.PART]), be32(2));
  parts.push(ramRecord(0x3f000n, RamFlag.ZERO, [u8str('pc.bios'), Buffer.from([0])]));
  parts.push(ramRecord(0x3e000n, RamFlag.PAGE | RamFlag.CONTINUE, [Buffer.alloc(PAGE, 0x90)]));
  parts.push(ramRecord(0n, RamFlag.MULTIFD_FLUSH), ramRecord(0n, RamFlag.EOS), footer(2));
  // ram END: one more page continuing the block named in the PART, EOS.
  parts.push(Buffer.from([SectionType.END]), be32(2));
  parts.push(ramRecord(0x3d000n, RamFlag.ZERO | RamFlag.CONTINUE, [Buffer.from([0])]));
  parts.push(ramRecord(0n, RamFlag.EOS), footer(2));
  // A command QEMU 9 sends before the device state.
  parts.push(Buffer.from([SectionType.COMMAND]), be16(11), be16(0));
  // Device sections.
  parts.push(fullHeader(3, 'timer', 0, 2), be64(123n), footer(3));
  parts.push(fullHeader(4, 'slirp', 0, 4), Buffer.from('abc'), footer(4));
  parts.push(fullHeader(5, 'cpu', 0, 12), cpuState(0, true), footer(5));
  parts.push(fullHeader(6, 'cpu', 1, 12), cpuState(1, false), footer(6));
  parts.push(Buffer.from([SectionType.EOF]));
  if (o.gap) parts.push(o.gap);
  const json = Buffer.from(JSON.stringify(o.desc ?? description()));
  parts.push(Buffer.from([SectionType.VMDESCRIPTION]), be32(json.length), json);
  return Buffer.concat(parts);
}

/** The error a parse throws (and that it is a VigilError). */
function parseError(buf: Buffer): VigilError {
  try {
    parseMigrationStream(buf);
  } catch (e) {
    assert.ok(e instanceof VigilError, `not a VigilError: ${String(e)}`);
    return e;
  }
  assert.fail('parsed without error');
}

describe('parseMigrationStream on a stream built to the format', () => {
  test('walks configuration, ram parts and device sections; reads cpu fields', () => {
    const s = parseMigrationStream(build());
    assert.equal(s.machineType, 'pc-q35-7.2');
    assert.deepEqual(s.capabilities, ['x-ignore-shared']);
    assert.equal(s.pageSize, PAGE);
    assert.deepEqual(
      s.ram.blocks.map((b) => [b.name, b.size]),
      [
        ['mem', 0x10000000n],
        ['pc.bios', 0x40000n],
      ],
    );
    assert.equal(s.ram.pages, 1);
    assert.equal(s.ram.zeroPages, 2);
    assert.deepEqual(
      s.devices.map((d) => `${d.name}/${d.instanceId}`),
      ['timer/0', 'slirp/0', 'cpu/0', 'cpu/1'],
    );
    const cpus = sectionsNamed(s, 'cpu');
    assert.equal(readUnsignedField(s, cpus[0]!, 'env.regs', 15), 16n);
    assert.equal(readUnsignedField(s, cpus[1]!, 'env.eip'), 0x1001n);
    assert.equal(readUnsignedField(s, cpus[0]!, 'env.v_tpr'), 7n);
    // A field in a subsection, found after the section's own fields.
    assert.equal(readUnsignedField(s, cpus[0]!, 'env.msr_smi_count'), 42n);
    assert.equal(readUnsignedField(s, cpus[1]!, 'env.msr_smi_count'), undefined);
    assert.equal(readUnsignedField(s, cpus[0]!, 'env.nothing'), undefined);
    const lstar = findField(cpus[0]!.layout, 'env.lstar')!;
    // 16 regs + eip + 6 segs of 20 + sysenter_eip + star.
    assert.equal(lstar.offset - cpus[0]!.offset, 17 * 8 + 120 + 16);
    assert.throws(() => readUnsignedField(s, cpus[0]!, 'env.regs', 16), /no element 16/);
    assert.throws(() => readUnsignedField(s, cpus[0]!, 'env.segs'), /not an integer/);
  });

  test('x86SyscallMsrs: one entry per vCPU from the cpu sections', () => {
    const msrs = x86SyscallMsrs(parseMigrationStream(build()));
    assert.deepEqual(msrs, [
      {
        vcpu: 0,
        lstar: LSTAR[0],
        cstar: 0xffffffff81e019b0n,
        star: 0x0023001000000000n,
        sysenterEip: 0xffffffff81e018f0n,
      },
      {
        vcpu: 1,
        lstar: LSTAR[1],
        cstar: 0xffffffff81e019b0n,
        star: 0x0023001000000000n,
        sysenterEip: 0xffffffff81e018f0n,
      },
    ]);
  });

  test('without footers and without x-ignore-shared (no block addresses)', () => {
    const s = parseMigrationStream(build({ footers: false, ignoreShared: false }));
    assert.deepEqual(s.capabilities, []);
    assert.equal(s.devices.length, 4);
    assert.equal(s.ram.blocks.length, 2);
  });

  test('findDescription: the vmdesc is found from the end', () => {
    const b = build();
    const at = findDescription(b);
    assert.equal(b[at], SectionType.VMDESCRIPTION);
    assert.equal(b[at - 1], SectionType.EOF);
  });

  test('rejects garbage with VigilError', () => {
    assert.equal(parseError(Buffer.alloc(4)).kind, 'malformed');
    const bad = build();
    bad.write('QEVX', 0);
    assert.match(parseError(bad).message, /magic/);
    const v4 = build();
    v4.writeUInt32BE(4, 4);
    assert.equal(parseError(v4).kind, 'unsupported');
    // No vmdesc (cut off at the end).
    assert.equal(parseError(build().subarray(0, -10)).kind, 'unsupported');
    // Bytes between EOF and the vmdesc.
    assert.match(parseError(build({ gap: Buffer.from([1, 2]) })).message, /between the EOF/);
    // A device the vmdesc does not describe.
    const desc = description();
    (desc.devices as unknown[]).splice(1, 1);
    assert.match(parseError(build({ desc })).message, /slirp.*not in the vmdesc/);
    // A field size that runs past the stream.
    const huge = description();
    (huge.devices as { fields: { size: number }[] }[])[0]!.fields[0]!.size = 0x7fffffff;
    assert.match(parseError(build({ desc: huge })).message, /truncated/);
    // Sizes that are not integers, names too long, nesting too deep.
    const frac = description();
    (frac.devices as { fields: { size: number }[] }[])[0]!.fields[0]!.size = 1.5;
    assert.match(parseError(build({ desc: frac })).message, /integer/);
    const name = description();
    (name.devices as { name: string }[])[0]!.name = 'x'.repeat(300);
    assert.match(parseError(build({ desc: name })).message, /short string/);
    let deep: Record<string, unknown> = { vmsd_name: 'leaf', fields: [] };
    for (let i = 0; i < 40; i++)
      deep = { vmsd_name: `s${i}`, fields: [{ name: 'f', size: 1, struct: deep }] };
    const nested = description();
    (nested.devices as unknown[]).push({ name: 'deep', instance_id: 0, ...deep });
    assert.match(parseError(build({ desc: nested })).message, /deeper/);
    assert.match(parseError(build({ desc: { page_size: 4097, devices: [] } })).message, /power of two/);
  });

  test('rejects RAM records it cannot follow', () => {
    const b = build();
    // The first record after the START header: turn MEM_SIZE into XBZRLE.
    const at = b.indexOf(Buffer.from('ram', 'latin1')) + 3 + 8;
    const copy = Buffer.from(b);
    copy[at + 7] = (copy[at + 7]! & ~RamFlag.MEM_SIZE) | RamFlag.XBZRLE;
    assert.equal(parseError(copy).kind, 'unsupported');
    const unknown = Buffer.from(b);
    unknown[at + 6] = 0x04; // flag 0x400: not a RAM flag
    assert.match(parseError(unknown).message, /RAM/);
  });

  test('every truncation and every single-byte corruption fails cleanly or parses', () => {
    const b = build();
    const descAt = findDescription(b);
    for (let cut = 0; cut < descAt; cut += 7) {
      // A stream cut anywhere before its vmdesc (keeping the vmdesc) is malformed, never a crash.
      const broken = Buffer.concat([b.subarray(0, cut), b.subarray(descAt)]);
      const e = parseError(broken);
      assert.ok(['malformed', 'unsupported'].includes(e.kind), e.message);
    }
    for (let i = 0; i < descAt; i++) {
      const copy = Buffer.from(b);
      copy[i] = copy[i]! ^ 0xa5;
      try {
        parseMigrationStream(copy);
      } catch (e) {
        assert.ok(e instanceof VigilError, `offset ${i}: ${String(e)}`);
      }
    }
  });
});

// ---- a real stream ----------------------------------------------------------------------------------------

/**
 * A migration stream QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18) sent for a running q35 guest: -nodefaults
 * -cpu max -smp 2, 256 MiB in memory-backend-file share=on, x-ignore-shared on; Debian kernel
 * 6.1.0-56-amd64. RAM pages after the first two were rewritten as zero-page records (same block names
 * and CONTINUE flags) to keep the fixture small; device sections and the vmdesc are as QEMU sent them.
 * The guest's own /proc/kallsyms said: entry_SYSCALL_64 ffffffffab400080, entry_SYSCALL_compat
 * ffffffffab4019b0, entry_SYSENTER_compat ffffffffab4018f0.
 */
function realStream(): Buffer {
  const rel = 'test/fixtures/migration/qemu72-q35-2cpu.bin';
  const tries = [join(process.cwd(), rel)];
  for (let d = dirname(fileURLToPath(import.meta.url)), i = 0; i < 8; d = dirname(d), i++)
    tries.push(join(d, rel));
  const found = tries.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`fixture ${rel} not found`);
  return readFileSync(found);
}

describe('parseMigrationStream on a real QEMU 7.2 stream', () => {
  test('device sections, RAM blocks and both vCPUs’ syscall MSRs', () => {
    const s = parseMigrationStream(realStream());
    assert.equal(s.machineType, 'pc-q35-7.2');
    assert.deepEqual(s.capabilities, ['x-ignore-shared']);
    assert.equal(s.ram.blocks[0]!.name, 'mem');
    assert.equal(s.ram.blocks[0]!.size, 256n << 20n);
    assert.ok(s.ram.blocks.some((b) => b.name === 'pc.bios'));
    assert.equal(s.ram.pages, 2);
    assert.ok(s.devices.some((d) => d.name === '0000:00:01.0/virtio-net'));
    const cpus = sectionsNamed(s, 'cpu');
    assert.deepEqual(
      cpus.map((c) => c.instanceId),
      [0, 1],
    );
    // The first vCPU's section carries subsections; the second only some of them.
    assert.ok(cpus[0]!.layout.subsections.size >= cpus[1]!.layout.subsections.size);
    for (const m of x86SyscallMsrs(s)) {
      assert.equal(m.lstar, 0xffffffffab400080n);
      assert.equal(m.cstar, 0xffffffffab4019b0n);
      assert.equal(m.sysenterEip, 0xffffffffab4018f0n);
      // STAR: SYSRET CS base __USER32_CS (0x23), SYSCALL CS __KERNEL_CS (0x10).
      assert.equal(m.star, 0x0023001000000000n);
    }
    // The kernel was running: CR3 of each vCPU is set, EFER has LME|LMA.
    for (const c of cpus) {
      assert.ok(readUnsignedField(s, c, 'env.cr[3]')! > 0n);
      assert.equal(readUnsignedField(s, c, 'env.efer')! & 0x500n, 0x500n);
    }
  });

  test('a cut or corrupted real stream fails with VigilError', () => {
    const b = realStream();
    const descAt = findDescription(b);
    for (const cut of [9, 100, 5000, descAt - 1000, descAt - 1]) {
      parseError(Buffer.concat([b.subarray(0, cut), b.subarray(descAt)]));
    }
    const json = Buffer.from(b);
    json[descAt + 10] = 0x00; // inside the JSON
    parseError(json);
  });
});
