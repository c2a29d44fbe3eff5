import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VigilError } from '../../util/errors.js';
import type { QmpEvent } from '../qmp/client.js';
import { QemuCpuState, snapshotDeviceState, type SnapshotQmp } from './cpu-state.js';

function fixture(): Buffer {
  const rel = 'test/fixtures/migration/qemu72-q35-2cpu.bin';
  const tries = [join(process.cwd(), rel)];
  for (let d = dirname(fileURLToPath(import.meta.url)), i = 0; i < 8; d = dirname(d), i++)
    tries.push(join(d, rel));
  const found = tries.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`fixture ${rel} not found`);
  return readFileSync(found);
}

type Behaviour = 'complete' | 'endless' | 'fail-postmigrate';

/**
 * A QEMU as far as a device-state snapshot sees it: run states, the migration status, the capability, and
 * a `migrate` that connects to the unix socket and sends a stream.
 */
class FakeQemu implements SnapshotQmp {
  runstate = 'running';
  migration = 'none';
  ignoreShared = false;
  xbzrle = false;
  refuseMigrate = false;
  behaviour: Behaviour = 'complete';
  stream = fixture();
  calls: string[] = [];
  clock = 1_000_000;
  #listeners = new Set<(e: QmpEvent) => void>();

  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(event: string): void {
    this.clock += 5;
    for (const l of this.#listeners) l({ event, data: {}, time: this.clock });
  }

  async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.calls.push(command === 'migrate-set-capabilities' ? `${command} ${JSON.stringify(args)}` : command);
    const r = (v: unknown) => v as T;
    switch (command) {
      case 'query-migrate':
        return r(this.migration === 'none' ? {} : { status: this.migration });
      case 'query-status':
        return r({ status: this.runstate, running: this.runstate === 'running' });
      case 'query-migrate-capabilities':
        return r([
          { capability: 'xbzrle', state: this.xbzrle },
          { capability: 'x-ignore-shared', state: this.ignoreShared },
          { capability: 'events', state: false },
        ]);
      case 'migrate-set-capabilities': {
        if (this.migration === 'active') throw new VigilError('vmm', 'protocol', 'GenericError: busy');
        const caps = (args as { capabilities: { capability: string; state: boolean }[] }).capabilities;
        for (const c of caps) if (c.capability === 'x-ignore-shared') this.ignoreShared = c.state;
        return r({});
      }
      case 'migrate':
        if (this.refuseMigrate) throw new VigilError('vmm', 'protocol', 'GenericError: migration blocked');
        if (this.migration === 'active') throw new VigilError('vmm', 'protocol', 'GenericError: busy');
        if (this.runstate === 'postmigrate') throw new VigilError('vmm', 'protocol', 'GenericError: paused');
        this.migration = 'active';
        this.#send(String((args as { uri: string }).uri).replace(/^unix:/, ''));
        return r({});
      case 'migrate_cancel':
        if (this.migration === 'active') {
          this.migration = 'cancelled';
          if (this.runstate !== 'running') {
            this.runstate = 'running';
            this.#emit('RESUME');
          }
        }
        return r({});
      case 'cont':
        if (this.runstate === 'running') return r({});
        this.runstate = 'running';
        this.#emit('RESUME');
        return r({});
      default:
        throw new VigilError('vmm', 'protocol', `CommandNotFound: ${command}`);
    }
  }

  #send(path: string): void {
    const sock = connect(path);
    sock.on('error', () => undefined);
    sock.on('connect', () => {
      if (this.behaviour === 'endless') {
        // RAM that is not shared: far more than the cap, until the reader hangs up.
        const chunk = Buffer.alloc(1 << 16);
        const pump = () => {
          while (!sock.destroyed && sock.write(chunk));
          if (!sock.destroyed) sock.once('drain', pump);
        };
        pump();
        return;
      }
      this.runstate = 'finish-migrate';
      this.#emit('STOP');
      if (this.behaviour === 'fail-postmigrate') {
        sock.end(this.stream.subarray(0, 1000), () => {
          this.migration = 'failed';
          this.runstate = 'postmigrate';
        });
        return;
      }
      sock.end(this.stream, () => {
        this.migration = 'completed';
        this.runstate = 'postmigrate';
      });
    });
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'vigil-cpu-state-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const opts = { tmpDir: tmp, timeoutMs: 10_000 };
const capOn = 'migrate-set-capabilities {"capabilities":[{"capability":"x-ignore-shared","state":true}]}';
const capOff = 'migrate-set-capabilities {"capabilities":[{"capability":"x-ignore-shared","state":false}]}';

async function rejects(p: Promise<unknown>): Promise<VigilError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof VigilError, String(e));
    return e;
  }
  assert.fail('no error');
}

