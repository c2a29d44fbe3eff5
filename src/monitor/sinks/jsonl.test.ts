import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { JsonlSink } from './jsonl.js';
import { makeAlert, tempDir, waitFor } from './test-support.js';

/** Lines of a jsonl file: the complete ones, and a trailing fragment without newline ('' when none). */
function readLines(path: string): { lines: string[]; tail: string } {
  const text = readFileSync(path, 'utf8');
  const parts = text.split('\n');
  return { lines: parts.slice(0, -1), tail: parts[parts.length - 1]! };
}

test('appends one ECS document per line, across reopen', async (t) => {
  const { dir, cleanup } = tempDir('jsonl');
  t.after(cleanup);
  const path = join(dir, 'sub', 'alerts.jsonl');
  const a = [makeAlert(), makeAlert({ summary: 'two\nlines', evidence: { addr: 0xffffffff81000000n } })];
  let sink = await JsonlSink.open({ type: 'jsonl', path });
  await sink.write(a[0]!);
  await sink.close();
  sink = await JsonlSink.open({ type: 'jsonl', path });
  await sink.write(a[1]!);
  await sink.close();
  const { lines, tail } = readLines(path);
  assert.equal(tail, '');
  assert.equal(lines.length, 2);
  const docs = lines.map((l) => JSON.parse(l));
  assert.deepEqual(
    docs.map((d) => d.event.id),
    a.map((x) => x.id),
  );
  assert.equal(docs[1].vigil.summary, 'two\nlines');
  assert.equal(docs[1].vigil.evidence.addr, '0xffffffff81000000');
  assert.equal(statSync(path).mode & 0o777, 0o600);
  await assert.rejects(sink.write(a[0]!), /closed/);
});

test('concurrent writes keep whole lines in order', async (t) => {
  const { dir, cleanup } = tempDir('jsonl');
  t.after(cleanup);
  const path = join(dir, 'a.jsonl');
  const sink = await JsonlSink.open({ type: 'jsonl', path, fsync: false });
  const alerts = Array.from({ length: 200 }, (_, i) =>
    makeAlert({ id: `a${i}`, evidence: { pad: 'y'.repeat(i * 50) } }),
  );
  await Promise.all(alerts.map((a) => sink.write(a)));
  await sink.close();
  const ids = readLines(path).lines.map((l) => JSON.parse(l).event.id);
  assert.deepEqual(
    ids,
    alerts.map((a) => a.id),
  );
});

test('rotates by size and keeps N files', async (t) => {
  const { dir, cleanup } = tempDir('jsonl');
  t.after(cleanup);
  const path = join(dir, 'r.jsonl');
  const sink = await JsonlSink.open({ type: 'jsonl', path, maxBytes: 4096, keep: 2, fsync: false });
  const written: string[] = [];
  for (let i = 0; i < 40; i++) {
    const a = makeAlert({ id: `r${i}` });
    written.push(a.id);
    await sink.write(a);
  }
  await sink.close();
  assert.ok(existsSync(`${path}.1`) && existsSync(`${path}.2`));
  assert.ok(!existsSync(`${path}.3`));
  const files = [`${path}.2`, `${path}.1`, path];
  const ids: string[] = [];
  for (const f of files) {
    assert.ok(statSync(f).size <= 4096, `${f} within maxBytes`);
    const { lines, tail } = readLines(f);
    assert.equal(tail, '');
    ids.push(...lines.map((l) => JSON.parse(l).event.id));
  }
  // The newest alerts, in order, with nothing missing between the oldest kept and the last written.
  assert.deepEqual(ids, written.slice(written.length - ids.length));
  assert.ok(ids.length >= 10);
});

test('keep: 0 discards on rotation', async (t) => {
  const { dir, cleanup } = tempDir('jsonl');
  t.after(cleanup);
  const path = join(dir, 'k.jsonl');
  const sink = await JsonlSink.open({ type: 'jsonl', path, maxBytes: 2048, keep: 0, fsync: false });
  for (let i = 0; i < 20; i++) await sink.write(makeAlert());
  await sink.close();
  assert.ok(!existsSync(`${path}.1`));
  assert.ok(readLines(path).lines.length > 0);
});

test('a torn last line is cut when the file is opened again', async (t) => {
  const { dir, cleanup } = tempDir('jsonl');
  t.after(cleanup);
  const path = join(dir, 't.jsonl');
  const good = JSON.stringify({ ok: 1 }) + '\n';
  writeFileSync(path, good + '{"event":{"id":"torn');
  const sink = await JsonlSink.open({ type: 'jsonl', path });
  assert.equal(sink.repairedBytes, '{"event":{"id":"torn'.length);
  await sink.write(makeAlert({ id: 'after' }));
  await sink.close();
  const { lines, tail } = readLines(path);
  assert.equal(tail, '');
  assert.deepEqual(
    lines.map((l) => JSON.parse(l).event?.id ?? 'first'),
    ['first', 'after'],
  );
  // A file of nothing but a fragment is emptied.
  writeFileSync(path, 'no newline at all');
  const again = await JsonlSink.open({ type: 'jsonl', path });
  assert.equal(again.repairedBytes, 17);
  await again.close();
  assert.equal(statSync(path).size, 0);
});

test('kill -9 mid-stream: every complete line parses, and a reopen removes any torn tail', async (t) => {
  const { dir, cleanup } = tempDir('jsonl-kill');
  t.after(cleanup);
  const child = fileURLToPath(new URL('./jsonl.kill-child.js', import.meta.url));
  const rounds = 8;
  let torn = 0;
  let total = 0;
  for (let round = 0; round < rounds; round++) {
    const path = join(dir, `k${round}.jsonl`);
    // Odd rounds rotate too, so a kill can also land around a rotation; rounds 4 and 5 write large lines
    // without fsync, which makes a kill inside a write (a torn tail) likely.
    const args = [
      child,
      path,
      round % 2 ? '2000000' : '',
      round >= 4 ? 'nofsync' : 'fsync',
      round >= 4 ? '400000' : '40000',
    ];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    assert.ok(await waitFor(() => out.includes('ready'), 10_000), 'child started');
    // Let it write for a while (different in every round), then kill it wherever it is.
    const bytes = () =>
      [path, `${path}.1`].reduce(
        (n, f) => n + (existsSync(f) ? (statSync(f, { throwIfNoEntry: false })?.size ?? 0) : 0),
        0,
      );
    assert.ok(await waitFor(() => bytes() > 50_000, 10_000, 2), 'child is writing');
    await new Promise((r) => setTimeout(r, 37 * round + 20));
    proc.kill('SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    const files = [path, `${path}.1`, `${path}.2`, `${path}.3`].filter((f) => existsSync(f));
    for (const f of files) {
      const { lines, tail } = readLines(f);
      for (const l of lines) assert.equal(JSON.parse(l).event.kind, 'alert');
      total += lines.length;
      if (tail !== '') {
        assert.equal(f, path, 'only the live file can have a torn tail');
        torn++;
      }
    }
    const reopened = await JsonlSink.open({ type: 'jsonl', path });
    await reopened.close();
    assert.equal(readLines(path).tail, '');
  }
  t.diagnostic(`${rounds} kills, ${total} complete lines, ${torn} torn tail(s) repaired on reopen`);
  assert.ok(total > rounds);
});
