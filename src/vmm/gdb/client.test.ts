import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { VigilError } from '../../util/errors.js';
import { GdbClient, parseThreadId } from './client.js';
import { checksum, encodeRle, escapeBinary } from './packet.js';
import { G_REPLY, I386_64BIT_XML, TARGET_XML } from './qemu-x86_64.fixture.js';

const MEM_BASE = 0xffffffff81000000n;
const PHYS_BASE = 0x100000n;

/**
 * A scripted all-stop stub that behaves like QEMU's: it pauses and sends T02 on attach, acks every packet,
 * swallows a byte that arrives while "running" (and stops), serves the real x86-64 target description
 * and `g` reply, 64 KiB of virtual and of physical memory, two vCPUs, Z/z, c, ?, D.
 */
class FakeStub {
  readonly received: string[] = [];
  readonly memory = Buffer.alloc(0x10000);
  readonly phys = Buffer.alloc(0x10000);
  packetSize = 0x100;
  rle = false;
  running = false;
  physMode = false;
  selected = '01';
  /** Thread ids as "p01.0N" once the client offers multiprocess+ (QEMU does the same). */
  multiprocess = false;
  /** Offer multiprocess+ in qSupported. */
  offerMultiprocess = true;
  breakpoints = new Set<string>();
  /** Answer these packets (by prefix) with '' as if unsupported. */
  unsupported: string[] = [];
  /** Do not answer the next packet starting with this prefix. */
  silenceOnce: string | undefined;
  /** Answer the next packet with '-' (as if the checksum were wrong). */
  nackOnce = false;
  interrupts = 0;
  acks = 0;
  detached = false;
  peer: net.Socket | undefined;
  #server = net.createServer((s) => this.#accept(s));
  port = 0;

  constructor() {
    for (let i = 0; i < this.memory.length; i++) this.memory[i] = (i * 7 + 3) & 0xff;
    for (let i = 0; i < this.phys.length; i++) this.phys[i] = (i * 13 + 1) & 0xff;
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.#server.address() as net.AddressInfo).port;
    return this;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  send(payload: string | Buffer): void {
    const body = escapeBinary(typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload);
    const cs = checksum(body).toString(16).padStart(2, '0');
    this.peer?.write(Buffer.concat([Buffer.from('$'), body, Buffer.from('#' + cs)]));
  }

  /** The VM "stops" by itself, e.g. a watchpoint hit. */
  stop(reply: string): void {
    this.running = false;
    this.send(reply);
  }

  /** While set, a new connection waits (as in QEMU's backlog while another debugger is attached). */
  hold: Promise<void> | undefined;

  #accept(peer: net.Socket): void {
    peer.on('error', () => undefined);
    if (this.hold) {
      const early: Buffer[] = [];
      const keep = (d: Buffer): number => early.push(d);
      peer.on('data', keep);
      void this.hold.then(() => {
        peer.off('data', keep);
        this.#serve(peer, Buffer.concat(early));
      });
      return;
    }
    this.#serve(peer, Buffer.alloc(0));
  }

