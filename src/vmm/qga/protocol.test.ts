import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReplyReader, decodeBase64, type ReaderOutput } from './protocol.js';

const lines = (outs: ReaderOutput[]) => outs.filter((o) => o.kind === 'line');

describe('qemu-guest-agent reply reader', () => {
  it('splits lines across chunks and reports the 0xFF delimiter, dropping the partial line before it', () => {
    const r = new ReplyReader();
    assert.deepEqual(r.push(Buffer.from('{"return": 1}\n{"ret')), [
      { kind: 'line', text: '{"return": 1}', truncated: false },
    ]);
    const out = r.push(
      Buffer.concat([Buffer.from('urn": {'), Buffer.from([0xff]), Buffer.from('{"return": 9}\n')]),
    );
    assert.deepEqual(out, [{ kind: 'delimiter' }, { kind: 'line', text: '{"return": 9}', truncated: false }]);
  });

  it('cuts long strings, keeps the JSON parseable, and never splits an escape sequence', () => {
    const r = new ReplyReader({ maxString: 10, maxStrings: 100, maxStructure: 1000 });
    const [a] = lines(r.push(Buffer.from('{"out-data": "ABCDEFGHIJKLMNOP", "exited": true}\n')));
    assert.ok(a.kind === 'line');
    assert.equal(a.truncated, true);
    assert.deepEqual(JSON.parse(a.text), { 'out-data': 'ABCDEFGHIJ', exited: true });
    // "\u00e9" escapes: the cut comes before the 2nd one (it would not fit), not inside it.
    const [b] = lines(r.push(Buffer.from('{"s": "\\u00e9\\u00e9\\u00e9x"}\n')));
    assert.ok(b.kind === 'line');
    assert.deepEqual(JSON.parse(b.text), { s: '\u00e9' });
    assert.equal(b.truncated, true);
    // An escaped quote does not end the string.
    const [c] = lines(r.push(Buffer.from('{"s": "a\\"b"}\n')));
    assert.ok(c.kind === 'line');
    assert.deepEqual(JSON.parse(c.text), { s: 'a"b' });
    assert.equal(c.truncated, false);
  });

  it('keeps bounded memory on a huge line, fed in small chunks', () => {
    const r = new ReplyReader({ maxString: 1000, maxStrings: 1500, maxStructure: 4096 });
    let peak = 0;
    r.push(Buffer.from('{"return": {"out-data": "'));
    const chunk = Buffer.alloc(64 * 1024, 'A');
    for (let i = 0; i < 160; i++) {
      // 10 MiB of one string
      assert.deepEqual(r.push(chunk), []);
      peak = Math.max(peak, r.pending);
    }
    const [end] = r.push(Buffer.from('", "err-data": "' + 'B'.repeat(2000) + '", "exited": true}}\n'));
    assert.ok(peak <= 1500 + 4096, `peak ${peak}`);
    assert.ok(end.kind === 'line' && end.truncated);
    const v = JSON.parse(end.text) as { return: { 'out-data': string; 'err-data': string; exited: boolean } };
    assert.equal(v.return['out-data'].length, 1000);
    // What the line's budget for long strings left (beyond the first 64 bytes of each); keys stay whole.
    assert.equal(v.return['err-data'].length, 64 + 1500 - (1000 - 64));
    assert.equal(v.return.exited, true);
  });

  it('drops a line whose structure exceeds its cap, then reads on', () => {
    const r = new ReplyReader({ maxString: 100, maxStrings: 100, maxStructure: 50 });
    const out = r.push(Buffer.from(`[${'1,'.repeat(100)}1]\n{"return": {}}\n`));
    assert.deepEqual(out, [
      { kind: 'oversized', bytes: 203 },
      { kind: 'line', text: '{"return": {}}', truncated: false },
    ]);
  });

  it('decodes only real base64', () => {
    assert.equal(decodeBase64('aGVsbG8=')?.toString(), 'hello');
    assert.equal(decodeBase64('')?.length, 0);
    assert.equal(decodeBase64('aGVs bG8='), undefined);
    assert.equal(decodeBase64('a=b'), undefined);
  });
});
