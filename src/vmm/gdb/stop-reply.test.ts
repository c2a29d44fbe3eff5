import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { looksLikeStopReply, parseStopReply } from './stop-reply.js';

test('QEMU watchpoint hit (real reply)', () => {
  const s = parseStopReply('T05thread:01;watch:ffffffff968079c0;');
  assert.equal(s.kind, 'signal');
  assert.equal(s.signal, 5);
  assert.equal(s.thread, '01');
  assert.deepEqual(s.watch, { kind: 'watch', address: 0xffffffff968079c0n });
  assert.equal(s.reason, 'watch');
});

test('read and access watchpoints, attach/interrupt stop, multiprocess thread ids', () => {
  assert.equal(parseStopReply('T05thread:01;rwatch:ffffffff968079c0;').watch?.kind, 'rwatch');
  assert.equal(parseStopReply('T05thread:02;awatch:1000;').watch?.address, 0x1000n);
  const attach = parseStopReply('T02thread:01;');
  assert.equal(attach.signal, 2);
  assert.equal(attach.watch, undefined);
  assert.equal(parseStopReply('T05thread:p01.02;').thread, 'p01.02');
  assert.equal(parseStopReply('T05swbreak:;thread:03;core:1;').reason, 'swbreak');
  assert.equal(parseStopReply('T05hwbreak:;thread:03;core:1;').core, 1);
});

test('expedited registers by hex number; xx means unavailable', () => {
  const s = parseStopReply('T0510:eb92859595ffffff;07:983e80969fffffff;20:xxxxxxxxxxxxxxxx;thread:01;');
  assert.deepEqual([...s.registers.keys()], [0x10, 0x07]);
  assert.equal(s.registers.get(0x10)?.toString('hex'), 'eb92859595ffffff');
});

test('S, W and X packets', () => {
  assert.deepEqual(
    [parseStopReply('S05'), parseStopReply('W00'), parseStopReply('X09')].map((s) => [s.kind, s.signal]),
    [
      ['signal', 5],
      ['exited', 0],
      ['terminated', 9],
    ],
  );
});

test('what is and is not a stop reply', () => {
  for (const yes of ['T05thread:01;', 'S05', 'W00', 'X1e', 'W00;process:a'])
    assert.ok(looksLikeStopReply(yes), yes);
  for (const no of ['OK', 'E14', '', 'T0;tnotrun:0', 'S0512', 'mp01', 'l', 'PacketSize=1000', 'ffffffff']) {
    assert.ok(!looksLikeStopReply(no), no);
  }
});

test('malformed stop replies are rejected', () => {
  const bad = (p: string) =>
    assert.throws(
      () => parseStopReply(p),
      (e: unknown) => e instanceof VigilError,
      p,
    );
  bad('T5');
  bad('Tzz');
  bad('OK');
  bad('S05extra');
  bad('T05watch:nothex;');
  bad('T05watch:11112222333344445;');
  bad('T0510:abc;');
  assert.throws(
    () => parseStopReply('T05' + 'a:b;'.repeat(2000)),
    (e: unknown) => e instanceof VigilError && e.kind === 'bound',
  );
});
