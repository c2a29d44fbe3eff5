// The reference guest end to end: boot (or reuse) it, run commands on its console, check that it runs the
// kernel apt resolves, that its RAM file is where the state says, and that failed boots leave nothing behind.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bootGuest, buildLab, guestStatus, resolveKernelPackage } from '../../src/lab/index.js';
import { guestDir } from '../../src/lab/paths.js';
import { VigilError } from '../../src/util/errors.js';
import { groundTruthPs, guestExec, guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-lab';
const here = dirname(fileURLToPath(import.meta.url));
const mainUrl = pathToFileURL(join(here, '../../src/cli/main.js')).href;

/** True when no process `pid` runs (a zombie counts as gone). */
function processGone(pid: number): boolean {
  try {
    return /\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** Run the vigil CLI in a child process. */
function vigil(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const script = `import { main } from ${JSON.stringify(mainUrl)}; process.exitCode = await main(process.argv.slice(1));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('lab guest', { timeout: 600_000 }, () => {
  it('boots the current Debian kernel and answers on its console', async () => {
    const g = await sharedGuest(GUEST);
    const pkg = await resolveKernelPackage('amd64');
    assert.equal(g.kernelRelease, pkg.replace(/^linux-image-/, ''));
    const version = await guestRun(g, 'cat /proc/version');
    assert.match(version, new RegExp(`^Linux version ${g.kernelRelease.replace(/\./g, '\\.')} `));
    assert.equal(await guestRun(g, 'uname -r'), `${g.kernelRelease}\n`);
  });

  it('keeps guest RAM in the memory file the state names, at the full size', async () => {
    const g = await sharedGuest(GUEST);
    assert.equal(g.memoryBytes, 256 * 1024 * 1024);
    assert.ok(existsSync(g.memoryFile), g.memoryFile);
    assert.equal(statSync(g.memoryFile).size, g.memoryBytes);
    assert.equal(g.paging, 5); // -cpu max under TCG offers LA57
  });

  it('returns output and exit status of console commands', async () => {
    const g = await sharedGuest(GUEST);
    assert.deepEqual(await guestExec(g, 'false'), { output: '', exitCode: 1 });
    assert.deepEqual(await guestExec(g, '(exit 7)'), { output: '', exitCode: 7 });
    assert.deepEqual(await guestExec(g, 'echo -n no-newline'), { output: 'no-newline', exitCode: 0 });
    assert.deepEqual(await guestExec(g, 'echo a; echo b >&2'), { output: 'a\nb\n', exitCode: 0 });
    const r = await guestExec(g, 'ip -4 addr show eth0');
    assert.match(r.output, /inet 10\.0\.2\.15\/24/);
  });

  it('recovers the console after a command times out', async () => {
    const g = await sharedGuest(GUEST);
    await assert.rejects(
      guestExec(g, 'sleep 30', 1500),
      (e: unknown) => e instanceof VigilError && e.kind === 'timeout',
    );
    assert.equal(await guestRun(g, 'echo alive'), 'alive\n');
  });

  it('reports ground-truth processes, including the lab services', async () => {
    const g = await sharedGuest(GUEST);
    const ps = await groundTruthPs(g);
    const byComm = (c: string) => ps.filter((p) => p.comm === c);
    assert.deepEqual(
      ps.find((p) => p.pid === 1),
      { pid: 1, ppid: 0, uid: 0, state: 'S', comm: 'init' },
    );
    assert.equal(byComm('vigil-idle').length, 1);
    assert.equal(byComm('vigil-idle')[0].uid, 0);
    assert.equal(byComm('vigil-user-idle')[0].uid, 1000);
    assert.ok(byComm('kthreadd').length === 1);
    assert.ok(!ps.some((p) => p.comm === 'vigil-ps'), 'vigil-ps leaves itself out');
  });

  it('reuses a running shared guest', async () => {
    const a = await sharedGuest(GUEST);
    const b = await sharedGuest(GUEST);
    assert.equal(a.pid, b.pid);
    assert.equal(guestStatus(GUEST)?.pid, a.pid);
  });

  it('drives the guest through the CLI', async () => {
    await sharedGuest(GUEST);
    const hi = vigil(['lab', 'exec', '--name', GUEST, '--', 'echo', 'hello']);
    assert.equal(hi.stdout, 'hello\n');
    assert.equal(hi.status, 0);
    const fail = vigil(['lab', 'exec', '--name', GUEST, '--', '(exit 3)']);
    assert.equal(fail.status, 3);
    const status = vigil(['lab', 'status', '--json']);
    assert.equal(status.status, 0);
    const guests = JSON.parse(status.stdout) as { name: string; pid: number }[];
    assert.ok(guests.some((x) => x.name === GUEST));
    const up = vigil(['lab', 'up', '--name', GUEST, '--json']);
    assert.equal(up.status, 0, up.stderr);
    assert.equal((JSON.parse(up.stdout) as { alreadyRunning: boolean }).alreadyRunning, true);
  });

  it('fails cleanly on a kernel that does not exist', async () => {
    const image = await buildLab();
    let pid: number | undefined;
    await assert.rejects(
      bootGuest({
        name: 'vigil-test-bogus',
        kernel: '/nonexistent/vmlinuz',
        initrd: image.initrd,
        onPid: (p) => (pid = p),
      }),
      (e: unknown) => e instanceof VigilError && /QEMU could not start/.test(e.message),
    );
    if (pid !== undefined) assert.ok(processGone(pid), `QEMU pid ${pid} still alive`);
    assert.equal(existsSync(guestDir('vigil-test-bogus')), false);
    assert.equal(existsSync('/dev/shm/vigil-vigil-test-bogus'), false);
  });

  it('kills QEMU by its PID and cleans up when the guest is not ready in time', async () => {
    const image = await buildLab();
    let pid: number | undefined;
    await assert.rejects(
      bootGuest({
        name: 'vigil-test-slow',
        kernel: image.kernel,
        initrd: image.initrd,
        readyTimeoutMs: 1000,
        onPid: (p) => (pid = p),
      }),
      (e: unknown) => e instanceof VigilError && e.kind === 'timeout',
    );
    assert.ok(pid !== undefined && pid > 1, 'QEMU started');
    assert.ok(processGone(pid), `QEMU pid ${pid} still alive`);
    assert.equal(existsSync(guestDir('vigil-test-slow')), false);
    assert.equal(existsSync('/dev/shm/vigil-vigil-test-slow'), false);
  });
});
