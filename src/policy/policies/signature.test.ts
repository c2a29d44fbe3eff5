import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Epoch } from '../../arch/epoch.js';
import { PageTableAddressSpace, PagingCache } from '../../arch/x86_64/index.js';
import { BufferPhysicalMemory, PageTableBuilder } from '../../arch/x86_64/test-memory.js';
import type { MemoryMap } from '../../os/linux/mm/maps.js';
import { VigilError } from '../../util/errors.js';
import {
  compileRules,
  defaultRulesPath,
  loadRules,
  MemoryGatherer,
  parseSignatureOptions,
  scanGathered,
  scanReason,
  type CompiledRules,
} from './signature.js';

const defaultText = () => readFileSync(defaultRulesPath(), 'utf8');
const defaults = (): CompiledRules => compileRules([{ name: 'default.yar', text: defaultText() }]);

/** The lab's known-bad strings, from their source of truth (lab/attacks/src/yara-strings.txt). */
function labStrings(): string[] {
  const root = dirname(dirname(realpathSync(defaultRulesPath())));
  const file = join(root, 'lab', 'attacks', 'src', 'yara-strings.txt');
  return readFileSync(file, 'latin1').split('\n').filter(Boolean);
}

const rulesOf = (rules: CompiledRules, data: Buffer) =>
  rules.scanner
    .scan(data)
    .map((m) => m.ruleIdentifier)
    .sort();

describe('default rules (rules/default.yar)', () => {
  it('compile, and every rule carries a description, an ATT&CK technique and a severity', () => {
    const text = defaultText();
    defaults();
    const names = [...text.matchAll(/^rule (\w+)/gm)].map((m) => m[1]);
    assert.ok(names.length >= 4, `rules: ${names.join(', ')}`);
    for (const body of text.split(/^rule /m).slice(1)) {
      assert.match(body, /description = "[^"]{20,}"/);
      assert.match(body, /technique = "T\d{4}(\.\d{3})?"/);
      assert.match(body, /severity = "(low|medium|high|critical)"/);
    }
  });

  it("match the lab's yara-string attack the way it lays the strings out (NUL after each)", () => {
    const strings = labStrings();
    assert.equal(strings[0], 'VIGIL-TEST-MALWARE-SIGNATURE-5f3a');
    const blob = Buffer.from(strings.map((s) => `${s}\0`).join(''), 'latin1');
    const data = Buffer.concat([Buffer.alloc(1000, 0x41), blob, Buffer.alloc(3000)]);
    assert.deepEqual(rulesOf(defaults(), data), [
      'cryptominer_stratum_config',
      'linux_mirai_busybox_probe',
      'linux_xmrig_miner',
      'vigil_test_marker',
    ]);
  });

  it('match real-world forms: other Mirai forks, a miner config.json, XMRig donation hosts', () => {
    const r = defaults();
    assert.deepEqual(rulesOf(r, Buffer.from('xx/bin/busybox OWARI\r\n..\nOWARI: applet not found\n')), [
      'linux_mirai_busybox_probe',
    ]);
    const config =
      '{"pools":[{"url":"stratum+ssl://gulf.moneroocean.stream:20128","user":"4A..","rig-id":null}],"donate-level":1}';
    assert.deepEqual(rulesOf(r, Buffer.from(config)), ['cryptominer_stratum_config']);
    assert.deepEqual(rulesOf(r, Buffer.from('\0donate.ssl.xmrig.com\0')), ['linux_xmrig_miner']);
  });

  it('do not fire on near misses a clean system holds', () => {
    const r = defaults();
    const benign = [
      '%s: applet not found', // busybox's own message
      '/bin/busybox --install -s /bin',
      'sh: FOO: applet not found', // one failed command, no probe
      '/bin/busybox ECHO', // a probe-like line without an answer is not Mirai's generic form…
      'stratum+tcp://pool.example.com:3333', // …nor a pool URL alone (a wallet app, documentation)
      'Stratum protocol; xmr is Monero',
      'VIGIL-TEST-MALWARE-SIGNATURE', // the marker needs its suffix
    ];
    for (const s of benign) assert.deepEqual(rulesOf(r, Buffer.from(`\n${s}\n`)), [], s);
    if (existsSync('/bin/busybox'))
      assert.deepEqual(rulesOf(r, readFileSync('/bin/busybox')), [], 'host busybox');
  });
});

