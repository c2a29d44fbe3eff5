import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Discovery, expandGlob, nameFromSocket, segmentRegExp } from './discovery.js';

let dir: string;
const servers: Server[] = [];

function listen(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(path, () => {
      servers.push(s);
      resolve(s);
    });
  });
}

const close = (s: Server) => new Promise<void>((r) => s.close(() => r()));

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vigil-disc-'));
  mkdirSync(join(dir, 'qemu-server'));
  mkdirSync(join(dir, 'run', 'web'), { recursive: true });
  mkdirSync(join(dir, 'run', 'db'), { recursive: true });
  mkdirSync(join(dir, 'run', 'empty'), { recursive: true });
  await listen(join(dir, 'qemu-server', '100.qmp'));
  await listen(join(dir, 'qemu-server', '101.qmp'));
  writeFileSync(join(dir, 'qemu-server', '102.qmp'), 'not a socket');
  await listen(join(dir, 'qemu-server', '.hidden.qmp'));
  await listen(join(dir, 'qemu-server', '100.qga'));
  await listen(join(dir, 'run', 'web', 'qmp.sock'));
  await listen(join(dir, 'run', 'db', 'qmp.sock'));
});

after(async () => {
  for (const s of servers) await close(s);
  rmSync(dir, { recursive: true, force: true });
});

test('names come from the socket stem, or from its folder for qmp.sock', () => {
  assert.equal(nameFromSocket('/var/run/qemu-server/100.qmp'), '100');
  assert.equal(nameFromSocket('/root/.cache/vigil/run/vigil-test-a/qmp.sock'), 'vigil-test-a');
  assert.equal(nameFromSocket('/run/vigil/web.qmp'), 'web');
  assert.equal(nameFromSocket('/run/x/my vm$.sock'), 'my_vm_');
  assert.equal(nameFromSocket('/run/vigil/.qmp'), 'vm');
  assert.equal(nameFromSocket('127.0.0.1:4444'), '127.0.0.1:4444');
});

test('glob segments: *, ?, classes, no leading dot, regex characters literal', () => {
  assert.ok(segmentRegExp('*.qmp').test('100.qmp'));
  assert.ok(!segmentRegExp('*.qmp').test('.x.qmp'));
  assert.ok(!segmentRegExp('*.qmp').test('100Xqmp'));
  assert.ok(segmentRegExp('.*.qmp').test('.x.qmp'));
  assert.ok(segmentRegExp('10?.qmp').test('101.qmp'));
  assert.ok(segmentRegExp('[0-9]*').test('7a'));
  assert.ok(!segmentRegExp('[!0-9]*').test('7a'));
  assert.ok(segmentRegExp('a+b(c)').test('a+b(c)'));
  assert.ok(segmentRegExp('x[').test('x['));
});

test('expandGlob finds sockets only, sorted, through wildcard folders', () => {
  assert.deepEqual(expandGlob(join(dir, 'qemu-server', '*.qmp')), [
    join(dir, 'qemu-server', '100.qmp'),
    join(dir, 'qemu-server', '101.qmp'),
  ]);
  assert.deepEqual(expandGlob(join(dir, 'run', '*', 'qmp.sock')), [
    join(dir, 'run', 'db', 'qmp.sock'),
    join(dir, 'run', 'web', 'qmp.sock'),
  ]);
  assert.deepEqual(expandGlob(join(dir, 'nowhere', '*', '*.qmp')), []);
  assert.deepEqual(expandGlob(join(dir, 'qemu-server', '100.qmp')), [join(dir, 'qemu-server', '100.qmp')]);
  assert.throws(() => expandGlob(join(dir, '**', '*.qmp')), /not supported/);
});

test('expandGlob stops at its entry budget', () => {
  assert.deepEqual(expandGlob(join(dir, 'qemu-server', '*.qmp'), { entries: 1 }), []);
});

test('Discovery reports sockets that appear and disappear', async () => {
  const found: string[] = [];
  const gone: string[] = [];
  const d = new Discovery({
    globs: [join(dir, 'run', '*', 'qmp.sock')],
    intervalMs: 60_000,
    onFound: (p) => found.push(p),
    onGone: (p) => gone.push(p),
  });
  assert.deepEqual(d.scan(), [join(dir, 'run', 'db', 'qmp.sock'), join(dir, 'run', 'web', 'qmp.sock')]);
  assert.equal(found.length, 2);
  d.scan();
  assert.equal(found.length, 2, 'a second scan reports nothing new');
  const extra = await listen(join(dir, 'run', 'empty', 'qmp.sock'));
  d.scan();
  assert.deepEqual(found.at(-1), join(dir, 'run', 'empty', 'qmp.sock'));
  await close(extra);
  servers.splice(servers.indexOf(extra), 1);
  d.scan();
  assert.deepEqual(gone, [join(dir, 'run', 'empty', 'qmp.sock')]);
  assert.throws(
    () => new Discovery({ globs: ['rel/*.qmp'], intervalMs: 1000, onFound() {}, onGone() {} }),
    /not absolute/,
  );
});
