// The shipped rules/default.yar (what it matches, what it must not) and compiling user rule files with it.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { compileRules, defaultRulesPath, loadRules, type CompiledRules } from './yara-rules.js';

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
