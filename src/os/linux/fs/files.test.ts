import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VigilError } from '../../../util/errors.js';
import { fdLinkPermissions, filesOf, formatDev, MAX_FDS, openFiles, socketOfFile } from './files.js';
import { FakeKernel } from './testkit.js';

/** A task with an fd table: 0 a regular file, 1 a char device, 3 a socket, 4 a pipe, 6 an eventfd, 7 a memfd. */
function process() {
  const k = new FakeKernel();
  // Symbols first: walkers cache them per boot.
  const socketOps = k.symbol('socket_file_ops');
  const dnames = new Map<string, bigint>();
  for (const fn of ['pipefs_dname', 'sockfs_dname', 'anon_inodefs_dname']) {
    const op = k.alloc('dentry_operations');
    k.set(op, 'dentry_operations', 'd_dname', k.symbol(fn));
    dnames.set(fn, op);
  }
  const rootSb = k.superBlock('ext4', (8 << 20) | 1);
  const root = k.dentry('/', undefined, { sb: rootSb });
  const rootMnt = k.mount(root);
  const etc = k.dentry('etc', root, { sb: rootSb });
  const passwdInode = k.inode(rootSb, 1234, 0o100644);
  const passwd = k.dentry('passwd', etc, { sb: rootSb, inode: passwdInode });
  const devSb = k.superBlock('devtmpfs', 5);
  const devRoot = k.dentry('/', undefined, { sb: devSb });
  const devDir = k.dentry('dev', root, { sb: rootSb });
  const devMnt = k.mount(devRoot, rootMnt, devDir);
  const nullInode = k.inode(devSb, 4, 0o20666, (1 << 20) | 3);
  const devNull = k.dentry('null', devRoot, { sb: devSb, inode: nullInode });

  const sockSb = k.superBlock('sockfs', 8);
  const sockRoot = k.dentry('socket:', undefined, { sb: sockSb });
  const sockInode = k.inode(sockSb, 10259, 0o140777);
  const sockD = k.dentry('', sockRoot, { sb: sockSb, inode: sockInode, op: dnames.get('sockfs_dname')! });
  const pipeSb = k.superBlock('pipefs', 13);
  const pipeRoot = k.dentry('pipe:', undefined, { sb: pipeSb });
  const pipeInode = k.inode(pipeSb, 10254, 0o10600);
  const pipeD = k.dentry('', pipeRoot, {
    sb: pipeSb,
    inode: pipeInode,
    op: dnames.get('pipefs_dname')!,
    hashed: false,
  });
  const anonSb = k.superBlock('anon_inodefs', 14);
  const anonRoot = k.dentry('anon_inode:', undefined, { sb: anonSb });
  const anonInode = k.inode(anonSb, 1, 0o600);
  const efdD = k.dentry('[eventfd]', anonRoot, {
    sb: anonSb,
    inode: anonInode,
    op: dnames.get('anon_inodefs_dname')!,
  });
  const shmSb = k.superBlock('tmpfs', 1);
  const shmRoot = k.dentry('/', undefined, { sb: shmSb });
  const memfdInode = k.inode(shmSb, 2048, 0o100777);
  const memfdD = k.dentry('memfd:payload', shmRoot, { sb: shmSb, inode: memfdInode, hashed: false });

  const fPasswd = k.file(passwd, rootMnt, passwdInode, { flags: 0o100000, mode: 1, pos: 42 });
  const fNull = k.file(devNull, devMnt, nullInode, { flags: 0o100001, mode: 2 });
  const fSock = k.file(sockD, k.mount(sockRoot), sockInode, { flags: 2, mode: 3 });
  k.set(fSock, 'file', 'f_op', socketOps);
  const socket = k.alloc('socket');
  const sock = k.alloc(64);
  k.set(fSock, 'file', 'private_data', socket);
  k.set(socket, 'socket', 'sk', sock);
  const fPipe = k.file(pipeD, k.mount(pipeRoot), pipeInode, { mode: 1 });
  const fEfd = k.file(efdD, k.mount(anonRoot), anonInode, { mode: 3 });
  const fMemfd = k.file(memfdD, k.mount(shmRoot), memfdInode, { mode: 3 });

  const maxFds = 64;
  const fdArray = k.alloc(maxFds * 8);
  const bitmap = k.alloc(8);
  const install: [number, bigint][] = [
    [0, fPasswd],
    [1, fNull],
    [3, fSock],
    [4, fPipe],
    [6, fEfd],
    [7, fMemfd],
  ];
  let bits = 0n;
  for (const [fd, f] of install) {
    k.writeU64(fdArray + BigInt(fd * 8), f);
    bits |= 1n << BigInt(fd);
  }
  k.writeU64(bitmap, bits);
  const fdt = k.alloc('fdtable');
  k.set(fdt, 'fdtable', 'max_fds', maxFds);
  k.set(fdt, 'fdtable', 'fd', fdArray);
  k.set(fdt, 'fdtable', 'open_fds', bitmap);
  const files = k.alloc('files_struct');
  k.set(files, 'files_struct', 'fdt', fdt);
  const task = k.alloc('task_struct');
  k.set(task, 'task_struct', 'files', files);
  return { k, task, files, fdt, fdArray, bitmap, fSock, socket, sock, fPasswd };
}

