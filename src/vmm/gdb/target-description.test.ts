import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { leToBigInt, fromHex } from './packet.js';
import { G_REPLY, I386_64BIT_XML, TARGET_XML } from './qemu-x86_64.fixture.js';
import { RegisterMap, loadTargetDescription, type AnnexReader } from './target-description.js';

const files: Record<string, string> = { 'target.xml': TARGET_XML, 'i386-64bit.xml': I386_64BIT_XML };
const reader =
  (map: Record<string, string>): AnnexReader =>
  (annex) =>
    map[annex] === undefined
      ? Promise.reject(new VigilError('vmm', 'not-found', `no annex ${annex}`))
      : Promise.resolve(map[annex]);

test("QEMU's x86-64 description: control registers numbered from the XML", async () => {
  const d = await loadTargetDescription(reader(files));
  assert.equal(d.architecture, 'i386:x86-64');
  assert.deepEqual(d.files, ['target.xml', 'i386-64bit.xml']);
  const m = new RegisterMap(d);
  const num = (n: string) => m.byName(n)?.regnum;
  assert.deepEqual(
    ['rax', 'rsp', 'r15', 'rip', 'eflags', 'cs', 'gs', 'fs_base', 'gs_base', 'k_gs_base'].map(num),
    [0, 7, 15, 16, 17, 18, 23, 24, 25, 26],
  );
  assert.deepEqual(
    ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'st0', 'xmm0', 'mxcsr'].map(num),
    [27, 28, 29, 30, 31, 32, 33, 49, 65],
  );
  assert.equal(m.byName('cs_base'), undefined, 'commented-out registers do not exist');
  assert.equal(d.registers.length, 66);
  assert.equal(m.byName('st0')?.bitsize, 80);
  assert.equal(m.byName('cr3')?.feature, 'org.gnu.gdb.i386.core');
  assert.equal(m.byNumber(29)?.name, 'cr3');
});

test('a real g reply splits into registers by the description', async () => {
  const m = new RegisterMap(await loadTargetDescription(reader(files)));
  const g = fromHex(G_REPLY);
  assert.equal(g.length, 608);
  const regs = m.splitG(g);
  const v = (n: string) => leToBigInt(regs.get(n)!);
  assert.equal(v('rip'), 0xffffffff958592ebn);
  assert.equal(v('rsp'), 0xffffffff96803e98n);
  assert.equal(v('eflags'), 0x246n);
  assert.equal(v('cs'), 0x10n);
  assert.equal(v('gs_base'), 0xff208aba0f600000n);
  assert.equal(v('cr0'), 0x80050033n);
  assert.equal(v('cr3'), 0x2b34000n);
  assert.equal(v('cr4'), 0x751ef0n);
  assert.equal(v('efer'), 0xd01n);
  assert.equal(regs.size, 66);
  // A shorter reply covers fewer registers; "xx" registers are reported as unavailable.
  const short = m.splitG(g.subarray(0, 136), new Set([8]));
  assert.equal(short.size, 17);
  assert.equal(short.get('rbx'), undefined);
  assert.ok(short.has('rbx'));
});

test('explicit regnum, attributes in single quotes, entities, include order', async () => {
  const d = await loadTargetDescription(
    reader({
      'target.xml': `<?xml version="1.0"?><target><architecture>arm&amp;co</architecture>
        <feature name='a'><reg name='x0' bitsize='64'/><reg name="x1" bitsize="64"/></feature>
        <xi:include href="b.xml"/><feature name="c"><reg name="last" bitsize="32"/></feature></target>`,
      'b.xml': `<feature name="b"><reg name="pc" bitsize="64" regnum="32" group="general"/><reg name="cpsr" bitsize="32"/></feature>`,
    }),
  );
  assert.equal(d.architecture, 'arm&co');
  assert.deepEqual(
    d.registers.map((r) => [r.name, r.regnum, r.feature]),
    [
      ['x0', 0, 'a'],
      ['x1', 1, 'a'],
      ['pc', 32, 'b'],
      ['cpsr', 33, 'b'],
      ['last', 34, 'c'],
    ],
  );
  // A gap in numbering ends the g layout.
  assert.equal(new RegisterMap(d).splitG(Buffer.alloc(100)).size, 2);
});

test('hostile descriptions: cycles, depth, missing attributes, duplicates', async () => {
  const bad = async (map: Record<string, string>, kind: string) =>
    assert.rejects(
      loadTargetDescription(reader(map)),
      (e: unknown) => e instanceof VigilError && e.kind === kind,
    );
  await bad(
    { 'target.xml': '<xi:include href="a.xml"/>', 'a.xml': '<xi:include href="target.xml"/>' },
    'malformed',
  );
  const deep: Record<string, string> = { 'target.xml': '<xi:include href="f0.xml"/>' };
  for (let i = 0; i < 20; i++) deep[`f${i}.xml`] = `<xi:include href="f${i + 1}.xml"/>`;
  await bad(deep, 'bound');
  await bad({ 'target.xml': '<reg bitsize="64"/>' }, 'malformed');
  await bad({ 'target.xml': '<reg name="a" bitsize="sixty"/>' }, 'malformed');
  await bad({ 'target.xml': '<reg name="a" bitsize="12"/>' }, 'malformed');
  await bad({ 'target.xml': '<reg name="a" bitsize="64"/><!-- unterminated' }, 'malformed');
  await bad({ 'target.xml': '<xi:include href="missing.xml"/>' }, 'not-found');
  await bad({ 'target.xml': '<reg name="a" bitsize="8"/>'.repeat(5000) }, 'bound');
  const dup = await loadTargetDescription(
    reader({ 'target.xml': '<reg name="a" bitsize="8" regnum="1"/><reg name="b" bitsize="8" regnum="1"/>' }),
  );
  assert.throws(
    () => new RegisterMap(dup),
    (e: unknown) => e instanceof VigilError && e.kind === 'malformed',
  );
});
