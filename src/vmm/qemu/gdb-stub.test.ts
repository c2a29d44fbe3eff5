import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../../util/errors.js';
import type { Breakpoint, StopReply } from '../gdb/client.js';
import type { QmpStatus } from '../qmp/types.js';
import type { X86Registers } from '../types.js';
import {
  QemuGdbStub,
  attachGdbStub,
  findGdbStub,
  parseGdbChardev,
  type StubClient,
  type StubQmp,
} from './gdb-stub.js';

describe('the gdb chardev', () => {
  it('reads the address QEMU 7.2 prints for -gdb tcp:… and -s, free or in use', () => {
    // Both strings as query-chardev printed them on the lab guest.
    assert.deepEqual(parseGdbChardev('disconnected:tcp:127.0.0.1:44539,server=on'), {
      address: '127.0.0.1:44539',
      busy: false,
      filename: 'disconnected:tcp:127.0.0.1:44539,server=on',
    });
    assert.deepEqual(parseGdbChardev('tcp:127.0.0.1:44539,server=on <-> 127.0.0.1:33680'), {
      address: '127.0.0.1:44539',
      busy: true,
      filename: 'tcp:127.0.0.1:44539,server=on <-> 127.0.0.1:33680',
    });
    // -s is -gdb tcp::1234: every address, reached on loopback.
    assert.equal(parseGdbChardev('disconnected:tcp::1234,server=on')?.address, '127.0.0.1:1234');
    assert.equal(parseGdbChardev('disconnected:tcp:0.0.0.0:1234,server=on')?.address, '127.0.0.1:1234');
    assert.equal(parseGdbChardev('disconnected:tcp::::1234,server=on')?.address, '[::1]:1234');
    assert.equal(parseGdbChardev('disconnected:tcp:::1:1234,server=on')?.address, '[::1]:1234');
    assert.equal(
      parseGdbChardev('tcp:[::1]:1234,server=on <-> [::1]:40000')?.address,
      '[::1]:1234',
      'the connected form brackets IPv6',
    );
    assert.deepEqual(parseGdbChardev('disconnected:unix:/run/vm/gdb.sock,server=on'), {
      address: 'unix:/run/vm/gdb.sock',
      busy: false,
      filename: 'disconnected:unix:/run/vm/gdb.sock,server=on',
    });
  });

  it('ignores what it cannot connect to', () => {
    assert.equal(parseGdbChardev('disconnected:telnet:127.0.0.1:1234,server=on'), undefined);
    assert.equal(parseGdbChardev('tcp:127.0.0.1:1234'), undefined, 'a client chardev: nothing listens');
    assert.equal(parseGdbChardev('disconnected:tcp:127.0.0.1:99999,server=on'), undefined);
    assert.equal(parseGdbChardev('disconnected:tcp:127.0.0.1:0,server=on'), undefined);
    assert.equal(parseGdbChardev('stdio'), undefined);
    assert.equal(parseGdbChardev(''), undefined);
  });

  it('finds the chardev labelled "gdb" in query-chardev', async () => {
    const qmp = {
      async execute<T>(): Promise<T> {
        return [
          { label: 'serial0', filename: 'disconnected:unix:/x/serial.sock,server=on', 'frontend-open': true },
          { label: 'gdb', filename: 'disconnected:tcp:127.0.0.1:5555,server=on', 'frontend-open': true },
        ] as T;
      },
    };
    assert.equal((await findGdbStub(qmp))?.address, '127.0.0.1:5555');
    assert.equal(await findGdbStub({ execute: async <T>() => [{ label: 'serial0' }] as T }), undefined);
    assert.equal(await findGdbStub({ execute: async <T>() => ({}) as T }), undefined);
  });
});

/** A GDB client that keeps QEMU's rules: packets only while stopped, a hit stops the VM. */
class FakeClient implements StubClient {
  readonly address = '127.0.0.1:1234';
  running = false;
  connected = true;
  readonly log: string[] = [];
  readonly #listeners = new Set<(s: StopReply) => void>();
  constructor(readonly qmp: FakeQmp) {}

  #packet(what: string): void {
    // A packet sent while the VM runs behind the client's back stops it (QEMU swallows it, the client resends).
    if (this.running) throw new VigilError('vmm', 'state', `${what} sent while running`);
    if (this.qmp.status.running) {
      this.log.push('swallowed');
      this.qmp.status = { status: 'paused', running: false };
    }
    this.log.push(what);
  }

  async continue(): Promise<void> {
    this.#packet('c');
    this.running = true;
    this.qmp.status = { status: 'running', running: true };
  }

  async interrupt(): Promise<StopReply> {
    this.log.push('interrupt');
    this.running = false;
    this.qmp.status = { status: 'paused', running: false };
    return { kind: 'signal', signal: 2, registers: new Map(), raw: 'T02' };
  }

  async insertBreakpoint(type: Breakpoint['type'], address: bigint, kind = 1): Promise<Breakpoint> {
    await tick();
    this.#packet(`Z ${type} ${address.toString(16)}`);
    return {
      type,
      address,
      kind,
      remove: async () => {
        await tick();
        this.#packet(`z ${address.toString(16)}`);
      },
    };
  }

  onStop(l: (s: StopReply) => void): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  async readX86Registers(): Promise<X86Registers> {
    this.#packet('g');
    return { rip: 0x1000n, rsp: 0n, cr0: 0n, cr3: 0n, cr4: 0n, efer: 0n };
  }

  async readMemory(address: bigint, length: number): Promise<Buffer> {
    this.#packet(`m ${address.toString(16)}`);
    return Buffer.alloc(length, 0xab);
  }

  async close(): Promise<void> {
    this.log.push('detach');
    this.connected = false;
    this.running = false;
    this.qmp.status = { status: 'running', running: true }; // D resumes the VM, whatever its state
  }
}