describe('compiling rule files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-yara-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('user rules compile with the default set and both match', () => {
    const mine = file('mine.yar', 'rule my_rule { strings: $a = "my-own-indicator" condition: $a }\n');
    const r = loadRules({ rules: [mine], noDefaultRules: false });
    assert.equal(r.sources.length, 2);
    assert.deepEqual(rulesOf(r, Buffer.from('.. my-own-indicator .. VIGIL-TEST-MALWARE-SIGNATURE-5f3a ..')), [
      'my_rule',
      'vigil_test_marker',
    ]);
    const alone = loadRules({ rules: [mine], noDefaultRules: true });
    assert.deepEqual(alone.sources, [mine]);
    assert.deepEqual(rulesOf(alone, Buffer.from('VIGIL-TEST-MALWARE-SIGNATURE-5f3a my-own-indicator')), [
      'my_rule',
    ]);
    assert.equal(loadRules({ rules: [mine], noDefaultRules: true }), alone, 'compiled once, then cached');
  });

  it('a syntax error names the file and the line', () => {
    const bad = file(
      'bad.yar',
      'rule ok { condition: true }\n\nrule broken {\n  strings: $a = "x"\n  condition: $a and $b\n}\n',
    );
    assert.throws(
      () => loadRules({ rules: [bad], noDefaultRules: false }),
      (e: unknown) =>
        e instanceof VigilError &&
        e.kind === 'usage' &&
        e.message.includes(`${bad}:5`) &&
        /unknown pattern/.test(e.message),
    );
  });

  it('a rule defined in two files names both files', () => {
    const a = file('a.yar', 'rule twice { condition: true }\n');
    const b = file('b.yar', '// another file\nrule twice { condition: false }\n');
    assert.throws(
      () => loadRules({ rules: [a, b], noDefaultRules: true }),
      (e: unknown) =>
        e instanceof VigilError &&
        e.message.includes(`${a}:1`) &&
        e.message.includes(`${b}:2`) &&
        /twice/.test(e.message),
    );
  });

  it('a missing file is a not-found error naming it', () => {
    const missing = join(dir, 'nope.yar');
    assert.throws(
      () => loadRules({ rules: [missing], noDefaultRules: true }),
      (e: unknown) => e instanceof VigilError && e.kind === 'not-found' && e.message.includes(missing),
    );
  });
});

describe('options', () => {
  it('defaults, and wrong types are usage errors', () => {
    const o = parseSignatureOptions({});
    assert.equal(o.maxBytesPerProcess, 64 * 1024 * 1024);
    assert.equal(o.scanKernelModules, true);
    assert.equal(o.scanFileMappings, false);
    assert.deepEqual(
      parseSignatureOptions({ ...o }),
      o,
      'parsing is idempotent (the engine parses once, the poll again)',
    );
    assert.equal(
      parseSignatureOptions({ maxBytesPerProcess: 2 ** 40 }).maxBytesPerProcess,
      1024 * 1024 * 1024,
    );
    for (const bad of [
      { rules: 'x.yar' },
      { rules: [''] },
      { maxBytesPerSweep: -1 },
      { scanFileMappings: 'yes' },
      { bogus: 1 },
    ]) {
      assert.throws(
        () => parseSignatureOptions(bad),
        (e: unknown) => e instanceof VigilError && e.kind === 'usage',
      );
    }
    assert.throws(() => parseSignatureOptions({ noDefaultRules: true }), /no "rules" files/);
  });
});

