import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { compactEvidence, formatAlertLine, StdoutSink, useColor } from './stdout.js';
import { makeAlert } from './test-support.js';

class Capture extends Writable {
  chunks: string[] = [];
  constructor(readonly isTTY: boolean) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.chunks.push(chunk.toString());
    cb();
  }
}

test('one plain line per alert when the stream is not a TTY', async () => {
  const out = new Capture(false);
  const sink = new StdoutSink({ type: 'stdout' }, { stream: out, env: {} });
  await sink.write(makeAlert());
  await sink.write(makeAlert({ severity: 'critical', vm: 'db02', technique: undefined, evidence: {} }));
  await sink.close();
  assert.deepEqual(out.chunks, [
    '2026-11-26T14:00:00.123Z web01 HIGH raw-socket T1040 raw socket opened by nc  pid=42 comm=nc inode=1234\n',
    '2026-11-26T14:00:00.123Z db02 CRITICAL raw-socket raw socket opened by nc\n',
  ]);
  assert.doesNotMatch(out.chunks.join(''), /\x1b/);
});

test('colour only on a TTY with NO_COLOR unset or empty', async () => {
  assert.equal(useColor('auto', true, {}), true);
  assert.equal(useColor('auto', true, { NO_COLOR: '1' }), false);
  assert.equal(useColor('auto', true, { NO_COLOR: '' }), true);
  assert.equal(useColor('auto', false, {}), false);
  assert.equal(useColor('always', false, { NO_COLOR: '1' }), true);
  assert.equal(useColor('never', true, {}), false);
  const tty = new Capture(true);
  await new StdoutSink({ type: 'stdout' }, { stream: tty, env: {} }).write(makeAlert());
  assert.match(tty.chunks[0]!, /\x1b\[31mHIGH\x1b\[39m/);
  const noColor = new Capture(true);
  await new StdoutSink({ type: 'stdout' }, { stream: noColor, env: { NO_COLOR: '1' } }).write(makeAlert());
  assert.doesNotMatch(noColor.chunks[0]!, /\x1b/);
});

test('guest text cannot break the line or reach the terminal raw', () => {
  const line = formatAlertLine(
    makeAlert({
      vm: 'vm\x1b]0;owned\x07',
      summary: 'fake\n2026-01-01T00:00:00Z web01 INFO ok all clear',
      evidence: { 'comm\n': 'n\x1b[2Jc', path: '/tmp/a b', big: 'x'.repeat(500), nested: { a: [1, 2n] } },
    }),
    false,
  );
  assert.equal(line.indexOf('\n'), line.length - 1, 'exactly one newline, at the end');
  assert.doesNotMatch(line, /[\x00-\x09\x0b-\x1f\x7f]/);
  assert.match(line, /vm\\x1b\]0;owned\\x07/);
  assert.match(line, / comm\\x0a=n\\x1b\[2Jc /);
  assert.match(line, /path="\/tmp\/a b"/);
  assert.match(line, /nested=\{"a":\[1,"0x2"\]\}/);
  assert.ok(line.length < 600, `line is bounded (${line.length})`);
});

test('compactEvidence bounds the number of fields', () => {
  const ev = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, i]));
  const text = compactEvidence(ev);
  assert.equal(text.split(' ').length, 9);
  assert.ok(text.endsWith('…'));
});

test('a failing stream rejects the write and marks the sink unhealthy', async () => {
  const broken = new Writable({
    write(_c, _e, cb) {
      cb(Object.assign(new Error('EPIPE'), { code: 'EPIPE' }));
    },
  });
  broken.on('error', () => {});
  const sink = new StdoutSink({ type: 'stdout' }, { stream: broken, env: {} });
  await assert.rejects(sink.write(makeAlert()), /write failed/);
  assert.equal(sink.status().healthy, false);
});
