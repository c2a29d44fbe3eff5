import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProgressBar } from './progress.js';

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  const stream = {
    isTTY,
    columns: 60,
    write: (s: string) => writes.push(s),
  } as unknown as NodeJS.WriteStream;
  return { stream, writes };
}

test('the bar draws only on a terminal, redraws in place and clears itself', () => {
  const saved = process.env.CI;
  delete process.env.CI;
  try {
    const tty = fakeStream(true);
    const bar = new ProgressBar(tty.stream);
    bar.update(0.5, 'signature \u001b[31mevil');
    bar.done();
    assert.equal(tty.writes.length, 2);
    assert.match(tty.writes[0]!, /^\r\x1b\[2K█{12}░{12} {2}50% signature \\x1b\[31mevil$/);
    assert.equal(tty.writes[1], '\r\x1b[2K');

    const pipe = fakeStream(false);
    const quiet = new ProgressBar(pipe.stream);
    quiet.update(0.5, 'x');
    quiet.done();
    assert.deepEqual(pipe.writes, []);
  } finally {
    if (saved !== undefined) process.env.CI = saved;
  }
});
