import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { VigilError } from '../util/errors.js';
import {
  attackSources,
  buildAttacks,
  hashAttackSources,
  headersDir,
  headersPackage,
  moduleVermagic,
} from './attacks-build.js';

describe('attack suite build inputs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-attacks-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'src'));
  mkdirSync(join(dir, 'rootkit'));
  mkdirSync(join(dir, 'run'));
  writeFileSync(join(dir, 'Makefile'), 'all:\n');
  writeFileSync(join(dir, 'src', 'a.c'), 'int main(void) { return 0; }\n');
  writeFileSync(join(dir, 'rootkit', 'vigilkit.c'), '// module\n');
  writeFileSync(join(dir, 'run', 'sniffer'), '#!/bin/sh\n');
  chmodSync(join(dir, 'run', 'sniffer'), 0o755);
  // kbuild leftovers and documentation, which must not be hashed
  for (const f of [
    'vigilkit.o',
    'vigilkit.ko',
    'vigilkit.mod.c',
    '.vigilkit.o.cmd',
    'modules.order',
    'README.md',
  ]) {
    writeFileSync(join(dir, 'rootkit', f), 'x');
  }

  it('lists the sources, sorted, without build leftovers', () => {
    assert.deepEqual(attackSources(dir), ['Makefile', 'rootkit/vigilkit.c', 'run/sniffer', 'src/a.c']);
  });

  it('hashes sources and release: any change gives another cache key', () => {
    const h = hashAttackSources(dir, '6.1.0-56-amd64');
    assert.match(h, /^[0-9a-f]{16}$/);
    assert.equal(hashAttackSources(dir, '6.1.0-56-amd64'), h);
    assert.notEqual(hashAttackSources(dir, '6.1.0-57-amd64'), h);
    writeFileSync(join(dir, 'rootkit', 'vigilkit.o'), 'changed'); // a leftover: no effect
    assert.equal(hashAttackSources(dir, '6.1.0-56-amd64'), h);
    chmodSync(join(dir, 'run', 'sniffer'), 0o644);
    assert.notEqual(hashAttackSources(dir, '6.1.0-56-amd64'), h, 'the executable bit counts');
    chmodSync(join(dir, 'run', 'sniffer'), 0o755);
    writeFileSync(join(dir, 'src', 'a.c'), 'int main(void) { return 1; }\n');
    assert.notEqual(hashAttackSources(dir, '6.1.0-56-amd64'), h);
  });

  it('reads the vermagic of a module', () => {
    const ko = Buffer.concat([
      Buffer.from('\x7fELF junk\0license=GPL\0'),
      Buffer.from('vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \0'),
      Buffer.from('name=vk_hide\0'),
    ]);
    assert.equal(moduleVermagic(ko), '6.1.0-56-amd64 SMP preempt mod_unload modversions ');
    assert.equal(moduleVermagic(Buffer.from('no magic here')), undefined);
    assert.equal(moduleVermagic(Buffer.from('vermagic=unterminated')), undefined);
  });

  it('names the headers of the exact release', () => {
    assert.equal(headersPackage('6.1.0-56-amd64'), 'linux-headers-6.1.0-56-amd64');
    assert.equal(headersDir('6.1.0-56-cloud-amd64'), '/usr/src/linux-headers-6.1.0-56-cloud-amd64');
  });
});

describe('attack suite build', () => {
  it('fails with a clear error naming the headers package when apt-get cannot install it', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'vigil-attacks-apt-'));
    const bin = join(tmp, 'bin');
    mkdirSync(bin);
    // An apt-get that fails the way it does for a user who is not root.
    writeFileSync(
      join(bin, 'apt-get'),
      '#!/bin/sh\necho "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)" >&2\nexit 100\n',
    );
    chmodSync(join(bin, 'apt-get'), 0o755);
    const saved = { PATH: process.env.PATH, VIGIL_CACHE: process.env.VIGIL_CACHE };
    process.env.PATH = `${bin}:${saved.PATH ?? ''}`;
    process.env.VIGIL_CACHE = join(tmp, 'cache');
    const release = '0.0.0-vigiltest-amd64';
    try {
      await assert.rejects(
        buildAttacks({
          flavour: 'amd64',
          package: `linux-image-${release}`,
          release,
          vmlinuz: join(tmp, 'vmlinuz'),
          modulesDir: join(tmp, 'modules'),
        }),
        (e: unknown) =>
          e instanceof VigilError &&
          e.kind === 'not-found' &&
          e.message.includes(`needs linux-headers-${release}`) &&
          e.message.includes('Permission denied') &&
          e.message.includes(`apt-get install linux-headers-${release}`),
      );
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.VIGIL_CACHE === undefined) delete process.env.VIGIL_CACHE;
      else process.env.VIGIL_CACHE = saved.VIGIL_CACHE;
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