describe('which maps are scanned', () => {
  const map = (o: Partial<MemoryMap>): MemoryMap => ({
    vma: 0xffff_8880_0000_1000n,
    start: 0x1000_0000n,
    end: 0x1001_0000n,
    flags: 0x73n, // rw-p, may-read/write
    perms: 'rw-p',
    offset: 0n,
    dev: '00:00',
    inode: 0n,
    path: '',
    ...o,
  });
  const file = { file: 0xffff_8880_0000_2000n, path: '/usr/lib/libc.so.6', dev: '08:01', inode: 42n };
  it('private memory and files that are gone, not libraries on disk, I/O maps or the gate page', () => {
    const o = { scanFileMappings: false };
    assert.equal(scanReason(map({}), o), 'anonymous');
    assert.equal(scanReason(map({ label: '[heap]', path: '[heap]' }), o), '[heap]');
    assert.equal(scanReason(map({ ...file }), o), 'file data');
    assert.equal(scanReason(map({ ...file, flags: 0x7bn }), o), 'shared writable file');
    assert.equal(scanReason(map({ ...file, flags: 0x75n }), o), undefined, 'library text');
    assert.equal(scanReason(map({ ...file, flags: 0x75n }), { scanFileMappings: true }), 'file text');
    assert.equal(
      scanReason(map({ ...file, flags: 0x75n, deleted: true }), o),
      'deleted file',
      'memfd / unlinked',
    );
    assert.equal(scanReason(map({ flags: 0x70n }), o), undefined, 'not readable');
    assert.equal(scanReason(map({ flags: 0x4411n, label: '[vvar]' }), o), undefined, 'VM_IO | VM_PFNMAP');
    assert.equal(
      scanReason(map({ start: 0xffff_ffff_ff60_0000n, end: 0xffff_ffff_ff60_1000n, flags: 0x5n }), o),
      undefined,
    );
  });
});

