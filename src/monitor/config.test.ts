import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { definePolicy } from '../policy/policy.js';
import { isVigilError } from '../util/errors.js';
import {
  applyCliOptions,
  DEFAULTS,
  emptyWatchConfig,
  formatPath,
  loadWatchConfig,
  parseWatchConfig,
  parseYaml,
} from './config.js';

const rawSocket = definePolicy({
  id: 'raw-socket',
  title: 'raw sockets',
  description: 'test',
  severity: 'high',
  requires: ['kernel'],
  poll: () => [],
});
const withOptions = definePolicy({
  id: 'signature',
  title: 'signatures',
  description: 'test',
  severity: 'high',
  requires: ['kernel'],
  poll: () => [],
  parseOptions(raw) {
    if (raw.rules !== undefined && typeof raw.rules !== 'string') throw new Error('rules must be a string');
    return { ...raw };
  },
});
const policies = [rawSocket, withOptions];

/** The one-line message of the usage error `fn` throws. */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(isVigilError(e), `not a VigilError: ${String(e)}`);
    assert.equal(e.kind, 'usage');
    assert.ok(!e.message.includes('\n'), 'one line');
    return e.message;
  }
  assert.fail('no error thrown');
}

const parse = (doc: unknown) => parseWatchConfig(doc, { policies, baseDir: '/etc/vigil', source: 'cfg' });

test('a full config parses, with paths relative to the file and policy defaults merged', () => {
  const c = parse(
    parseYaml(
      `
targets:
  - name: web1
    qmp: /run/vigil/web1.qmp
  - qmp: run/db.qmp
    pid: 4242
discovery:
  globs: ['/var/run/qemu-server/*.qmp']
  intervalMs: 5000
policies:
  '*': { intervalMs: 2000 }
  raw-socket: { response: pause, severity: critical }
  signature: { enabled: false, options: { rules: x } }
sweepBudgetMs: 500
sinks:
  - { type: jsonl, path: alerts.jsonl }
  - { type: webhook, url: 'https://siem.example/in', spoolDir: spool }
metrics: { port: 9477 }
baselineDir: state/baselines
retry: { reconnect: { initialMs: 100, maxMs: 1000 } }
`,
      'cfg',
    ),
  );
  assert.deepEqual(c.targets, [
    { name: 'web1', qmp: '/run/vigil/web1.qmp' },
    { name: 'db', qmp: '/etc/vigil/run/db.qmp', pid: 4242 },
  ]);
  assert.deepEqual(c.discovery, { globs: ['/var/run/qemu-server/*.qmp'], intervalMs: 5000 });
  assert.deepEqual(c.engine.policies, {
    'raw-socket': { intervalMs: 2000, response: 'pause', severity: 'critical' },
    signature: { intervalMs: 2000, enabled: false, options: { rules: 'x' } },
  });
  assert.equal(c.engine.sweepBudgetMs, 500);
  assert.equal(c.sinks[0]!.type === 'jsonl' && c.sinks[0]!.path, '/etc/vigil/alerts.jsonl');
  assert.equal(c.sinks[1]!.type === 'webhook' && c.sinks[1]!.spoolDir, '/etc/vigil/spool');
  assert.deepEqual(c.metrics, { port: 9477, host: '127.0.0.1' });
  assert.equal(c.baselineDir, '/etc/vigil/state/baselines');
  assert.deepEqual(c.retry, { reconnect: { initialMs: 100, maxMs: 1000 }, bootstrap: DEFAULTS.bootstrap });
  assert.equal(c.identityCheckMs, DEFAULTS.identityCheckMs);
});

test('a missing key is named with its path', () => {
  const msg = errorOf(() => parse({ targets: [{ qmp: '/a.qmp' }, { name: 'b' }] }));
  assert.equal(msg, 'cfg: targets[1].qmp: required');
});

test('unknown keys are rejected, at any depth', () => {
  assert.match(
    errorOf(() => parse({ targets: [{ qmp: '/a', qmpp: 1 }] })),
    /targets\[0\]\.qmpp: unknown key/,
  );
  assert.match(
    errorOf(() => parse({ sinkz: [] })),
    /^cfg: sinkz: unknown key$/,
  );
  assert.match(
    errorOf(() => parse({ metrics: { port: 1, tls: true } })),
    /metrics\.tls: unknown key/,
  );
});