  #serve(peer: net.Socket, early: Buffer): void {
    this.peer = peer;
    peer.setNoDelay(true); // as QEMU does: the ack and the reply are separate writes
    this.send('T02thread:01;');
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length === 0) return;
        if (this.running) {
          // QEMU: any byte while running pauses the VM and is dropped.
          if (buf[0] === 0x03) this.interrupts++;
          buf = buf.subarray(1);
          this.stop('T02thread:01;');
          continue;
        }
        if (buf[0] === 0x2b) {
          this.acks++;
          buf = buf.subarray(1);
          continue;
        }
        if (buf[0] !== 0x24) {
          buf = buf.subarray(1);
          continue;
        }
        const hash = buf.indexOf(0x23);
        if (hash < 0 || buf.length < hash + 3) return;
        const body = buf.subarray(1, hash).toString('latin1');
        buf = buf.subarray(hash + 3);
        if (this.nackOnce) {
          this.nackOnce = false;
          peer.write('-');
          continue;
        }
        peer.write('+');
        this.received.push(body);
        if (this.silenceOnce !== undefined && body.startsWith(this.silenceOnce)) {
          this.silenceOnce = undefined;
          continue;
        }
        const reply = this.#handle(body);
        if (reply !== undefined) this.send(reply);
      }
    };
    peer.on('data', onData);
    if (early.length > 0) onData(early);
  }

  #handle(p: string): string | Buffer | undefined {
    if (this.unsupported.some((u) => p.startsWith(u))) return '';
    if (p.startsWith('qSupported')) {
      this.multiprocess = this.offerMultiprocess && p.includes('multiprocess+');
      const mp = this.offerMultiprocess ? ';multiprocess+' : '';
      return `PacketSize=${this.packetSize.toString(16)};qXfer:features:read+;vContSupported+${mp}`;
    }
    if (p.startsWith('qXfer:features:read:')) {
      const [annex, range] = p.slice('qXfer:features:read:'.length).split(':');
      const [off, len] = range.split(',').map((x) => parseInt(x, 16));
      const text =
        annex === 'target.xml' ? TARGET_XML : annex === 'i386-64bit.xml' ? I386_64BIT_XML : undefined;
      if (text === undefined) return 'E00';
      const part = text.slice(off, off + len);
      return (off + len >= text.length ? 'l' : 'm') + part;
    }
    if (p === 'qqemu.Supported') return 'sstepbits;sstep;PhyMemMode';
    if (p === 'qqemu.PhyMemMode') return this.physMode ? '1' : '0';
    if (p.startsWith('Qqemu.PhyMemMode:')) {
      this.physMode = p.endsWith('1');
      return 'OK';
    }
    if (p === 'qfThreadInfo') return `m${this.tid(1)}`;
    if (p === 'qsThreadInfo') return this.received.at(-2) === 'qfThreadInfo' ? `m${this.tid(2)}` : 'l';
    if (p.startsWith('qThreadExtraInfo,')) {
      const n = parseInt(p.slice(17).replace(/^p\w+\./, ''), 16);
      return Buffer.from(`CPU#${n - 1} [halted ]\x1b[31m`).toString('hex');
    }
    if (p.startsWith('Hg')) {
      this.selected = p.slice(2);
      return 'OK';
    }
    if (p === 'g') {
      // vCPU 2 differs in CR3 (regnum 29 at byte 204).
      if (this.selected === this.tid(1)) return G_REPLY;
      const g = Buffer.from(G_REPLY, 'hex');
      g.writeBigUInt64LE(0x7777000n, 204);
      return g.toString('hex');
    }
    if (p.startsWith('p')) {
      const n = parseInt(p.slice(1), 16);
      const off =
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128][n] ?? (n === 29 ? 204 : -1);
      if (off < 0) return 'E00';
      return Buffer.from(G_REPLY, 'hex')
        .subarray(off, off + 8)
        .toString('hex');
    }
    if (p.startsWith('m')) {
      const [addr, len] = p.slice(1).split(',');
      const a = BigInt('0x' + addr);
      const n = parseInt(len, 16);
      if (n > this.packetSize / 2) return 'E22';
      const mem = this.physMode ? this.phys : this.memory;
      const base = this.physMode ? PHYS_BASE : MEM_BASE;
      if (a < base || a + BigInt(n) > base + BigInt(mem.length)) return 'E14';
      const hex = mem.subarray(Number(a - base), Number(a - base) + n).toString('hex');
      return this.rle ? encodeRle(Buffer.from(hex)) : hex;
    }
    if (p.startsWith('M')) {
      const [head, data] = p.slice(1).split(':');
      const a = BigInt('0x' + head.split(',')[0]);
      Buffer.from(data, 'hex').copy(this.memory, Number(a - MEM_BASE));
      return 'OK';
    }
    if (p.startsWith('Z')) {
      this.breakpoints.add(p.slice(1));
      return 'OK';
    }
    if (p.startsWith('z')) {
      this.breakpoints.delete(p.slice(1));
      return 'OK';
    }
    if (p === 'c') {
      this.running = true;
      return undefined;
    }
    if (p === '?') {
      this.breakpoints.clear();
      return `T05thread:${this.tid(1)};`;
    }
    if (p === 'D' || p.startsWith('D;')) {
      // QEMU in multiprocess mode wants the pid.
      if (this.multiprocess !== p.startsWith('D;')) return 'E22';
      this.detached = true;
      return 'OK';
    }
    return '';
  }

  tid(n: number): string {
    return this.multiprocess ? `p01.0${n}` : `0${n}`;
  }

  /** Pretend QMP resumed the VM: the next byte we get is swallowed. */
  resumeBehindBack(): void {
    this.running = true;
  }

  close(): Promise<void> {
    this.peer?.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

const isVigil = (kind: string, text?: RegExp) => (e: unknown) =>
  e instanceof VigilError && e.kind === kind && (!text || text.test(e.message));

test('attach: features, target description, register numbers, the attach stop', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  assert.equal(g.packetSize, 0x100);
  assert.equal(g.features.get('qXfer:features:read'), true);
  assert.equal(g.registerMap?.byName('cr3')?.regnum, 29);
  assert.equal(g.registerMap?.byName('efer')?.regnum, 32);
  assert.ok(g.qemuFeatures.has('PhyMemMode'));
  assert.equal(g.lastStop?.raw, 'T02thread:01;');
  assert.equal(g.running, false);
  // The description was read in PacketSize-bounded pieces.
  assert.ok(stub.received.filter((p) => p.startsWith('qXfer:features:read:i386-64bit.xml')).length > 10);
  await g.close();
  await stub.close();
});

