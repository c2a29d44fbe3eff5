import assert from 'node:assert/strict';
import { accessSync, constants, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { VigilError } from '../util/errors.js';
import { ATTACKS, YARA_STRINGS, findAttack, parseAttackOutput, runAttack } from './attacks.js';
import { labSourceDir } from './paths.js';

const isVigil = (kind: string, re: RegExp) => (e: unknown) =>
  e instanceof VigilError && e.kind === kind && re.test(e.message);

describe('attack catalogue', () => {
  const runDir = join(labSourceDir(), 'attacks', 'run');

  it('has one executable runner per attack and no runner without an entry', () => {
    const runners = readdirSync(runDir).sort();
    assert.deepEqual(runners, ATTACKS.map((a) => a.name).sort());
    for (const r of runners) accessSync(join(runDir, r), constants.X_OK);
  });

  it('gives every attack an ATT&CK technique, a description and the evidence to expect', () => {
    assert.equal(new Set(ATTACKS.map((a) => a.name)).size, ATTACKS.length);
    for (const a of ATTACKS) {
      assert.match(a.technique, /^T\d{4}(\.\d{3})?$/, a.name);
      assert.ok(a.description.length > 10 && a.expect.length > 20, a.name);
      assert.equal(a.kernel === true, a.name.startsWith('rootkit'), a.name);
    }
  });

  it('lists exactly the strings the yara-string program decodes', () => {
    const file = readFileSync(join(labSourceDir(), 'attacks', 'src', 'yara-strings.txt'), 'utf8');
    assert.deepEqual(YARA_STRINGS, file.split('\n').filter(Boolean));
  });

  it('knows attacks by name', () => {
    assert.equal(findAttack('sniffer').technique, 'T1040');
    assert.throws(() => findAttack('nope'), isVigil('usage', /unknown attack "nope": one of sniffer, /));
  });
});

describe('attack results', () => {
  it('parses the result line into fields and a pid', () => {
    const out = 'some noise\nATTACK bindshell pid=117 port=4444 inode=9951 client=118 shell=119\n';
    const r = parseAttackOutput('bindshell', out);
    assert.deepEqual(r.fields, { pid: '117', port: '4444', inode: '9951', client: '118', shell: '119' });
    assert.equal(r.pid, 117);
    assert.equal(r.output, out);
  });

  it('takes a line without fields, and no pid when there is none', () => {
    const r = parseAttackOutput('rootkit-hidemod', 'ATTACK rootkit-hidemod\n');
    assert.deepEqual(r.fields, {});
    assert.equal(r.pid, undefined);
    assert.equal(parseAttackOutput('promisc', 'ATTACK promisc pid=x1\n').pid, undefined);
  });

  it('ignores result lines of other attacks', () => {
    assert.throws(
      () => parseAttackOutput('sniffer', 'ATTACK snifferx pid=1\nATTACK promisc iface=eth0\n'),
      isVigil('protocol', /attack sniffer printed no result line/),
    );
  });

  it('reports the reason of a failed attack', () => {
    assert.throws(
      () => parseAttackOutput('rootkit-root', 'ATTACK-FAIL rootkit-root insmod vk_root: File exists\n', 1),
      isVigil('state', /^attack rootkit-root failed: insmod vk_root: File exists$/),
    );
  });

  it('rejects a runner that failed without saying why', () => {
    assert.throws(
      () => parseAttackOutput('sniffer', 'ATTACK sniffer pid=1\nSegmentation fault\n', 139),
      isVigil('protocol', /exited with 139: ATTACK sniffer pid=1 \| Segmentation fault/),
    );
  });

  it('escapes control characters in guest-supplied values', () => {
    const r = parseAttackOutput('fileless', 'ATTACK fileless pid=5 exe=/memfd:\x1b[31mx\n');
    assert.equal(r.fields.exe, '/memfd:\\x1b[31mx');
  });
});

describe('runAttack', () => {
  it('checks the name and the arguments before touching any guest', async () => {
    await assert.rejects(runAttack('no-guest', 'nope'), isVigil('usage', /unknown attack/));
    await assert.rejects(
      runAttack('no-guest', 'revshell', ['10.0.2.2;reboot']),
      isVigil('usage', /bad argument/),
    );
    await assert.rejects(runAttack('no-guest', 'revshell', ['$(id)']), isVigil('usage', /bad argument/));
  });
});
