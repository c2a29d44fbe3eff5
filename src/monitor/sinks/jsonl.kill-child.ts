// Child process for the jsonl kill -9 test: appends alerts of varied sizes through the sink as fast as it
// can until its parent kills it (or a bound of time and count is reached).
import { JsonlSink } from './jsonl.js';
import { makeAlert } from './test-support.js';

const [path, maxBytes, fsync, maxLine] = process.argv.slice(2);
const sink = await JsonlSink.open({
  type: 'jsonl',
  path: path!,
  maxBytes: maxBytes ? Number(maxBytes) : undefined,
  keep: 3,
  fsync: fsync !== 'nofsync',
});
const lineBound = Number(maxLine ?? 40_000);
process.stdout.write(`ready ${sink.repairedBytes}\n`);
const end = Date.now() + 20_000;
for (let i = 0; i < 1_000_000 && Date.now() < end; i++) {
  // Sizes from a few hundred bytes to lineBound so that lines straddle page boundaries of the file.
  const size = (i * 7919) % lineBound;
  await sink.write(makeAlert({ id: `alert-${i}`, evidence: { i, blob: 'x'.repeat(size) } }));
}
await sink.close();
