import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guestString, htmlEscape, sanitize } from './sanitize.js';

test('escape sequences and newlines from the guest are made visible', () => {
  assert.equal(sanitize('evil\u001b[2Jname\n'), 'evil\\x1b[2Jname\\x0a');
  assert.equal(sanitize('a\u202eb'), 'a\\u202eb');
});

test('guestString stops at NUL, reads latin1 and caps length', () => {
  assert.equal(guestString(Buffer.from([0x62, 0x61, 0x73, 0x68, 0, 0x41])), 'bash');
  assert.equal(guestString(Buffer.from([0xff, 0x07])), '\u00ff\\x07');
  assert.equal(guestString(Buffer.alloc(10, 0x41), 4), 'AAAA…');
});

test('htmlEscape escapes markup', () => {
  assert.equal(htmlEscape('<b a="1">'), '&#60;b a=&#34;1&#34;&#62;');
});