describe('snapshotDeviceState against a fake QEMU', () => {
  test('a running VM: stream received, VM resumed, capability restored, pause measured', async () => {
    const q = new FakeQemu();
    const snap = await snapshotDeviceState(q, opts);
    assert.ok(snap.stream.equals(q.stream));
    assert.equal(snap.bytes, q.stream.length);
    assert.equal(snap.pausedMs, 5);
    assert.equal(q.runstate, 'running');
    assert.equal(q.ignoreShared, false);
    const order = q.calls.filter((c) => !c.startsWith('query-'));
    assert.deepEqual(order, [capOn, 'migrate', 'cont', capOff]);
    assert.deepEqual(readdirSync(tmp), [], 'the socket folder is removed');
    // And again: a second snapshot works after the first.
    const again = await snapshotDeviceState(q, opts);
    assert.equal(again.bytes, q.stream.length);
    assert.equal(q.runstate, 'running');
  });

  test('QemuCpuState reads the MSRs of both vCPUs and keeps the numbers', async () => {
    const q = new FakeQemu();
    const cs = new QemuCpuState(q, opts);
    const msrs = await cs.syscallEntryMsrs();
    assert.deepEqual(
      msrs.map((m) => [m.vcpu, m.lstar]),
      [
        [0, 0xffffffffab400080n],
        [1, 0xffffffffab400080n],
      ],
    );
    assert.equal(cs.last?.bytes, q.stream.length);
    assert.ok((cs.last?.totalMs ?? -1) >= 0);
  });

  test('the capability, when already on, is left on', async () => {
    const q = new FakeQemu();
    q.ignoreShared = true;
    await snapshotDeviceState(q, opts);
    assert.equal(q.ignoreShared, true);
    assert.ok(!q.calls.some((c) => c.startsWith('migrate-set-capabilities')));
  });

  test('a paused VM is not touched', async () => {
    const q = new FakeQemu();
    q.runstate = 'paused';
    const e = await rejects(snapshotDeviceState(q, opts));
    assert.equal(e.kind, 'state');
    assert.match(e.message, /not running \(paused\)/);
    assert.equal(q.runstate, 'paused');
    assert.ok(!q.calls.includes('migrate') && !q.calls.includes('cont'));
    assert.equal(q.ignoreShared, false);
  });

  test('a migration already running, or capabilities that change the format: refused up front', async () => {
    const busy = new FakeQemu();
    busy.migration = 'active';
    assert.equal((await rejects(snapshotDeviceState(busy, opts))).kind, 'state');
    const x = new FakeQemu();
    x.xbzrle = true;
    const e = await rejects(snapshotDeviceState(x, opts));
    assert.equal(e.kind, 'unsupported');
    assert.match(e.message, /xbzrle/);
    assert.ok(!x.calls.includes('migrate'));
  });

  test('a stream over the cap (RAM not shared): cancelled, VM running, capability restored', async () => {
    const q = new FakeQemu();
    q.behaviour = 'endless';
    const e = await rejects(snapshotDeviceState(q, { ...opts, maxBytes: 1 << 20 }));
    assert.equal(e.kind, 'unsupported');
    assert.match(e.message, /exceeded 1 MiB.*shared memory backend/);
    assert.ok(q.calls.includes('migrate_cancel'));
    assert.equal(q.runstate, 'running');
    assert.equal(q.ignoreShared, false);
    assert.deepEqual(readdirSync(tmp), []);
  });

  test('a migration that fails after stopping the VM: vigil resumes it', async () => {
    const q = new FakeQemu();
    q.behaviour = 'fail-postmigrate';
    const e = await rejects(snapshotDeviceState(q, opts));
    assert.match(e.message, /failed|before its end|status/);
    assert.equal(q.runstate, 'running');
    assert.ok(q.calls.includes('cont'));
    assert.equal(q.ignoreShared, false);
  });

  test('migrate refused (a migration blocker): capability restored, nothing resumed', async () => {
    const q = new FakeQemu();
    q.refuseMigrate = true;
    const e = await rejects(snapshotDeviceState(q, opts));
    assert.equal(e.kind, 'unsupported');
    assert.match(e.toLine(), /migration blocked/);
    assert.equal(q.runstate, 'running');
    assert.equal(q.ignoreShared, false);
  });

  test('snapshots asked for at once run one after the other', async () => {
    const q = new FakeQemu();
    const all = await Promise.all([1, 2, 3].map(() => snapshotDeviceState(q, opts)));
    assert.deepEqual(
      all.map((s) => s.bytes),
      [q.stream.length, q.stream.length, q.stream.length],
    );
    assert.equal(q.calls.filter((c) => c === 'migrate').length, 3);
  });
});