test('threads and registers per vCPU (Hg before g; p by name)', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  assert.deepEqual(await g.threads(), ['p01.01', 'p01.02']);
  assert.equal(await g.threadInfo('p01.02'), 'CPU#1 [halted ]\\x1b[31m', 'stub text is sanitised');
  const r1 = await g.readX86Registers({ thread: 'p01.01' });
  assert.equal(r1.rip, 0xffffffff958592ebn);
  assert.equal(r1.rsp, 0xffffffff96803e98n);
  assert.equal(r1.cr3, 0x2b34000n);
  assert.equal(r1.cr4, 0x751ef0n);
  assert.equal(r1.efer, 0xd01n);
  assert.equal(r1.gsBase, 0xff208aba0f600000n);
  assert.equal(r1.kernelGsBase, 0n);
  const r2 = await g.readX86Registers({ thread: 'p01.02' });
  assert.equal(r2.cr3, 0x7777000n);
  assert.ok(stub.received.includes('Hgp01.02'));
  assert.equal(await g.readRegister('cr3', { thread: 'p01.01' }), 0x2b34000n);
  assert.equal(stub.received.at(-1), 'p1d', 'cr3 is p1d: regnum 29 from the XML');
  assert.equal(await g.readRegister(16), 0xffffffff958592ebn);
  const all = await g.readRegisters();
  assert.equal(all.get('eflags'), 0x246n);
  assert.equal(all.size, 66);
  await assert.rejects(g.readRegister('nonesuch'), isVigil('not-found'));
  await g.close();
  await stub.close();
});

test('memory: chunked by PacketSize, RLE replies, unmapped, physical mode, writes', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  assert.equal(g.maxReadChunk, 128);
  const before = stub.received.length;
  const got = await g.readMemory(MEM_BASE + 5n, 1000);
  assert.deepEqual(got, stub.memory.subarray(5, 1005));
  assert.equal(stub.received.length - before, Math.ceil(1000 / 128) + 1, 'one mode query, then 8 reads');
  stub.rle = true;
  assert.deepEqual(await g.readMemory(MEM_BASE, 300), stub.memory.subarray(0, 300));
  stub.rle = false;
  await assert.rejects(
    g.readMemory(MEM_BASE + 0xff00n, 0x200),
    isVigil('unmapped', /0xffffffff81010000 \(256 of 512 bytes/),
  );
  assert.deepEqual(await g.readMemory(PHYS_BASE + 16n, 64, { physical: true }), stub.phys.subarray(16, 80));
  assert.equal(stub.physMode, true);
  assert.deepEqual(await g.readMemory(MEM_BASE, 4), stub.memory.subarray(0, 4));
  assert.equal(stub.physMode, false, 'virtual reads switch the mode back');
  await g.writeMemory(MEM_BASE + 100n, Buffer.from('hello, guest'));
  assert.equal(stub.memory.subarray(100, 112).toString(), 'hello, guest');
  await assert.rejects(g.readMemory(-1n, 4), isVigil('usage'));
  await assert.rejects(async () => g.readMemory(0xfffffffffffffff0n, 0x20), isVigil('usage', /wraps/));
  await assert.rejects(async () => g.readMemory(0n, 1e12), isVigil('bound'));
  assert.deepEqual(await g.readMemory(MEM_BASE, 0), Buffer.alloc(0));
  await g.close();
  await stub.close();
});

