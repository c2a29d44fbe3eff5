import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import { dentryPath, filePath, MAX_PATH_BYTES, resolvePath, TRUNCATED_MARK } from './path.js';
import { FakeKernel } from './testkit.js';

/** A root file system with /etc/passwd, /tmp/mnt (a tmpfs mounted there) and a file inside it. */
function world() {
  const k = new FakeKernel();
  const rootSb = k.superBlock('rootfs');
  const root = k.dentry('/', undefined, { sb: rootSb });
  const etc = k.dentry('etc', root, { sb: rootSb });
  const passwd = k.dentry('passwd', etc, { sb: rootSb });
  const tmp = k.dentry('tmp', root, { sb: rootSb });
  const mntDir = k.dentry('mnt', tmp, { sb: rootSb });
  const rootMnt = k.mount(root);
  const tmpfsSb = k.superBlock('tmpfs');
  const tmpfsRoot = k.dentry('/', undefined, { sb: tmpfsSb });
  const inner = k.dentry('inner', tmpfsRoot, { sb: tmpfsSb });
  const file = k.dentry('file', inner, { sb: tmpfsSb });
  const tmpfsMnt = k.mount(tmpfsRoot, rootMnt, mntDir);
  return { k, root, etc, passwd, tmp, mntDir, rootMnt, tmpfsRoot, inner, file, tmpfsMnt, rootSb };
}

/** Every throw must be a VigilError; walks on corrupt data should not throw at all. */
function noThrow<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    assert.ok(e instanceof VigilError, `threw a non-VigilError: ${String(e)}`);
    throw e;
  }
}

test('a path inside one mount', () => {
  const w = world();
  assert.equal(dentryPath(w.k, w.passwd, w.rootMnt), '/etc/passwd');
  assert.equal(dentryPath(w.k, w.root, w.rootMnt), '/');
  assert.equal(dentryPath(w.k, w.passwd), '/etc/passwd', 'without a mount: up to IS_ROOT');
  assert.deepEqual(w.k.issues.items, []);
});

test('crossing into the parent mount at a mount root', () => {
  const w = world();
  assert.equal(dentryPath(w.k, w.file, w.tmpfsMnt), '/tmp/mnt/inner/file');
  assert.equal(dentryPath(w.k, w.tmpfsRoot, w.tmpfsMnt), '/tmp/mnt');
  // Without the mount, the walk stops at the tmpfs root: the path within that file system.
  assert.equal(dentryPath(w.k, w.file), '/inner/file');
});

test('a bind mount shows the path where it is mounted', () => {
  const w = world();
  const etcView = w.k.dentry('etcview', w.mntDir, { sb: w.rootSb });
  // /etc bound at /tmp/mnt/etcview: the mount's root is the etc dentry of the root file system.
  const bind = w.k.mount(w.etc, w.rootMnt, etcView);
  assert.equal(dentryPath(w.k, w.passwd, bind), '/tmp/mnt/etcview/passwd');
});

test('nested mounts cross one after another', () => {
  const w = world();
  const sb2 = w.k.superBlock('tmpfs');
  const r2 = w.k.dentry('/', undefined, { sb: sb2 });
  const leaf = w.k.dentry('leaf', r2, { sb: sb2 });
  const m2 = w.k.mount(r2, w.tmpfsMnt, w.inner);
  assert.equal(dentryPath(w.k, leaf, m2), '/tmp/mnt/inner/leaf');
});

test('an unlinked dentry gets " (deleted)", a root never does', () => {
  const w = world();
  const gone = w.k.dentry('gone', w.tmp, { sb: w.rootSb, hashed: false });
  const r = resolvePath(w.k, gone, w.rootMnt);
  assert.equal(r.path, '/tmp/gone (deleted)');
  assert.equal(r.deleted, true);
  const lonely = w.k.dentry('/', undefined, { hashed: false });
  assert.equal(dentryPath(w.k, lonely), '/');
});

test('a memfd: unlinked on the internal shmem mount', () => {
  const k = new FakeKernel();
  const sb = k.superBlock('tmpfs');
  const shmRoot = k.dentry('/', undefined, { sb });
  const shm = k.mount(shmRoot);
  const memfd = k.dentry('memfd:payload', shmRoot, { sb, hashed: false });
  assert.equal(dentryPath(k, memfd, shm), '/memfd:payload (deleted)');
});

test('a dentry escaping its mount shows "/" like the kernel', () => {
  const w = world();
  const otherRoot = w.k.dentry('/', undefined);
  const stray = w.k.dentry('stray', otherRoot);
  assert.equal(dentryPath(w.k, stray, w.tmpfsMnt), '/');
});