class FakeQmp implements StubQmp {
  status: QmpStatus = { status: 'running', running: true };
  stops = 0;
  chardev = 'disconnected:tcp:127.0.0.1:1234,server=on';
  async queryStatus(): Promise<QmpStatus> {
    return { ...this.status };
  }
  async stop(): Promise<void> {
    this.stops++;
    if (this.status.running) this.status = { status: 'paused', running: false };
  }
  async execute<T>(): Promise<T> {
    return [{ label: 'gdb', filename: this.chardev }] as T;
  }
}

const tick = () => new Promise<void>((r) => setImmediate(r));

function stubOn(state: 'running' | 'paused' | 'debug'): {
  stub: QemuGdbStub;
  client: FakeClient;
  qmp: FakeQmp;
} {
  const qmp = new FakeQmp();
  const client = new FakeClient(qmp);
  qmp.status = { status: state, running: state === 'running' };
  client.running = state === 'running';
  return { stub: new QemuGdbStub(client, qmp), client, qmp };
}

describe('the stub session', () => {
  it('attaching continues a VM that was running, and leaves a paused one paused', async () => {
    for (const running of [true, false]) {
      const qmp = new FakeQmp();
      qmp.status = running ? { status: 'running', running: true } : { status: 'paused', running: false };
      let client: FakeClient | undefined;
      const stub = await QemuGdbStub.attach(qmp, 'auto', {
        async connect(address) {
          assert.equal(address, '127.0.0.1:1234', 'the address query-chardev gave');
          client = new FakeClient(qmp);
          qmp.status = { status: 'paused', running: false }; // attaching stops the VM
          return client;
        },
      });
      assert.equal(stub.running, running);
      assert.equal(qmp.status.running, running);
      assert.deepEqual(client!.log, running ? ['c'] : []);
    }
  });

  it('says why there is no stub: none, or another debugger on it', async () => {
    const qmp = new FakeQmp();
    const never = async (): Promise<StubClient> => assert.fail('must not connect');
    qmp.chardev = 'tcp:127.0.0.1:1234,server=on <-> 127.0.0.1:40000';
    const busy = await attachGdbStub(qmp, '127.0.0.1:1234', { connect: never });
    assert.equal(busy.stub, undefined);
    assert.match(busy.problem!, /in use by another debugger/);
    qmp.execute = async <T>() => [] as T;
    const none = await attachGdbStub(qmp, 'auto', { connect: never });
    assert.match(none.problem!, /QEMU has no GDB stub/);
    const refused = await attachGdbStub(qmp, '127.0.0.1:9', {
      connect: async () => {
        throw new VigilError('vmm', 'io', 'connection refused');
      },
    });
    assert.equal(refused.problem, 'connection refused');
  });

  it('stops a running VM for the work and lets it run on; a stopped one stays stopped', async () => {
    const run = stubOn('running');
    assert.equal(await run.stub.whileStopped(async () => run.qmp.status.running), false);
    assert.deepEqual(run.client.log, ['interrupt', 'c']);
    assert.equal(run.qmp.status.running, true);

    const paused = stubOn('paused');
    await paused.stub.watch(0x2000n, 8, 'w');
    assert.deepEqual(paused.client.log, ['Z write 2000']);
    assert.equal(paused.qmp.status.running, false, 'a paused VM is not resumed');
  });

  it('a VM resumed behind its back (QMP cont) is stopped by the first packet and continued after', async () => {
    const { stub, client, qmp } = stubOn('paused');
    qmp.status = { status: 'running', running: true }; // a person typed `cont`
    const h = await stub.watch(0x3000n, 8, 'w');
    assert.deepEqual(client.log, ['swallowed', 'Z write 3000', 'c']);
    assert.equal(qmp.status.running, true);
    await h.remove();
    assert.equal(qmp.status.running, true);
  });

  it('runs one stopped section at a time; nested sections run within', async () => {
    const { stub, client } = stubOn('running');
    const order: string[] = [];
    await Promise.all([
      stub.whileStopped(async () => {
        order.push('a1');
        await stub.watch(0x10n, 8, 'w'); // nested: no second interrupt, no deadlock
        await tick();
        order.push('a2');
      }),
      stub.whileStopped(async () => {
        order.push('b1');
        await tick();
        order.push('b2');
      }),
      stub.continue(),
    ]);
    assert.deepEqual(order, ['a1', 'a2', 'b1', 'b2']);
    assert.deepEqual(client.log, ['interrupt', 'Z write 10', 'c', 'interrupt', 'c']);
    assert.equal(client.running, true);
  });

  it('continues only a stopped VM and forgets a hold', async () => {
    const { stub, client } = stubOn('debug');
    stub.held = true;
    await stub.continue();
    await stub.continue();
    assert.deepEqual(client.log, ['c']);
    assert.equal(stub.held, false);
  });

  it('detaching keeps a paused or held VM paused; a hit in hand and a running VM run on', async () => {
    const cases: { state: 'running' | 'paused' | 'debug'; held: boolean; paused: boolean }[] = [
      { state: 'running', held: false, paused: false },
      { state: 'paused', held: false, paused: true },
      { state: 'debug', held: false, paused: false },
      { state: 'debug', held: true, paused: true },
    ];
    for (const c of cases) {
      const { stub, client, qmp } = stubOn(c.state);
      stub.held = c.held;
      await Promise.all([stub.close(), stub.close()]);
      assert.deepEqual(client.log, ['detach'], `${c.state}: detached once`);
      assert.equal(qmp.status.running, !c.paused, `${c.state}${c.held ? ' (held)' : ''}`);
      assert.equal(qmp.stops, c.paused ? 1 : 0);
    }
  });
});
