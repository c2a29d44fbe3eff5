import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { VigilError } from '../util/errors.js';
import { parseExecOutput, serialExec, waitForMarker, wrapCommand } from './serial.js';

describe('console command markers', () => {
  it('wraps a command between quoted markers the echo cannot match', () => {
    const w = wrapCommand('abc', 'uname -r');
    assert.equal(w, 'echo "BEG""IN_abc"; uname -r; echo "EN""D_abc $?"\n');
    assert.equal(w.includes('BEGIN_abc'), false);
    assert.equal(w.includes('END_abc'), false);
    assert.equal(wrapCommand('x', 'sleep 9 &'), 'echo "BEG""IN_x"; sleep 9 & echo "EN""D_x $?"\n');
    assert.equal(wrapCommand('x', 'a && b'), 'echo "BEG""IN_x"; a && b; echo "EN""D_x $?"\n');
    assert.equal(wrapCommand('x', '  '), 'echo "BEG""IN_x"; true; echo "EN""D_x $?"\n');
  });

  it('extracts output and status from what a real console sent (echo, CRLF, prompt)', () => {
    // Captured from the lab guest's serial console.
    const raw =
      'echo "BEG""IN_x"; uname -a; echo "EN""D_x $?"\r\nBEGIN_x\r\nLinux vigil-lab 6.1.0-56-amd64 #1 SMP' +
      ' PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16) x86_64 GNU/Linux\r\nEND_x 0\r\n/ # \u001b[6n';
    assert.deepEqual(parseExecOutput(raw, 'x'), {
      output:
        'Linux vigil-lab 6.1.0-56-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16) x86_64 GNU/Linux\n',
      exitCode: 0,
    });
  });

  it('waits for the end marker and handles output without a final newline', () => {
    assert.equal(parseExecOutput('...\r\nBEGIN_q\r\npartial', 'q'), undefined);
    assert.equal(parseExecOutput('x\r\nBEGIN_q\r\nabcEND_q 3', 'q'), undefined); // status line incomplete
    assert.deepEqual(parseExecOutput('x\r\nBEGIN_q\r\nabcEND_q 3\r\n', 'q'), { output: 'abc', exitCode: 3 });
    assert.deepEqual(parseExecOutput('BEGIN_q\r\nEND_q 127\r\n', 'q'), { output: '', exitCode: 127 });
  });

  it('ignores markers of other commands', () => {
    const t = 'BEGIN_old\r\nold\r\nEND_old 0\r\nBEGIN_new\r\nnew\r\nEND_new 1\r\n';
    assert.deepEqual(parseExecOutput(t, 'new'), { output: 'new\n', exitCode: 1 });
  });
});

/** A fake serial console: a unix socket whose peer answers like a shell with tty echo on. */
async function fakeConsole(
  answer: (line: string, sock: Socket) => void,
): Promise<{ path: string; close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-serial-'));
  const path = join(dir, 'serial.sock');
  const srv = createServer((sock) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        sock.write(`${line}\r\n`); // echo
        answer(line, sock);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(path, r));
  return {
    path,
    close() {
      srv.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('serialExec over a socket', () => {
  it('sends the wrapped command and returns the answer', async () => {
    const con = await fakeConsole((line, sock) => {
      const id = /BEG""IN_(\w+)/.exec(line)?.[1];
      if (id) sock.write(`BEGIN_${id}\r\nhello\r\nEND_${id} 4\r\n/ # `);
    });
    try {
      assert.deepEqual(await serialExec(con.path, 'echo hello'), { output: 'hello\n', exitCode: 4 });
    } finally {
      con.close();
    }
  });

  it('times out with a clear error and interrupts the command', async () => {
    let sawInterrupt = false;
    const con = await fakeConsole((line) => {
      if (line.includes('\x03')) sawInterrupt = true;
    });
    try {
      await assert.rejects(
        serialExec(con.path, 'sleep 100', { timeoutMs: 300 }),
        (e: unknown) => e instanceof VigilError && e.kind === 'timeout' && /sleep 100/.test(e.message),
      );
      await new Promise((r) => setTimeout(r, 50));
      assert.ok(sawInterrupt);
    } finally {
      con.close();
    }
  });

  it('refuses multi-line and over-long commands', () => {
    assert.throws(() => serialExec('/nonexistent', 'a\nb'), VigilError);
    assert.throws(() => serialExec('/nonexistent', 'x'.repeat(1000)), VigilError);
  });

  it('reports a missing console socket', async () => {
    await assert.rejects(serialExec('/nonexistent/serial.sock', 'true', { timeoutMs: 500 }), (e: unknown) => {
      return e instanceof VigilError && e.kind === 'io';
    });
  });

  it('waits for a marker line and gives up when told the guest died', async () => {
    const con = await fakeConsole(() => {});
    try {
      await assert.rejects(
        waitForMarker(con.path, 'VIGIL-READY', 5000, () => 'QEMU exited'),
        (e: unknown) => e instanceof VigilError && /QEMU exited/.test(e.message),
      );
    } finally {
      con.close();
    }
  });
});
