// The test command (npm test runs it after build, lint and format checks): unit tests next to the code,
// then the end-to-end suites against the reference guest. End-to-end files share booted guests (named
// vigil-test-*), which this script shuts down at the end, by PID, whatever happened.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function find(dir, out = []) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) find(p, out);
    else if (p.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const only = process.argv[2]; // optional: "unit" or "e2e"
const unit = find('dist/src').sort();
const e2e = find('dist/test').sort();
const files = only === 'unit' ? unit : only === 'e2e' ? e2e : [...unit, ...e2e];

let status = 0;
try {
  // One file at a time: end-to-end files share the lab guests and the machine has two cores.
  const r = spawnSync(
    process.execPath,
    ['--test', '--test-reporter=spec', '--test-concurrency=1', ...files],
    { stdio: 'inherit', env: { ...process.env, VIGIL_TEST: '1' } },
  );
  status = r.status ?? 1;
} finally {
  if (e2e.length > 0 && only !== 'unit') {
    const down = spawnSync(process.execPath, ['dist/test/support/down-all.js', 'vigil-test-'], {
      stdio: 'inherit',
    });
    if (down.status !== 0) console.error('test: could not shut down every test guest');
  }
}
process.exit(status);