describe('gathering process memory through page tables', () => {
  const MARK = 'VIGIL-TEST-MALWARE-SIGNATURE-5f3a';
  /** 4 MiB of guest RAM, tables from 3 MiB, one user address space. */
  function setup() {
    const mem = new BufferPhysicalMemory(4 << 20);
    const b = new PageTableBuilder(mem, 4, 0x30_0000n);
    const space = new PageTableAddressSpace(mem, b.root, 4, new PagingCache(Epoch.frozen()));
    return { mem, b, space };
  }
  const user = { user: true, nx: true };

  it('finds strings at their virtual addresses, across pages scattered in RAM, and not across holes', () => {
    const { mem, b, space } = setup();
    // VMA 0x10000000-0x10005000: pages 0,1,3,4 present (2 is not: swapped or never touched), frames
    // out of order in RAM.
    const frames = [0x5000n, 0x20000n, 0, 0x9000n, 0x12000n];
    frames.forEach((pa, i) => pa && b.map(0x1000_0000n + BigInt(i) * 0x1000n, pa as bigint, 0x1000n, user));
    mem.write(0x5000n + 100n, Buffer.from(MARK)); // page 0
    // Split over the boundary of pages 0 and 1 (neighbours in the process, not in RAM).
    mem.write(0x5000n + 0x1000n - 10n, Buffer.from('VIGIL-TEST'));
    mem.write(0x20000n, Buffer.from('-MALWARE-SIGNATURE-5f3a'));
    // Split over the hole (page 2 absent): only a buffer artefact, never a match.
    mem.write(0x9000n, Buffer.from('E-SIGNATURE-5f3a'));
    mem.write(0x20000n + 0x1000n - 17n, Buffer.from('VIGIL-TEST-MALWAR'));
    const g = new MemoryGatherer(mem, Buffer.alloc(1 << 20), new Set(), 1 << 20);
    g.add(space, { start: 0x1000_0000n, end: 0x1000_5000n }, 0);
    assert.equal(g.stats.bytes, 4 * 4096);
    assert.deepEqual(
      g.runs.map((r) => [r.va, r.offset, r.length]),
      [
        [0x1000_0000n, 0, 0x2000],
        [0x1000_3000n, 0x2000, 0x2000],
      ],
    );
    const hits = scanGathered(defaults(), g.data, g.runs, 16);
    assert.equal(hits.length, 1);
    const marker = hits[0]!;
    assert.equal(marker.rule, 'vigil_test_marker');
    assert.equal(marker.meta.technique, 'T1027');
    assert.deepEqual(
      marker.strings.map((s) => [s.identifier, s.va, s.excerpt]),
      [
        ['$marker', 0x1000_0000n + 100n, MARK],
        ['$marker', 0x1000_1000n - 10n, MARK],
      ],
    );
    assert.equal(marker.matchCount, 2, 'the match across the hole is not counted');
  });

  it('reads each physical page once per sweep, honours the budget, and splits large pages', () => {
    const { mem, b, space } = setup();
    b.map(0x2000_0000n, 0x7000n, 0x1000n, user);
    b.map(0x3000_0000n, 0x7000n, 0x1000n, user); // the same frame in a second process
    b.map(0x4000_0000n, 0x20_0000n, 0x20_0000n, user); // a 2 MiB page; the VMA covers 3 pages of it
    mem.write(0x7000n, Buffer.from(MARK));
    mem.write(0x20_0000n + 0x5000n + 7n, Buffer.from(MARK));
    const seen = new Set<number>();
    const buf = Buffer.alloc(1 << 20);
    const first = new MemoryGatherer(mem, buf, seen, 1 << 20);
    first.add(space, { start: 0x2000_0000n, end: 0x2000_1000n }, 0);
    assert.equal(scanGathered(defaults(), first.data, first.runs, 16).length, 1);
    const second = new MemoryGatherer(mem, buf, seen, 1 << 20);
    second.add(space, { start: 0x3000_0000n, end: 0x3000_1000n }, 0);
    assert.equal(second.stats.bytes, 0);
    assert.equal(second.stats.sharedPages, 1);
    const large = new MemoryGatherer(mem, buf, seen, 1 << 20);
    large.add(space, { start: 0x4000_4000n, end: 0x4000_7000n }, 3);
    assert.deepEqual(
      large.runs.map((r) => [r.va, r.length, r.region]),
      [[0x4000_4000n, 0x3000, 3]],
    );
    const hit = scanGathered(defaults(), large.data, large.runs, 16)[0]!;
    assert.equal(hit.strings[0]!.va, 0x4000_5007n);
    // Budget: two pages, then full.
    const small = new MemoryGatherer(mem, buf, new Set(), 0x2000);
    assert.equal(small.add(space, { start: 0x4000_0000n, end: 0x4020_0000n }, 0), false);
    assert.equal(small.stats.bytes, 0x2000);
    assert.equal(small.stats.truncated, true);
  });

  it('hostile page tables (a table pointing at itself) stop at a bound and are reported, not looped on', () => {
    const { mem, b, space } = setup();
    b.map(0x1000_0000n, 0x5000n, 0x1000n, user);
    // Every entry of the PT that maps 0x10000000 now points at the PT itself: 512 "pages" per table.
    const ptEntry = b.entryAddress(0x1000_0000n, 'PD');
    const pt = mem.readU64(ptEntry) & 0x000f_ffff_ffff_f000n;
    for (let i = 0n; i < 512n; i++) mem.writeU64(pt + i * 8n, pt | 0x7n);
    const g = new MemoryGatherer(mem, Buffer.alloc(1 << 20), new Set(), 1 << 20);
    g.add(space, { start: 0x1000_0000n, end: 0x1020_0000n }, 0, { maxEntries: 16 });
    assert.equal(g.stats.walkErrors.length, 1);
    assert.ok(g.stats.bytes <= 4096, 'every alias of the one frame counts once');
  });
});