test('every problem is listed on the one line', () => {
  const msg = errorOf(() =>
    parse({ targets: [{ qmp: 5 }], sweepBudgetMs: 'fast', metrics: { port: 70000 } }),
  );
  assert.match(msg, /targets\[0\]\.qmp: expected string, got number/);
  assert.match(msg, /sweepBudgetMs: expected number, got string/);
  assert.match(msg, /metrics\.port: number must be less than or equal to 65535/);
});

test('sink configs reuse the sink schemas', () => {
  assert.match(
    errorOf(() => parse({ sinks: [{ type: 'jsonl' }] })),
    /sinks\[0\]\.path: required/,
  );
  assert.match(
    errorOf(() => parse({ sinks: [{ type: 'carrier-pigeon' }] })),
    /sinks\[0\]\.type: must be one of/,
  );
  assert.match(
    errorOf(() => parse({ sinks: [{ type: 'webhook', url: 'ftp://x/', spoolDir: '/s' }] })),
    /sinks\[0\]\.url: http: or https: only/,
  );
  assert.match(
    errorOf(() =>
      parse({
        sinks: [
          { type: 'jsonl', path: '/a' },
          { type: 'webhook', url: 'nope', spoolDir: '/s' },
        ],
      }),
    ),
    /sinks\[1\]\.url: invalid url/,
  );
});

test('policies are checked against the policies vigil has, options by the policy itself', () => {
  assert.match(
    errorOf(() => parse({ policies: { 'raw-sockets': { enabled: true } } })),
    /policies\.raw-sockets: unknown policy \(known: raw-socket, signature\)/,
  );
  assert.match(
    errorOf(() => parse({ policies: { signature: { options: { rules: 3 } } } })),
    /policies\.signature\.options: rules must be a string/,
  );
  assert.match(
    errorOf(() => parse({ policies: { 'raw-socket': { response: 'nuke' } } })),
    /policies\.raw-socket\.response: must be one of "alert", "pause"/,
  );
  assert.match(
    errorOf(() => parse({ policies: { '*': { options: {} } } })),
    /policies\.\*\.options/,
  );
  assert.match(
    errorOf(() => parse({ policies: { 'raw-socket': { intervalMs: 10 } } })),
    /policies\.raw-socket\.intervalMs: number must be greater than or equal to 100/,
  );
});

test('two targets may not share a name or a socket', () => {
  assert.match(
    errorOf(() => parse({ targets: [{ qmp: '/x/a.qmp' }, { qmp: '/y/a.qmp' }] })),
    /targets\[1\]\.name: targets\[0\] is already named "a"/,
  );
  assert.match(
    errorOf(() =>
      parse({
        targets: [
          { name: 'a', qmp: '/s' },
          { name: 'b', qmp: '/s' },
        ],
      }),
    ),
    /targets\[1\]\.qmp: targets\[0\] already watches this socket/,
  );
  assert.match(
    errorOf(() => parse({ retry: { bootstrap: { initialMs: 5000, maxMs: 100 } } })),
    /retry\.bootstrap\.initialMs: must not exceed maxMs/,
  );
});

test('YAML errors name the line; the top level must be a mapping', () => {
  assert.match(
    errorOf(() => parseYaml('targets:\n  - qmp: [unclosed\n', 'f')),
    /^f: line \d+, column \d+: /,
  );
  assert.match(
    errorOf(() => parseYaml('a: 1\na: 2\n', 'f')),
    /^f: line 2/,
  );
  assert.match(
    errorOf(() => parseYaml('- a\n- b\n', 'f')),
    /top level must be a mapping/,
  );
  assert.equal(parseYaml('', 'f'), null);
  assert.deepEqual(parse(parseYaml('# nothing yet\n', 'f')).targets, []);
});

test('formatPath reads like YAML', () => {
  assert.equal(formatPath(['targets', 1, 'qmp']), 'targets[1].qmp');
  assert.equal(formatPath(['sinks', 0, 'headers', 'X-Key']), 'sinks[0].headers.X-Key');
  assert.equal(formatPath([]), '(top level)');
});

