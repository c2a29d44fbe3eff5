import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVigilError } from '../util/errors.js';
import {
  CONTENT_TYPE,
  createVigilMetrics,
  escapeLabelValue,
  isLoopback,
  observeSinks,
  Registry,
  startMetricsServer,
} from './metrics.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Parsed {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: Sample[];
}

/** A parser of the text exposition format 0.0.4, written from its description, to read back what we render. */
function parseExposition(text: string): Parsed {
  const out: Parsed = { help: new Map(), type: new Map(), samples: [] };
  assert.ok(text.endsWith('\n'));
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      out.help.set(
        m[1]!,
        m[2]!.replace(/\\(\\|n)/g, (_, c) => (c === 'n' ? '\n' : '\\')),
      );
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) {
      out.type.set(m[1]!, m[2]!);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    const body = m[2] ? m[2].slice(1, -1) : '';
    let i = 0;
    while (i < body.length) {
      const eq = body.indexOf('=', i);
      const name = body.slice(i, eq);
      assert.match(name, /^[a-zA-Z_][a-zA-Z0-9_]*$/);
      assert.equal(body[eq + 1], '"');
      let j = eq + 2;
      let value = '';
      for (;;) {
        const c = body[j++];
        assert.ok(c !== undefined, 'unterminated label value');
        if (c === '"') break;
        if (c === '\\') {
          const e = body[j++];
          assert.ok(e === '\\' || e === '"' || e === 'n', `bad escape \\${e}`);
          value += e === 'n' ? '\n' : e;
        } else {
          assert.notEqual(c, '\n');
          value += c;
        }
      }
      labels[name] = value;
      i = body[j] === ',' ? j + 1 : j;
    }
    const v = m[3]!;
    out.samples.push({
      name: m[1]!,
      labels,
      value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v),
    });
  }
  return out;
}

const find = (p: Parsed, name: string, labels: Record<string, string>) =>
  p.samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;

test('vigil metrics render as valid exposition text and parse back', () => {
  const m = createVigilMetrics();
  const odd = 'vm "quoted" \\ back\nslash';
  m.sweeps.inc({ vm: 'web01', result: 'ok' });
  m.sweeps.inc({ vm: 'web01', result: 'ok' });
  m.sweeps.inc({ vm: odd, result: 'error' });
  m.alerts.inc({ vm: 'web01', policy: 'raw-socket', severity: 'high' }, 3);
  m.vms.set({ state: 'running' }, 2);
  m.vms.set({ state: 'paused' }, 1);
  m.events.inc({ vm: 'web01', source: 'qmp' });
  m.eventsDropped.inc({ vm: 'web01' });
  m.walkTruncations.inc({ vm: 'web01', walker: 'tasks' });
  for (const v of [0.0004, 0.003, 0.003, 0.2, 100]) m.sweepDuration.observe({ vm: 'web01' }, v);
  const p = parseExposition(m.registry.render());

  assert.equal(p.type.get('vigil_sweeps_total'), 'counter');
  assert.equal(p.type.get('vigil_sweep_duration_seconds'), 'histogram');
  assert.equal(p.type.get('vigil_vms'), 'gauge');
  for (const name of p.type.keys()) assert.ok(p.help.get(name)!.length > 0, `${name} has HELP`);
  assert.equal(find(p, 'vigil_sweeps_total', { vm: 'web01', result: 'ok' }), 2);
  assert.equal(find(p, 'vigil_sweeps_total', { vm: odd, result: 'error' }), 1);
  assert.equal(find(p, 'vigil_alerts_total', { vm: 'web01', policy: 'raw-socket', severity: 'high' }), 3);
  assert.equal(find(p, 'vigil_vms', { state: 'running' }), 2);
  assert.equal(find(p, 'vigil_events_total', { vm: 'web01', source: 'qmp' }), 1);
  assert.equal(find(p, 'vigil_events_dropped_total', { vm: 'web01' }), 1);
  assert.equal(find(p, 'vigil_walk_truncations_total', { vm: 'web01', walker: 'tasks' }), 1);

  // Histogram: cumulative buckets, +Inf equals count, sum of observations.
  const buckets = p.samples.filter((s) => s.name === 'vigil_sweep_duration_seconds_bucket');
  const le = (b: string) => buckets.find((s) => s.labels.le === b)!.value;
  assert.equal(le('0.001'), 1);
  assert.equal(le('0.0025'), 1);
  assert.equal(le('0.005'), 3);
  assert.equal(le('0.25'), 4);
  assert.equal(le('30'), 4);
  assert.equal(le('+Inf'), 5);
  for (let i = 1; i < buckets.length; i++)
    assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, 'cumulative');
  assert.equal(find(p, 'vigil_sweep_duration_seconds_count', { vm: 'web01' }), 5);
  assert.ok(Math.abs(find(p, 'vigil_sweep_duration_seconds_sum', { vm: 'web01' })! - 100.2064) < 1e-9);
});

