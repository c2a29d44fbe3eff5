// `node dist/test/support/down-all.js [prefix]`: stop every lab guest whose name starts with the prefix
// (default "vigil-test-"), by PID. scripts/test.mjs runs it after the end-to-end suites.
import { downAll, TEST_GUEST_PREFIX } from './guest.js';

const prefix = process.argv[2] ?? TEST_GUEST_PREFIX;
try {
  const stopped = await downAll(prefix);
  if (stopped.length > 0) process.stderr.write(`down-all: stopped ${stopped.join(', ')}\n`);
} catch (e) {
  process.stderr.write(`down-all: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
}