test('loadWatchConfig reads a file and names it in errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vigil-config-'));
  try {
    const good = join(dir, 'good.yaml');
    writeFileSync(good, 'targets:\n  - qmp: vm1.qmp\n');
    const c = loadWatchConfig(good, { policies });
    assert.deepEqual(c.targets, [{ name: 'vm1', qmp: join(dir, 'vm1.qmp') }]);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'targets:\n  - name: a\n    qmp: /a\n  - name: b\n');
    assert.equal(
      errorOf(() => loadWatchConfig(bad, { policies })),
      `config ${bad}: targets[1].qmp: required`,
    );
    assert.match(
      errorOf(() => loadWatchConfig(join(dir, 'none.yaml'), { policies })),
      /cannot read it/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('command-line options add targets, sinks and metrics', () => {
  const c = applyCliOptions(emptyWatchConfig(), {
    qmp: ['/run/a/qmp.sock', '/run/b/qmp.sock', '/run/a/qmp.sock'],
    metricsPort: 0,
    jsonl: '/tmp/alerts.jsonl',
    webhook: 'http://127.0.0.1:9/hook',
    spool: '/tmp/spool',
    discover: true,
  });
  assert.deepEqual(
    c.targets.map((t) => t.name),
    ['a', 'b'],
  );
  assert.deepEqual(c.metrics, { port: 0, host: '127.0.0.1' });
  assert.deepEqual(
    c.sinks.map((s) => s.type),
    ['jsonl', 'webhook'],
  );
  assert.deepEqual(c.discovery?.globs, ['/run/vigil/*.qmp']);
  assert.match(
    errorOf(() => applyCliOptions(emptyWatchConfig(), { webhook: 'http://x/' })),
    /needs --spool/,
  );
  assert.match(
    errorOf(() => applyCliOptions(emptyWatchConfig(), { webhook: 'nope', spool: '/s' })),
    /--webhook: invalid url/,
  );
  const twice = applyCliOptions(emptyWatchConfig(), { qmp: ['/x/vm.qmp', '/y/vm.qmp'] });
  assert.deepEqual(
    twice.targets.map((t) => t.name),
    ['vm', 'vm-2'],
  );
});

test('gdb: an address, auto or false per target; --gdb names the one --qmp VM, --no-gdb every VM', () => {
  const c = parse({
    targets: [
      { name: 'a', qmp: 'a.qmp', gdb: '127.0.0.1:1234' },
      { name: 'b', qmp: 'b.qmp', gdb: 'run/b-gdb.sock' },
      { name: 'c', qmp: 'c.qmp', gdb: false },
      { name: 'd', qmp: 'd.qmp', gdb: 'unix:run/d-gdb.sock' },
      { name: 'e', qmp: 'e.qmp' },
    ],
  });
  assert.deepEqual(
    c.targets.map((t) => t.gdb),
    ['127.0.0.1:1234', '/etc/vigil/run/b-gdb.sock', false, 'unix:/etc/vigil/run/d-gdb.sock', undefined],
  );
  assert.match(
    errorOf(() => parse({ targets: [{ qmp: 'a.qmp', gdb: true }] })),
    /^cfg: targets\[0\]\.gdb: /,
  );
  assert.match(
    errorOf(() => parse({ targets: [{ qmp: 'a.qmp', gdb: '' }] })),
    /^cfg: targets\[0\]\.gdb: /,
  );

  const one = applyCliOptions(c, { qmp: ['/run/x.qmp'], gdb: '127.0.0.1:5555' });
  assert.deepEqual(one.targets.at(-1), { name: 'x', qmp: '/run/x.qmp', gdb: '127.0.0.1:5555' });
  const again = applyCliOptions(c, { qmp: ['/etc/vigil/a.qmp'], gdb: '127.0.0.1:5555' });
  assert.equal(again.targets[0]!.gdb, '127.0.0.1:5555', 'a configured VM named again takes the address');
  assert.match(
    errorOf(() => applyCliOptions(c, { qmp: ['/run/x.qmp', '/run/y.qmp'], gdb: '127.0.0.1:5555' })),
    /--gdb belongs to one VM/,
  );
  const off = applyCliOptions(c, { qmp: ['/run/x.qmp', '/run/y.qmp'], gdb: false });
  assert.ok(off.targets.every((t) => t.gdb === false));
});