function noThrow<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    assert.ok(e instanceof VigilError, `threw a non-VigilError: ${String(e)}`);
    throw e;
  }
}

test('open files: fd, kind, path, inode, device, flags, position', () => {
  const p = process();
  const files = openFiles(p.k, p.task);
  assert.deepEqual(
    files.map((f) => [f.fd, f.kind, f.path, f.detail]),
    [
      [0, 'regular', '/etc/passwd', undefined],
      [1, 'char', '/dev/null', undefined],
      [3, 'socket', 'socket:[10259]', undefined],
      [4, 'pipe', 'pipe:[10254]', undefined],
      [6, 'anon_inode', 'anon_inode:[eventfd]', 'eventfd'],
      [7, 'memfd', '/memfd:payload (deleted)', 'payload'],
    ],
  );
  const [passwd, devNull, sock] = files;
  assert.equal(passwd!.inode, 1234n);
  assert.equal(passwd!.dev, '08:01');
  assert.equal(passwd!.pos, 42n);
  assert.equal(passwd!.flags, 0o100000);
  assert.equal(passwd!.fsType, 'ext4');
  assert.equal(devNull!.rdev, '01:03');
  assert.equal(devNull!.dev, '00:05');
  assert.equal(sock!.socket, p.socket);
  assert.equal(sock!.sock, p.sock);
  assert.equal(files[5]!.deleted, true);
  assert.deepEqual(p.k.issues.items, []);
});

test('socketOfFile: only files whose f_op is socket_file_ops', () => {
  const p = process();
  assert.equal(socketOfFile(p.k, p.fSock), p.sock);
  assert.equal(socketOfFile(p.k, p.fPasswd), undefined);
  assert.equal(socketOfFile(p.k, 0xdead_0000_0000n), undefined);
});

test('ls -l permissions of fd links and device numbers', () => {
  assert.equal(fdLinkPermissions(1), 'lr-x------');
  assert.equal(fdLinkPermissions(2), 'l-wx------');
  assert.equal(fdLinkPermissions(3), 'lrwx------');
  assert.equal(fdLinkPermissions(0), 'l---------');
  assert.equal(formatDev((259 << 20) | 0x12345), '103:12345');
});

test('a task without files, and an fd installed outside the open_fds bitmap', () => {
  const p = process();
  const bare = p.k.alloc('task_struct');
  assert.deepEqual(openFiles(p.k, bare), []);
  p.k.writeU64(p.fdArray + 9n * 8n, p.fPasswd);
  const files = openFiles(p.k, p.task);
  const nine = files.find((f) => f.fd === 9);
  assert.equal(nine?.notInBitmap, true);
  assert.equal(nine?.path, '/etc/passwd');
  assert.ok(p.k.issues.items.some((i) => i.kind === 'malformed' && i.detail.includes('fd 9')));
});

test('corrupt: max_fds = 2^31 is capped at MAX_FDS', () => {
  const p = process();
  // Move the 64-slot array where nothing follows it, so slots past 64 are unmapped, not other objects.
  const lone = 0xffff_9990_0000_0000n;
  p.k.space.write(lone, p.k.space.tryRead(p.fdArray, 64 * 8)!);
  p.k.set(p.fdt, 'fdtable', 'fd', lone);
  p.k.set(p.fdt, 'fdtable', 'max_fds', 2 ** 31);
  const t0 = performance.now();
  const files = noThrow(() => filesOf(p.k, p.files));
  const ms = performance.now() - t0;
  // The six real fds are still found; the rest of the (unmapped) array is skipped slot by slot.
  assert.deepEqual(
    files.map((f) => f.fd),
    [0, 1, 3, 4, 6, 7],
  );
  const bound = p.k.issues.items.find((i) => i.kind === 'bound');
  assert.ok(bound, 'a bound issue');
  assert.match(bound.detail, new RegExp(`${2 ** 31} fds: only ${MAX_FDS}`));
  assert.ok(ms < 5000, `took ${ms} ms`);
});

test('corrupt: unreadable fdtable, fd array, file and inode', () => {
  const p = process();
  p.k.set(p.files, 'files_struct', 'fdt', 0xdead_0000_0000n);
  assert.deepEqual(
    noThrow(() => filesOf(p.k, p.files)),
    [],
  );
  assert.equal(p.k.issues.items.at(-1)?.kind, 'unmapped');

  const q = process();
  q.k.set(q.fdt, 'fdtable', 'fd', 0n);
  assert.deepEqual(
    noThrow(() => filesOf(q.k, q.files)),
    [],
  );

  const r = process();
  r.k.writeU64(r.fdArray + 2n * 8n, 0xdead_0000_0000n); // a file pointer into nowhere
  r.k.set(r.fdt, 'fdtable', 'open_fds', 0xbad_0000_0000n); // and no bitmap
  const files = noThrow(() => filesOf(r.k, r.files));
  const two = files.find((f) => f.fd === 2);
  assert.equal(two?.kind, 'unknown');
  assert.ok(two?.path.startsWith('…'));
  const kinds = new Set(r.k.issues.items.map((i) => i.kind));
  assert.ok(kinds.has('unmapped'));
});
