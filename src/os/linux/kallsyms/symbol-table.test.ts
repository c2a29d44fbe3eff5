import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VigilError } from '../../../util/errors.js';
import { poolOf, SymbolTable } from './symbol-table.js';

const table = () =>
  SymbolTable.fromSymbols([
    { name: 'do_sys_open', type: 'T', address: 0xffffffff81200000n },
    { name: 'fixed_percpu_data', type: 'A', address: 0n },
    { name: 'cpu_tss_rw', type: 'A', address: 0x6000n },
    { name: '_text', type: 'T', address: 0xffffffff81000000n },
    { name: 'startup_64', type: 'T', address: 0xffffffff81000000n },
    { name: 'helper', type: 't', address: 0xffffffff81100000n },
    { name: 'helper', type: 't', address: 0xffffffff81180000n },
    { name: 'init_task', type: 'D', address: 0xffffffff82000000n },
  ]);

describe('SymbolTable', () => {
  it('sorts by address, keeping the order of aliases', () => {
    const t = table();
    assert.equal(t.size, 8);
    const list = [...t];
    for (let i = 1; i < list.length; i++) assert.ok(list[i - 1].address <= list[i].address);
    assert.equal(t.at(1)?.name, 'cpu_tss_rw');
    assert.deepEqual(
      list.filter((s) => s.address === 0xffffffff81000000n).map((s) => s.name),
      ['_text', 'startup_64'],
    );
    assert.equal(t.at(-1), undefined);
    assert.equal(t.at(8), undefined);
  });

  it('looks up names (lowest address first) and throws not-found on require', () => {
    const t = table();
    assert.equal(t.address('_text'), 0xffffffff81000000n);
    assert.equal(t.address('helper'), 0xffffffff81100000n);
    assert.deepEqual(
      t.all('helper').map((s) => s.address),
      [0xffffffff81100000n, 0xffffffff81180000n],
    );
    assert.equal(t.get('init_task')?.type, 'D');
    assert.equal(t.has('nope'), false);
    assert.equal(t.address('nope'), undefined);
    assert.throws(
      () => t.require('nope'),
      (e: unknown) => e instanceof VigilError && e.kind === 'not-found',
    );
  });

  it('symbolizes addresses inside symbols, not per-CPU offsets or far gaps', () => {
    const t = table();
    assert.equal(t.symbolize(0xffffffff81200012n), 'do_sys_open+0x12');
    assert.equal(t.symbolize(0xffffffff81000005n), '_text+0x5');
    assert.equal(t.symbolize(0xffffffff81180000n), 'helper+0x0');
    assert.equal(t.symbolize(0x6010n), undefined, 'per-CPU offsets are not addresses');
    assert.equal(t.symbolize(0xffffffff80000000n), undefined);
    assert.equal(t.symbolize(0xffffffff82000000n + 0x200000n), undefined, 'beyond the cap');
    assert.equal(t.symbolize(0xffffffff82000000n + 0x200000n, 0x1000000n), 'init_task+0x200000');
    assert.deepEqual(t.nearest(0xffffffff81100008n)?.offset, 8n);
  });

  it('lists ranges and counts types', () => {
    const t = table();
    assert.deepEqual(
      [...t.range(0xffffffff81000000n, 0xffffffff81180000n)].map((s) => s.name),
      ['_text', 'startup_64', 'helper'],
    );
    assert.deepEqual(Object.fromEntries(t.countsByType()), { A: 2, T: 3, t: 2, D: 1 });
  });

  it('refuses arrays of different lengths', () => {
    assert.throws(
      () => new SymbolTable(poolOf(['a']), new Uint8Array(2), new BigUint64Array(1)),
      (e: unknown) => e instanceof VigilError && e.kind === 'malformed',
    );
  });
});