test('watchpoint: insert, continue, stop with the watch address, stream and listener', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  const wp = await g.watch(0xffffffff968079c0n, 8, 'w');
  assert.deepEqual([...stub.breakpoints], ['2,ffffffff968079c0,8']);
  const bp = await g.breakpoint(0xffffffff81000000n, { hardware: true });
  assert.ok(stub.breakpoints.has('1,ffffffff81000000,1'));
  const stream = g.stops();
  const heard: string[] = [];
  g.onStop((s) => heard.push(s.raw));
  await g.continue();
  assert.equal(g.running, true);
  await assert.rejects(g.readMemory(MEM_BASE, 4), isVigil('state', /running/));
  setTimeout(() => stub.stop('T05thread:02;watch:ffffffff968079c0;'), 20);
  const s = await g.waitForStop({ timeoutMs: 2000 });
  assert.equal(s.thread, '02');
  assert.deepEqual(s.watch, { kind: 'watch', address: 0xffffffff968079c0n });
  assert.equal(g.running, false);
  assert.equal((await stream.next()).value?.watch?.kind, 'watch');
  assert.deepEqual(heard, ['T05thread:02;watch:ffffffff968079c0;']);
  assert.equal(g.breakpoints.length, 2);
  await wp.remove();
  await bp.remove();
  assert.equal(stub.breakpoints.size, 0);
  assert.equal(g.breakpoints.length, 0);
  stub.unsupported.push('Z4');
  await assert.rejects(g.watch(0x1000n, 4, 'rw'), isVigil('unsupported', /access breakpoints \(Z4\)/));
  await g.close();
  await stub.close();
});

test('interrupt stops a running target with 0x03; whileStopped resumes afterwards', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  await g.continue();
  const s = await g.interrupt({ timeoutMs: 2000 });
  assert.equal(s.signal, 2);
  assert.equal(stub.interrupts, 1);
  assert.equal(g.running, false);
  await g.continue();
  const value = await g.whileStopped(() => g.readMemory(MEM_BASE, 2));
  assert.deepEqual(value, stub.memory.subarray(0, 2));
  assert.equal(g.running, true);
  assert.equal(stub.running, true);
  assert.equal(stub.interrupts, 2);
  // detach interrupts first, then removes breakpoints, then D.
  await g.detach();
  assert.equal(stub.detached, true);
  assert.equal(g.connected, false);
  await assert.rejects(async () => g.threads(), isVigil('state', /closed/));
  await stub.close();
});

test('close() detaches so the VM is not left paused; it removes our breakpoints and physical mode', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  await g.watch(0x2000n, 4, 'r');
  await g.readMemory(PHYS_BASE, 8, { physical: true });
  await g.close();
  assert.equal(stub.detached, true);
  assert.equal(stub.breakpoints.size, 0);
  assert.equal(stub.physMode, false);
  assert.deepEqual(stub.received.slice(-3), ['z3,2000,4', 'Qqemu.PhyMemMode:0', 'D;1']);
  await g.close();
  await stub.close();
});

test('without multiprocess: plain thread ids and a bare D; a refused detach still resumes', async () => {
  const stub = await new FakeStub().listen();
  stub.offerMultiprocess = false;
  const g = await GdbClient.connect(stub.address);
  assert.deepEqual(await g.threads(), ['01', '02']);
  await g.detach();
  assert.equal(stub.received.at(-1), 'D');

  const stuck = await new FakeStub().listen();
  stuck.unsupported.push('D');
  const h = await GdbClient.connect(stuck.address);
  await h.close();
  assert.equal(stuck.received.at(-1), 'c', 'continued so the VM does not stay paused');
  assert.equal(h.connected, false);
  await stub.close();
  await stuck.close();
});

test('a packet swallowed because the VM was resumed behind our back is sent again', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  await new Promise((resolve) => setTimeout(resolve, 20)); // owed acks go out and reach the stub
  stub.resumeBehindBack();
  const t0 = Date.now();
  assert.deepEqual(await g.readMemory(MEM_BASE, 16), stub.memory.subarray(0, 16));
  assert.ok(Date.now() - t0 >= 150, 'resent after the grace period');
  assert.equal(g.lastStop?.signal, 2, 'the stub reported the pause our byte caused');
  assert.equal(stub.received.filter((p) => p === 'qqemu.PhyMemMode').length, 1);
  // When an ack is owed it rides in front of the request and is the byte that gets swallowed.
  stub.resumeBehindBack();
  await g.request('qqemu.PhyMemMode');
  stub.resumeBehindBack();
  assert.equal(await g.request('qqemu.PhyMemMode'), '0');
  assert.equal(stub.running, false);
  await g.close();
  await stub.close();
});