test('escaping, label checks, counters only go up, series are bounded', () => {
  assert.equal(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  const r = new Registry(3);
  const c = r.counter<'k'>({ name: 'x_total', help: 'help with \\ and\nnewline', labelNames: ['k'] });
  const plain = r.counter({ name: 'plain_total', help: 'no labels' });
  assert.throws(() => c.inc({ k: 'a', extra: 'b' } as never), /unknown label "extra"/);
  assert.throws(() => c.inc({} as never), /label k missing/);
  assert.throws(() => c.inc({ k: 'a' }, -1), /only goes up/);
  assert.throws(() => r.counter({ name: 'x_total', help: '' }), /registered twice/);
  assert.throws(() => r.gauge({ name: 'bad-name', help: '' }), /not valid/);
  assert.throws(() => r.histogram({ name: 'h', help: '', buckets: [1, 1] }), /strictly increasing/);
  assert.throws(() => r.histogram<'le'>({ name: 'h2', help: '', labelNames: ['le'], buckets: [1] }), /"le"/);
  for (const k of ['a', 'b', 'c', 'd', 'e']) c.inc({ k });
  assert.equal(r.droppedSeries, 2);
  assert.equal(c.value({ k: 'd' }), 0);
  const text = r.render();
  assert.match(text, /^# HELP x_total help with \\\\ and\\nnewline$/m);
  assert.match(text, /^plain_total 0$/m, 'an unlabelled metric shows 0 before its first update');
  const p = parseExposition(text);
  assert.equal(p.help.get('x_total'), 'help with \\ and\nnewline');
  assert.equal(p.samples.filter((s) => s.name === 'x_total').length, 3);
  plain.inc();
  c.remove({ k: 'a' });
  assert.equal(parseExposition(r.render()).samples.filter((s) => s.name === 'x_total').length, 2);
});

test('observeSinks mirrors a SinkSet into gauges and a failure counter at scrape time', () => {
  const m = createVigilMetrics();
  let failures = 2;
  observeSinks(m, {
    stats: () => [
      {
        name: 'jsonl:/a',
        writes: 5,
        failures,
        consecutiveFailures: 0,
        health: 'ok',
        status: { healthy: true, pending: 0, dropped: 0, failures },
      },
      {
        name: 'webhook:siem',
        writes: 5,
        failures: 7,
        consecutiveFailures: 7,
        health: 'failing',
        status: { healthy: false, pending: 4, dropped: 0, failures: 7 },
      },
    ],
  });
  let p = parseExposition(m.registry.render());
  assert.equal(find(p, 'vigil_sink_up', { sink: 'webhook:siem' }), 0);
  assert.equal(find(p, 'vigil_sink_up', { sink: 'jsonl:/a' }), 1);
  assert.equal(find(p, 'vigil_sink_pending', { sink: 'webhook:siem' }), 4);
  assert.equal(find(p, 'vigil_sink_failures_total', { sink: 'jsonl:/a' }), 2);
  failures = 5;
  p = parseExposition(m.registry.render());
  assert.equal(find(p, 'vigil_sink_failures_total', { sink: 'jsonl:/a' }), 5);
});

test('HTTP: /metrics and /healthz on loopback', async (t) => {
  const m = createVigilMetrics();
  m.alerts.inc({ vm: 'web01', policy: 'raw-socket', severity: 'high' });
  let ok = true;
  const server = await startMetricsServer({ registry: m.registry, port: 0, health: () => ({ ok, vms: 1 }) });
  t.after(() => server.close());
  assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);

  const res = await fetch(`${server.url}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), CONTENT_TYPE);
  const p = parseExposition(await res.text());
  assert.equal(find(p, 'vigil_alerts_total', { vm: 'web01', policy: 'raw-socket', severity: 'high' }), 1);

  let h = await fetch(`${server.url}/healthz`);
  assert.equal(h.status, 200);
  assert.deepEqual(await h.json(), { ok: true, vms: 1 });
  ok = false;
  h = await fetch(`${server.url}/healthz`);
  assert.equal(h.status, 503);
  assert.equal(((await h.json()) as { ok: boolean }).ok, false);

  assert.equal((await fetch(`${server.url}/nope`)).status, 404);
  const post = await fetch(`${server.url}/metrics`, { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get('allow'), 'GET, HEAD');
  const head = await fetch(`${server.url}/metrics`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), '');
});

test('HTTP: non-loopback binds are refused unless allowed', async () => {
  const registry = new Registry();
  for (const host of ['0.0.0.0', '::', '10.1.2.3']) {
    await assert.rejects(startMetricsServer({ registry, host, port: 0 }), (e: unknown) => {
      assert.ok(isVigilError(e));
      assert.equal(e.kind, 'denied');
      return true;
    });
  }
  const local = await startMetricsServer({ registry, host: 'localhost', port: 0 });
  assert.ok(isLoopback(local.host));
  await local.close();
  assert.ok(isLoopback('127.8.9.1') && isLoopback('::1') && isLoopback('::ffff:127.0.0.1'));
  assert.ok(!isLoopback('::ffff:10.0.0.1') && !isLoopback('0.0.0.0') && !isLoopback('128.0.0.1'));
});
