// The memory detectors against real attacks: `signature` (YARA-X over process and module memory) and
// `program-integrity` (running program text vs the page cache), on a guest booted with the attack suite.
// A clean guest first (no alert, and the default rules match nothing anywhere in its RAM), then the
// yara-string and patch-text attacks, on the live guest and on an ELF dump taken afterwards.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { attackImage, runAttack, YARA_STRINGS, type AttackResult } from '../../src/lab/attacks.js';
import { stopGuest, type GuestState } from '../../src/lab/index.js';
import { compileRules, defaultRulesPath } from '../../src/policy/policies/yara-rules.js';
import type { Alert } from '../../src/policy/types.js';
import { runVigil } from '../support/cli.js';
import { dumpGuest, whilePaused } from '../support/dump.js';
import { guestRun, sharedGuest } from '../support/guest.js';

const GUEST = 'vigil-test-attacks-mem';
const POLICIES = ['--policy', 'signature', 'program-integrity'];
/** patchtext is static and non-PIE: its text maps at 0x400000 with file offset = address - 0x400000. */
const IMAGE_BASE = 0x400000n;
const progress = (line: string) => process.stderr.write(`[policy-memory] ${line}\n`);

interface StringEvidence {
  identifier: string;
  va: string;
  length: number;
  excerpt: string;
  vma: { start: string; end: string; perms: string; path: string };
}

/** `vigil check` on a target; exit 0 (clean) or 1 (alerts) with a JSON array, anything else fails. */
async function check(target: string[]): Promise<Alert[]> {
  const r = await runVigil(['check', ...target, '--json', '--no-baseline', ...POLICIES], {
    timeoutMs: 300_000,
  });
  assert.ok(r.code === 0 || r.code === 1, `vigil check exited ${r.code}: ${r.stderr}`);
  const alerts = JSON.parse(r.stdout) as Alert[];
  assert.equal(r.code, alerts.length > 0 ? 1 : 0, 'exit status agrees with the alerts');
  return alerts;
}

function field(r: AttackResult, key: string): string {
  const v = r.fields[key];
  assert.ok(v !== undefined, `attack ${r.name} reported no ${key}= (${JSON.stringify(r.fields)})`);
  return v;
}

const page = (va: bigint) => va & ~0xfffn;
const h = (v: bigint) => '0x' + v.toString(16);

/** The signature alerts for one process, by rule. */
function signatureAlerts(alerts: Alert[], pid: number): Map<string, Alert> {
  const out = new Map<string, Alert>();
  for (const a of alerts)
    if (a.policy === 'signature' && a.evidence.pid === pid) out.set(String(a.evidence.rule), a);
  return out;
}

function assertYaraAlerts(alerts: Alert[], r: AttackResult): void {
  const pid = r.pid as number;
  const byRule = signatureAlerts(alerts, pid);
  assert.deepEqual(
    [...byRule.keys()].sort(),
    ['cryptominer_stratum_config', 'linux_mirai_busybox_probe', 'linux_xmrig_miner', 'vigil_test_marker'],
    `rules matched in yarastring (${pid})`,
  );
  const marker = byRule.get('vigil_test_marker')!;
  assert.equal(marker.severity, 'high');
  assert.equal(marker.technique, 'T1027');
  assert.equal(marker.evidence.comm, 'yarastring');
  assert.equal(marker.evidence.exe, '/attacks/bin/yarastring');
  const strings = marker.evidence.strings as StringEvidence[];
  // The marker at both places the attack put it: its heap block and its anonymous mapping.
  assert.deepEqual(
    strings.map((s) => s.va).sort(),
    [field(r, 'heap'), field(r, 'anon')].map((a) => h(BigInt(a))).sort(),
  );
  for (const s of strings) {
    assert.equal(s.identifier, '$marker');
    assert.equal(s.excerpt, YARA_STRINGS[0]);
    assert.equal(s.length, Number(field(r, 'marker_len')));
    assert.ok(
      BigInt(s.vma.start) <= BigInt(s.va) && BigInt(s.va) < BigInt(s.vma.end),
      'the VMA holds the match',
    );
    assert.match(s.vma.perms, /^rw-p$/);
  }
  assert.ok(
    strings.some((s) => s.vma.path === '[heap]'),
    'one copy is on the heap',
  );
  assert.equal(byRule.get('linux_xmrig_miner')!.technique, 'T1496');
  // Nothing else in the guest matches.
  const others = alerts.filter((a) => a.policy === 'signature' && a.evidence.pid !== pid);
  assert.deepEqual(others, [], 'signature alerts for other processes');
}