test('a nack makes the client retransmit', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  stub.nackOnce = true;
  assert.deepEqual(await g.threads(), ['p01.01', 'p01.02']);
  await g.close();
  await stub.close();
});

test('a timed-out request: its late reply is not taken for the next one', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  stub.silenceOnce = 'qThreadExtraInfo';
  await assert.rejects(g.request('qThreadExtraInfo,1', { timeoutMs: 50 }), isVigil('timeout'));
  stub.send('4c415445'); // the late reply ("LATE")
  assert.equal(await g.request('qqemu.PhyMemMode'), '0');
  await g.close();
  await stub.close();
});

test('haltReason sends ? and keeps our breakpoints across it', async () => {
  const stub = await new FakeStub().listen();
  const g = await GdbClient.connect(stub.address);
  await g.breakpoint(0x1234n);
  await g.watch(0x5678n, 8, 'w');
  const s = await g.haltReason();
  assert.equal(s.signal, 5);
  assert.deepEqual(stub.received.slice(-5), ['z0,1234,1', 'z2,5678,8', '?', 'Z0,1234,1', 'Z2,5678,8']);
  assert.deepEqual([...stub.breakpoints].sort(), ['0,1234,1', '2,5678,8']);
  assert.equal(g.breakpoints.length, 2);
  assert.equal(await g.request('?'), 'T05thread:p01.01;', 'request() knows ? answers with a stop reply');
  await g.close();
  await stub.close();
});

test('connect errors: refused, silent stub; a dropped connection fails waiters', async () => {
  const stub = await new FakeStub().listen();
  const port = stub.port;
  const g = await GdbClient.connect(stub.address);
  await g.continue();
  const waiting = g.waitForStop({ timeoutMs: 5000 });
  stub.peer?.destroy();
  await assert.rejects(waiting, isVigil('io', /closed/));
  assert.equal(g.connected, false);
  await g.close();
  await stub.close();
  await assert.rejects(GdbClient.connect(`127.0.0.1:${port}`), isVigil('io', /connection refused/));

  const peers: net.Socket[] = [];
  const silent = net.createServer((s) => peers.push(s.on('error', () => undefined)));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
  const sport = (silent.address() as net.AddressInfo).port;
  await assert.rejects(
    GdbClient.connect(`127.0.0.1:${sport}`, { connectTimeoutMs: 100 }),
    isVigil('timeout', /another debugger attached/),
  );
  for (const p of peers) p.destroy(); // the client keeps its end open, waiting to detach
  await new Promise((resolve) => silent.close(resolve));
});

test('a connect given up on a busy stub detaches once the stub gets to it (else the VM stays paused)', async () => {
  const stub = await new FakeStub().listen();
  let release = (): void => undefined;
  stub.hold = new Promise<void>((resolve) => (release = resolve));
  await assert.rejects(GdbClient.connect(stub.address, { connectTimeoutMs: 100 }), isVigil('timeout'));
  assert.equal(stub.detached, false);
  release();
  for (let i = 0; i < 100 && !stub.detached; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(stub.detached, true);
  assert.deepEqual(stub.received, ['qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+', 'D;1']);
  await stub.close();
});

test('a handshake that fails after the stub answered still detaches', async () => {
  const stub = await new FakeStub().listen();
  stub.unsupported.push('qXfer:features:read:target.xml');
  await assert.rejects(GdbClient.connect(stub.address), isVigil('protocol', /refused qXfer/));
  assert.equal(stub.detached, true);
  assert.equal(stub.received.at(-1), 'D;1');
  await stub.close();
});

test('thread ids split into pid and tid', () => {
  assert.deepEqual(parseThreadId('p01.0a'), { pid: 1, tid: 10 });
  assert.deepEqual(parseThreadId('02'), { tid: 2 });
  assert.deepEqual(parseThreadId('p1.-1'), { pid: 1, tid: -1 });
  assert.throws(() => parseThreadId('x;y'), isVigil('malformed'));
});
