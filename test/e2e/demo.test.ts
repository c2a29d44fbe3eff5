// Acceptance for `vigil demo` (README command 1): it builds and boots the reference guest, runs every
// attack step and shows a detection for each, then cleans up after itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guestStatus } from '../../src/lab/index.js';
import { DEMO_STEPS } from '../../src/cli/commands/demo.js';
import { runVigil } from '../support/cli.js';

const NAME = 'vigil-test-demo';

test('vigil demo runs end to end and every step shows its detection', { timeout: 20 * 60_000 }, async () => {
  const r = await runVigil(['demo', '--name', NAME, '--timeout', '60'], { timeoutMs: 20 * 60_000 });
  const out = r.stdout;
  for (const s of DEMO_STEPS) {
    assert.match(out, new RegExp(`Attack: ${s.attack} `), `the demo runs ${s.attack}`);
  }
  const alerts = out.split('\n').filter((l) => l.includes('ALERT ['));
  assert.equal(alerts.length, DEMO_STEPS.length, `one alert shown per step:\n${out}\n${r.stderr}`);
  assert.match(out, new RegExp(`${DEMO_STEPS.length} of ${DEMO_STEPS.length} attacks detected`));
  assert.match(out, /0 alerts/, 'the clean guest raised nothing before the attacks');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(guestStatus(NAME), undefined, 'the demo stopped its guest');
});
