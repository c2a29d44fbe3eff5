import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { VigilError } from '../../../util/errors.js';
import { FakeKernel, KERNEL_TEXT, TEXT_END } from '../modules/test-kernel.js';
import { hashKernelRange, hashKernelText, kernelSections, kernelTextRange } from './sections.js';

test('sections from boundary symbols; only complete pairs', () => {
  const k = new FakeKernel();
  assert.deepEqual(kernelSections(k), [
    { name: 'text', start: KERNEL_TEXT, end: TEXT_END, startSymbol: '_stext', endSymbol: '_etext' },
  ]);
  assert.deepEqual(kernelTextRange(k), { start: KERNEL_TEXT, end: TEXT_END });
});

test('the text hash is SHA-256 of the bytes and changes with one patched byte', () => {
  const k = new FakeKernel();
  const text = Buffer.alloc(Number(TEXT_END - KERNEL_TEXT));
  for (let i = 0; i < text.length; i++) text[i] = (i * 7) & 0xff;
  k.write(KERNEL_TEXT, text);
  const h = hashKernelText(k);
  assert.equal(h.sha256, createHash('sha256').update(text).digest('hex'));
  assert.equal(h.bytes, text.length);
  assert.equal(h.unreadablePages, 0);
  k.write(KERNEL_TEXT + 0x1234n, Buffer.from([0xcc]));
  assert.notEqual(hashKernelText(k).sha256, h.sha256);
});

test('unaligned ranges and unmapped pages: zeros counted, issue recorded', () => {
  const k = new FakeKernel();
  const start = KERNEL_TEXT + 0x3ff800n; // the last 2 KiB of the mapped image, then 6 KiB unmapped
  const r = hashKernelRange(k, start, start + 0x2000n);
  const expect = createHash('sha256').update(Buffer.alloc(0x2000)).digest('hex');
  assert.equal(r.sha256, expect); // mapped bytes are zero in the fake, unmapped ones hash as zeros
  assert.equal(r.unreadablePages, 2);
  assert.equal(k.issues.items[0]?.kind, 'unmapped');
  assert.throws(
    () => hashKernelRange(k, start, start - 1n),
    (e: unknown) => e instanceof VigilError && e.kind === 'bound',
  );
  assert.throws(
    () => hashKernelRange(k, 0n, 1n << 40n),
    (e: unknown) => e instanceof VigilError && e.kind === 'bound',
  );
});
