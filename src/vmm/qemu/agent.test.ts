import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { attachAgent, locateAgent, parseChardevFilename, type QmpExecutor } from './agent.js';

type Json = Record<string, unknown>;

/** QOM and query-chardev as QEMU 7.2 answers them for the lab guest (an anonymous virtserialport). */
function fakeQmp(opts: {
  peripheral?: { name: string; type: string }[];
  anon?: { name: string; type: string }[];
  props?: Record<string, Json>;
  chardevs?: Json[];
}): QmpExecutor & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async execute<T>(command: string, args?: Json): Promise<T> {
      calls.push(command);
      if (command === 'qom-list') {
        const list =
          args?.path === '/machine/peripheral'
            ? (opts.peripheral ?? [])
            : args?.path === '/machine/peripheral-anon'
              ? (opts.anon ?? [])
              : undefined;
        if (!list) throw new Error('no such path');
        return [{ name: 'type', type: 'string' }, ...list] as T;
      }
      if (command === 'qom-get') {
        const v = opts.props?.[args?.path as string]?.[args?.property as string];
        if (v === undefined) throw new Error('no such property');
        return v as T;
      }
      if (command === 'query-chardev') return (opts.chardevs ?? []) as T;
      throw new Error(`unexpected ${command}`);
    },
  };
}

const LAB_ANON = [
  { name: 'device[0]', type: 'child<virtio-net-pci>' },
  { name: 'device[1]', type: 'child<virtio-serial-pci>' },
  { name: 'device[2]', type: 'child<virtserialport>' },
];

describe('finding the guest agent through QOM', () => {
  it('parses socket chardev filenames, connected or not', () => {
    assert.deepEqual(parseChardevFilename('disconnected:unix:/run/vm/qga.sock,server=on'), {
      address: '/run/vm/qga.sock',
      connected: false,
    });
    assert.deepEqual(parseChardevFilename('unix:/run/vm/qga.sock,server=on'), {
      address: '/run/vm/qga.sock',
      connected: true,
    });
    assert.deepEqual(parseChardevFilename('disconnected:tcp:127.0.0.1:4444,server=on'), {
      address: 'tcp:127.0.0.1:4444',
      connected: false,
    });
    assert.deepEqual(parseChardevFilename('tcp:127.0.0.1:4444,server=on <-> 127.0.0.1:50000'), {
      address: 'tcp:127.0.0.1:4444',
      connected: true,
    });
    assert.equal(parseChardevFilename('pty:/dev/pts/3'), undefined);
    assert.equal(parseChardevFilename('gdb'), undefined);
  });

  it('finds an anonymous org.qemu.guest_agent.0 port and its socket', async () => {
    const qmp = fakeQmp({
      anon: LAB_ANON,
      props: {
        '/machine/peripheral-anon/device[2]': { name: 'org.qemu.guest_agent.0', chardev: 'qga0' },
      },
      chardevs: [
        { label: 'serial0', filename: 'disconnected:unix:/r/serial.sock,server=on', 'frontend-open': true },
        { label: 'qga0', filename: 'disconnected:unix:/r/qga.sock,server=on', 'frontend-open': true },
      ],
    });
    assert.deepEqual(await locateAgent(qmp), { socket: '/r/qga.sock' });
  });

  it('finds a port with an id (libvirt: channel0 on charchannel0) and skips other ports', async () => {
    const qmp = fakeQmp({
      peripheral: [
        { name: 'channel1', type: 'child<virtserialport>' },
        { name: 'channel0', type: 'child<virtserialport>' },
      ],
      props: {
        '/machine/peripheral/channel1': { name: 'org.qemu.spice.0', chardev: 'charchannel1' },
        '/machine/peripheral/channel0': { name: 'org.qemu.guest_agent.0', chardev: 'charchannel0' },
      },
      chardevs: [
        { label: 'charchannel0', filename: 'disconnected:unix:/var/lib/libvirt/qemu/ch0,server=on' },
      ],
    });
    assert.deepEqual(await locateAgent(qmp), { socket: '/var/lib/libvirt/qemu/ch0' });
  });

  it('says nothing for a VM without an agent port', async () => {
    const qmp = fakeQmp({ anon: [{ name: 'device[0]', type: 'child<virtio-net-pci>' }] });
    assert.deepEqual(await locateAgent(qmp), {});
    assert.ok(!qmp.calls.includes('query-chardev'));
    assert.deepEqual(await attachAgent(qmp, 'auto'), {});
  });

  it('reports, without waiting, a port the guest has not opened or another client holds', async () => {
    const props = {
      '/machine/peripheral-anon/device[2]': { name: 'org.qemu.guest_agent.0', chardev: 'qga0' },
    };
    const closed = fakeQmp({
      anon: LAB_ANON,
      props,
      chardevs: [
        { label: 'qga0', filename: 'disconnected:unix:/r/qga.sock,server=on', 'frontend-open': false },
      ],
    });
    const a = await attachAgent(closed, 'auto');
    assert.equal(a.agent, undefined);
    assert.match(a.problem ?? '', /not opened its agent port/);
    const held = fakeQmp({
      anon: LAB_ANON,
      props,
      chardevs: [{ label: 'qga0', filename: 'unix:/r/qga.sock,server=on', 'frontend-open': true }],
    });
    const b = await attachAgent(held, 'auto');
    assert.equal(b.agent, undefined);
    assert.match(b.problem ?? '', /another client .* holds the guest agent socket \/r\/qga.sock/);
  });

  it('reports a chardev that is not a socket', async () => {
    const qmp = fakeQmp({
      anon: LAB_ANON,
      props: { '/machine/peripheral-anon/device[2]': { name: 'org.qemu.guest_agent.0', chardev: 'qga0' } },
      chardevs: [{ label: 'qga0', filename: 'pty:/dev/pts/4' }],
    });
    assert.match((await locateAgent(qmp)).problem ?? '', /not a socket vigil can open \(pty:\/dev\/pts\/4\)/);
  });

  describe('attaching', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vigil-agent-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('leaves the agent out, with the reason, when the socket accepts but nothing answers', async () => {
      const path = join(dir, 'silent.sock');
      const sockets: net.Socket[] = [];
      const server = net.createServer((s) => sockets.push(s));
      await new Promise<void>((r) => server.listen(path, r));
      const t0 = Date.now();
      const a = await attachAgent(fakeQmp({}), path, { timeoutMs: 150 });
      assert.ok(Date.now() - t0 < 2000);
      assert.equal(a.agent, undefined);
      assert.equal(a.socket, path);
      assert.match(a.problem ?? '', /did not answer guest-sync-delimited within 150 ms/);
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    });

    it('reports a named socket that does not exist', async () => {
      const a = await attachAgent(fakeQmp({}), join(dir, 'none.sock'));
      assert.equal(a.agent, undefined);
      assert.match(a.problem ?? '', /no qemu-guest-agent socket at/);
    });

    it('skips the agent when told to', async () => {
      const qmp = fakeQmp({});
      assert.deepEqual(await attachAgent(qmp, false), {});
      assert.deepEqual(qmp.calls, []);
    });
  });
});
