import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVigilError } from '../../util/errors.js';
import { parseSinkConfig, sinkNameOf } from './config.js';

function problem(input: unknown): string {
  try {
    parseSinkConfig(input);
  } catch (e) {
    assert.ok(isVigilError(e));
    assert.equal(e.kind, 'usage');
    return e.message;
  }
  assert.fail('config was accepted');
}

test('valid configs of every type parse unchanged', () => {
  const configs = [
    { type: 'stdout' },
    { type: 'stdout', color: 'never', name: 'console' },
    { type: 'jsonl', path: '/var/log/vigil/alerts.jsonl', maxBytes: 10_000_000, keep: 3 },
    { type: 'syslog', transport: 'udp', host: 'logs.example', port: 5514, facility: 'local3' },
    { type: 'syslog', transport: 'tcp', facility: 4, evidence: true, maxQueue: 50 },
    { type: 'syslog', transport: 'unix', path: '/dev/log' },
    { type: 'syslog', transport: 'unix', socketType: 'stream', framing: 'octet-counting' },
    {
      type: 'webhook',
      url: 'https://siem.example/hook',
      headers: { Authorization: 'Bearer x' },
      spoolDir: '/var/spool/vigil',
    },
  ];
  for (const c of configs) assert.deepEqual(parseSinkConfig(c), c);
});

test('errors name the bad key', () => {
  assert.match(problem({ type: 'jsonl', path: '/x', maxbytes: 5 }), /sink\.maxbytes: unknown key/);
  assert.match(
    problem({ type: 'jsonl', path: '/x', maxBytes: '5' }),
    /sink\.maxBytes: Expected number, received string/,
  );
  assert.match(problem({ type: 'jsonl' }), /sink\.path: Required/);
  assert.match(
    problem({ type: 'smoke-signal' }),
    /sink\.type: must be one of "stdout", "jsonl", "syslog", "webhook"/,
  );
  assert.match(
    problem({ type: 'syslog', transport: 'udp', path: '/dev/log' }),
    /sink\.path: only for transport unix/,
  );
  assert.match(
    problem({ type: 'syslog', transport: 'unix', port: 514 }),
    /sink\.port: only for transport udp or tcp/,
  );
  assert.match(problem({ type: 'syslog', transport: 'udp', framing: 'lf' }), /sink\.framing: only for/);
  assert.match(problem({ type: 'syslog', transport: 'tcp', facility: 'local9' }), /sink\.facility:/);
  assert.match(problem({ type: 'syslog', transport: 'tcp', sdId: 'bad id' }), /sink\.sdId: RFC 5424 SD-ID/);
  assert.match(
    problem({ type: 'webhook', url: 'ftp://x/', spoolDir: '/s' }),
    /sink\.url: http: or https: only/,
  );
  assert.match(
    problem({ type: 'webhook', url: 'https://u:p@x/', spoolDir: '/s' }),
    /sink\.url: no credentials/,
  );
  assert.match(
    problem({ type: 'webhook', url: 'https://x/', spoolDir: '/s', headers: { 'X-A': 'a\r\nInjected: 1' } }),
    /sink\.headers\.X-A: no CR, LF or NUL/,
  );
});

test('sink names never carry a webhook URL path or query', () => {
  const c = parseSinkConfig({
    type: 'webhook',
    url: 'https://hooks.example/services/SECRET?token=t',
    spoolDir: '/s',
  });
  assert.equal(sinkNameOf(c), 'webhook:hooks.example');
  assert.equal(sinkNameOf(parseSinkConfig({ type: 'syslog', transport: 'tcp' })), 'syslog:tcp:127.0.0.1:514');
  assert.equal(sinkNameOf(parseSinkConfig({ type: 'jsonl', path: '/a', name: 'file' })), 'file');
});
