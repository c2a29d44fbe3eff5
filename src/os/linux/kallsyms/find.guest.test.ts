// Opt-in: decode kallsyms from a real guest's RAM dump when one is present (VIGIL_GUEST_RAW, or the dev
// guest's /tmp/dev/a.raw). Skipped elsewhere.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { findKallsyms } from './find.js';
import { GUEST_RAW, rawFileMemory } from './test-support.js';

describe('kallsyms of a real guest', { skip: !existsSync(GUEST_RAW) && `no ${GUEST_RAW}` }, () => {
  it('finds and decodes every core kernel symbol', () => {
    const mem = rawFileMemory(GUEST_RAW);
    try {
      const r = findKallsyms(mem);
      assert.ok(r.symbols.size > 50_000, `${r.symbols.size} symbols`);
      assert.equal(r.symbols.size, r.layout.numSyms);
      for (const name of [
        '_text',
        'init_task',
        'sys_call_table',
        'page_offset_base',
        'linux_banner',
        'init_top_pgt',
      ])
        assert.ok(r.symbols.has(name), name);
      assert.equal(r.stats.inversions, 0);
      assert.equal(r.stats.anomalies, 0);
      const text = r.symbols.require('_text');
      assert.equal(text % 0x200000n, 0n, '_text is 2 MiB aligned');
      if (r.layout.base !== undefined && r.layout.addressMode !== 'place-relative')
        assert.equal(r.layout.base, text);
      assert.ok(r.symbols.require('init_task') > text);
      assert.equal(r.symbols.symbolize(r.symbols.require('schedule') + 5n), 'schedule+0x5');
      const types = r.symbols.countsByType();
      assert.ok((types.get('T') ?? 0) + (types.get('t') ?? 0) > r.symbols.size / 3);
    } finally {
      mem.close();
    }
  });
});
