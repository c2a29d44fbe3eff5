import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../util/errors.js';
import { parseAptDepends } from './kernel.js';
import { expectedPaging, parseMemorySize, qemuArgs } from './qemu.js';

describe('memory sizes', () => {
  it('parses QEMU-style sizes into bytes', () => {
    assert.equal(parseMemorySize('256M'), 256 << 20);
    assert.equal(parseMemorySize('3G'), 3 * 2 ** 30);
    assert.equal(parseMemorySize('512MiB'), 512 << 20);
    assert.equal(parseMemorySize(String(128 << 20)), 128 << 20);
  });
  it('rejects odd, tiny and malformed sizes', () => {
    for (const bad of ['', 'lots', '1.5G', '32M', '100000K', '-1G', '2P']) {
      assert.throws(() => parseMemorySize(bad), VigilError, bad);
    }
  });
});

describe('expected paging mode', () => {
  it('is 5-level for TCG max, 4-level with la57=off', () => {
    assert.equal(expectedPaging('tcg', 'max'), 5);
    assert.equal(expectedPaging('tcg', 'max,la57=off'), 4);
    assert.equal(expectedPaging('tcg', 'qemu64'), 4);
    assert.equal(expectedPaging('tcg', 'qemu64,+la57'), 5);
  });
  it('follows the host CPU flags under KVM', () => {
    assert.equal(expectedPaging('kvm', 'host', 'flags\t: fpu vme la57 pku\n'), 5);
    assert.equal(expectedPaging('kvm', 'host', 'flags\t: fpu vme pku\n'), 4);
  });
});

describe('QEMU command line', () => {
  const args = qemuArgs({
    name: 'g',
    accel: 'tcg',
    cpu: 'max,la57=off',
    memoryBytes: 3 * 2 ** 30,
    kernel: '/k',
    initrd: '/i',
    append: 'console=ttyS0',
    memoryFile: '/dev/shm/vigil-g',
    qmp: '/r/qmp.sock',
    serial: '/r/serial.sock',
    qga: '/r/qga.sock',
    gdbPort: 4321,
    pidfile: '/r/qemu.pid',
  });
  const after = (flag: string) => args[args.indexOf(flag) + 1];
  it('puts RAM in a shared file of the right size', () => {
    assert.equal(after('-m'), '3072M');
    assert.equal(
      after('-object'),
      'memory-backend-file,id=mem,size=3072M,mem-path=/dev/shm/vigil-g,share=on',
    );
    assert.equal(after('-machine'), 'q35,memory-backend=mem');
  });
  it('wires the sockets, the GDB stub and the pidfile, and allows reboots', () => {
    assert.equal(after('-qmp'), 'unix:/r/qmp.sock,server=on,wait=off');
    assert.equal(after('-serial'), 'unix:/r/serial.sock,server=on,wait=off');
    assert.equal(after('-gdb'), 'tcp:127.0.0.1:4321');
    assert.equal(after('-pidfile'), '/r/qemu.pid');
    assert.equal(after('-accel'), 'tcg');
    assert.equal(after('-cpu'), 'max,la57=off');
    assert.ok(args.includes('-daemonize'));
    assert.ok(!args.includes('-no-reboot'));
  });
  it('gives the guest agent a virtio-serial port backed by a host socket', () => {
    const devices = args.filter((_, i) => args[i - 1] === '-device');
    assert.ok(devices.includes('virtio-serial-pci'));
    assert.ok(devices.includes('virtserialport,chardev=qga0,name=org.qemu.guest_agent.0'));
    assert.equal(after('-chardev'), 'socket,path=/r/qga.sock,server=on,wait=off,id=qga0');
  });
});

describe('apt-cache depends', () => {
  it('finds the versioned kernel package of a flavour', () => {
    const text = 'linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n';
    assert.equal(parseAptDepends(text, 'amd64'), 'linux-image-6.1.0-56-amd64');
    const cloud = 'linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n';
    assert.equal(parseAptDepends(cloud, 'cloud-amd64'), 'linux-image-6.1.0-56-cloud-amd64');
    assert.equal(parseAptDepends(cloud, 'amd64'), undefined);
    assert.equal(parseAptDepends('E: No packages found\n', 'amd64'), undefined);
    const trixie = 'linux-image-amd64\n  Depends: linux-image-6.12.43+deb13-amd64\n';
    assert.equal(parseAptDepends(trixie, 'amd64'), 'linux-image-6.12.43+deb13-amd64');
  });
});
