import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseQemuArgv, parseQemuSize } from './cmdline.js';

test('QEMU sizes: bare numbers are MiB for -m, bytes for backends', () => {
  assert.equal(parseQemuSize('256'), 256n << 20n);
  assert.equal(parseQemuSize('3G'), 3n << 30n);
  assert.equal(parseQemuSize('512M'), 512n << 20n);
  assert.equal(parseQemuSize('268435456', 'B'), 268435456n);
  assert.equal(parseQemuSize('lots'), undefined);
});

test('RAM size and machine from a libvirt-style and a lab-style command line', () => {
  const libvirt = [
    'qemu-system-x86_64',
    '-name',
    'guest=web',
    '-machine',
    'pc-q35-7.2,usb=off',
    '-m',
    'size=4194304k',
  ];
  assert.deepEqual(parseQemuArgv(libvirt), { ramSize: 4n << 30n, machine: 'q35' });
  const lab = [
    'qemu',
    '-object',
    'memory-backend-file,id=mem,size=256M,share=on',
    '-machine',
    'q35,memory-backend=mem',
  ];
  assert.deepEqual(parseQemuArgv(lab), { ramSize: 256n << 20n, machine: 'q35' });
  assert.deepEqual(parseQemuArgv(['qemu', '-m', '2048']), { ramSize: 2n << 30n, machine: 'pc' });
});