test('synthetic files are named by their d_dname', () => {
  const k = new FakeKernel();
  // Symbols never change within a boot (walkers cache them): declare every d_dname before the first walk.
  const fns = [
    'pipefs_dname',
    'sockfs_dname',
    'anon_inodefs_dname',
    'simple_dname',
    'ns_dname',
    'some_new_dname',
  ];
  const opsOf = new Map<string, bigint>();
  for (const fn of fns) {
    const op = k.alloc('dentry_operations');
    k.set(op, 'dentry_operations', 'd_dname', k.symbol(fn));
    opsOf.set(fn, op);
  }
  k.syms.delete('some_new_dname');
  const ops = (fn: string): bigint => opsOf.get(fn)!;
  const pipeSb = k.superBlock('pipefs');
  const pipeRoot = k.dentry('pipe:', undefined, { sb: pipeSb });
  const pipe = k.dentry('', pipeRoot, {
    sb: pipeSb,
    op: ops('pipefs_dname'),
    inode: k.inode(pipeSb, 10254, 0o10600),
    hashed: false,
  });
  const pipeMnt = k.mount(pipeRoot);
  assert.deepEqual(resolvePath(k, pipe, pipeMnt), { path: 'pipe:[10254]', deleted: false, pseudo: 'pipefs' });

  const sockSb = k.superBlock('sockfs');
  const sockRoot = k.dentry('socket:', undefined, { sb: sockSb });
  const sock = k.dentry('', sockRoot, {
    sb: sockSb,
    op: ops('sockfs_dname'),
    inode: k.inode(sockSb, 77, 0o140777),
  });
  assert.equal(dentryPath(k, sock, k.mount(sockRoot)), 'socket:[77]');

  const anonSb = k.superBlock('anon_inodefs');
  const anonRoot = k.dentry('anon_inode:', undefined, { sb: anonSb });
  const efd = k.dentry('[eventfd]', anonRoot, { sb: anonSb, op: ops('anon_inodefs_dname') });
  assert.equal(dentryPath(k, efd, k.mount(anonRoot)), 'anon_inode:[eventfd]');

  const simpleRoot = k.dentry('/', undefined);
  const aio = k.dentry('[aio]', simpleRoot, { op: ops('simple_dname') });
  assert.equal(dentryPath(k, aio), '/[aio] (deleted)');

  // A d_dname vigil does not know: named after the file system type (pipefs → the pipe form).
  const odd = k.dentry('', pipeRoot, {
    sb: pipeSb,
    op: ops('some_new_dname'),
    inode: k.inode(pipeSb, 5, 0o10600),
  });
  assert.equal(dentryPath(k, odd, pipeMnt), 'pipe:[5]');

  // A mounted root of a pseudo file system is shown by path, not by d_dname.
  const nsRoot = k.dentry('/', undefined, { op: ops('ns_dname') });
  assert.equal(dentryPath(k, nsRoot, k.mount(nsRoot)), '/');
});

test('filePath follows f_path', () => {
  const w = world();
  const inode = w.k.inode(w.rootSb, 9, 0o100644);
  const f = w.k.file(w.passwd, w.rootMnt, inode);
  assert.equal(filePath(w.k, f), '/etc/passwd');
});

test('names with control characters are sanitised', () => {
  const w = world();
  const evil = w.k.dentry('a\x1b[31mb\nc', w.tmp, { sb: w.rootSb });
  assert.equal(dentryPath(w.k, evil, w.rootMnt), '/tmp/a\\x1b[31mb\\x0ac');
});

test('corrupt: a dentry parent loop (a → b → a) stops, marked, with a cycle issue', () => {
  const k = new FakeKernel();
  const a = k.dentry('a');
  const b = k.dentry('b', a);
  k.set(a, 'dentry', 'd_parent', b);
  const r = noThrow(() => resolvePath(k, a));
  assert.ok(r.path.startsWith(TRUNCATED_MARK), r.path);
  assert.equal(r.truncated, 'cycle');
  assert.equal(r.path, `${TRUNCATED_MARK}/b/a`);
  assert.equal(k.issues.items[0]?.kind, 'cycle');
});

test('corrupt: a mount parent loop stops with a cycle issue', () => {
  const k = new FakeKernel();
  const r1 = k.dentry('/');
  const r2 = k.dentry('/');
  const mp1 = k.dentry('x', r2);
  const mp2 = k.dentry('y', r1);
  const m1 = k.mount(r1);
  const m2 = k.mount(r2, m1, mp2);
  // Now point m1's parent at m2 on a mountpoint inside m2: m1 → m2 → m1 …
  const mntOff = BigInt(k.types.offsetof('mount', 'mnt'));
  k.set(m1 - mntOff, 'mount', 'mnt_parent', m2 - mntOff);
  k.set(m1 - mntOff, 'mount', 'mnt_mountpoint', mp1);
  const r = noThrow(() => resolvePath(k, r1, m1));
  assert.ok(r.path.startsWith(TRUNCATED_MARK));
  assert.equal(r.truncated, 'cycle');
});

test('corrupt: a path longer than PATH_MAX stops at the bound', () => {
  const k = new FakeKernel();
  let d = k.dentry('/');
  const name = 'n'.repeat(200);
  for (let i = 0; i < 40; i++) d = k.dentry(name, d);
  const r = noThrow(() => resolvePath(k, d));
  assert.equal(r.truncated, 'bound');
  assert.ok(r.path.length <= MAX_PATH_BYTES + 16);
  assert.ok(r.path.startsWith(TRUNCATED_MARK + '/'));
  // An absurd qstr length is the same bound, without reading 4 GiB.
  const huge = k.dentry('x', k.dentry('/'));
  k.set(huge, 'dentry', 'd_name.len', 0xffffffff);
  assert.equal(noThrow(() => resolvePath(k, huge)).truncated, 'bound');
});

test('corrupt: unmapped dentries, parents and names', () => {
  const k = new FakeKernel();
  const root = k.dentry('/');
  const a = k.dentry('a', root);
  k.set(a, 'dentry', 'd_parent', 0xdead_0000_0000n);
  const r = noThrow(() => resolvePath(k, a));
  assert.equal(r.truncated, 'unmapped');
  assert.equal(r.path, `${TRUNCATED_MARK}/a`);
  assert.equal(noThrow(() => resolvePath(k, 0x1234_5678_0000n)).truncated, 'unmapped');
  assert.equal(noThrow(() => resolvePath(k, 0n)).truncated, 'unmapped');
  const b = k.dentry('bee', root);
  k.set(b, 'dentry', 'd_name.name', 0xdead_0000_0000n);
  assert.equal(
    noThrow(() => dentryPath(k, b)),
    '/xxx',
    'unreadable names read as x like the kernel',
  );
  assert.ok(k.issues.items.every((i) => i.walker === 'd_path'));
});