function assertPatchAlerts(alerts: Alert[], r: AttackResult): void {
  const pid = r.pid as number;
  const mine = alerts.filter((a) => a.policy === 'program-integrity');
  assert.ok(
    mine.every((a) => a.evidence.pid === pid),
    `program-integrity alerts only for patchtext: ${JSON.stringify(mine.map((a) => a.evidence.pid))}`,
  );
  const patched = {
    mprotect_addr: 'b801000000c3', // mov eax, 1; ret
    procmem_addr: 'b8adde0000c3', // mov eax, 0xdead; ret
  } as const;
  assert.equal(mine.length, 2, `two patched pages: ${JSON.stringify(mine.map((a) => a.evidence.page))}`);
  for (const [key, bytes] of Object.entries(patched)) {
    const addr = BigInt(field(r, key));
    const a = mine.find((x) => x.evidence.page === h(page(addr)));
    assert.ok(a, `an alert for the page of ${key} (${h(addr)})`);
    const e = a.evidence as Record<string, unknown> & { vma: Record<string, unknown> };
    assert.equal(a.severity, 'high');
    assert.equal(a.technique, 'T1055.009');
    assert.equal(e.comm, 'patchtext');
    assert.equal(e.exe, '/attacks/bin/patchtext');
    assert.equal(e.fileOffset, h(page(addr) - IMAGE_BASE));
    assert.equal(e.comparedWith, 'page-cache');
    assert.equal(e.anonymousCopy, true, 'the page is a private anonymous copy');
    const first = BigInt(e.firstDifference as string);
    assert.ok(
      first >= addr && first < addr + BigInt(field(r, 'len')),
      `first difference ${h(first)} in the patch`,
    );
    const skipped = Number(first - addr) * 2;
    assert.ok((e.processBytes as string).startsWith(bytes.slice(skipped)), `${key}: the patch bytes`);
    assert.notEqual(e.fileBytes, e.processBytes);
    assert.equal(e.vma.path, '/attacks/bin/patchtext');
    assert.equal(e.vma.perms, 'r-xp');
    if (key === 'mprotect_addr') {
      // mprotect split the page off into a VMA of its own, marked as once writable.
      assert.equal(e.vma.start, h(page(addr)));
      assert.equal(e.vma.end, h(page(addr) + 0x1000n));
      assert.equal(e.vma.madeWritable, true);
    } else {
      // A write through /proc/PID/mem leaves the map as it was: R-X all along, never made writable.
      const [start, end] = [BigInt(e.vma.start as string), BigInt(e.vma.end as string)];
      assert.ok(start <= page(addr) && page(addr) < end, 'the VMA holds the page');
      assert.ok(end - start > 0x1000n, 'the /proc/PID/mem page is part of a larger text VMA');
      assert.equal(e.vma.madeWritable, undefined);
    }
  }
}

describe('memory detectors: signature and program-integrity', { timeout: 1_800_000 }, () => {
  let g: GuestState;
  let dir: string;
  let yara: AttackResult;
  let patch: AttackResult;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vigil-policy-memory-'));
    g = await sharedGuest(GUEST, await attackImage({ progress }));
  });

  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await stopGuest(GUEST);
  });

  it('a clean guest raises nothing, and the default rules match nowhere in its RAM', async () => {
    assert.deepEqual(await check(['--qmp', g.qmp]), []);
    // Every byte of guest RAM (kernel, modules, page cache, every process), not only what the policy
    // scans: the shipped rules must not fire on busybox, the kernel or the attack programs at rest.
    const rules = compileRules([{ name: 'default.yar', text: readFileSync(defaultRulesPath(), 'utf8') }]);
    const hits = await whilePaused(g, async () => rules.scanner.scan(readFileSync(g.memoryFile)));
    assert.deepEqual(
      hits.map((m) => [m.ruleIdentifier, m.matches.slice(0, 3)]),
      [],
      'default rules match clean guest RAM',
    );
  });

  it('yara-string: every default rule fires on the process, with the marker at its heap and anon addresses', async () => {
    yara = await runAttack(g, 'yara-string');
    assertYaraAlerts(await check(['--qmp', g.qmp]), yara);
  });

  it('patch-text: both patched pages, with page, file offset and the patch bytes', async () => {
    patch = await runAttack(g, 'patch-text');
    const alerts = await check(['--qmp', g.qmp]);
    assertPatchAlerts(alerts, patch);
    assertYaraAlerts(alerts, yara);
    assert.deepEqual(
      alerts.filter((a) => a.policy === 'vigil-health'),
      [],
      'no health alerts: the walks saw everything',
    );
  });

  it('an ELF dump taken after the attacks shows the same', async () => {
    const core = join(dir, 'after.elf');
    await dumpGuest(g, core, 'elf');
    const alerts = await check(['--dump', core]);
    assertYaraAlerts(alerts, yara);
    assertPatchAlerts(alerts, patch);
    assert.deepEqual(
      alerts.filter((a) => a.policy === 'vigil-health'),
      [],
    );
    // The guest itself still runs the patched code (the dump did not disturb it).
    assert.match(await guestRun(g, `cat /proc/${patch.pid}/comm`), /patchtext/);
  });
});
