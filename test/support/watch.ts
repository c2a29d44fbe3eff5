// Test support for `vigil watch` end to end: the command as a child process (its stderr lines kept and
// parsed into VM state transitions), a poller, and the alerts of a JSON-lines sink.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { repoRoot, vigilBin } from './cli.js';

export interface LogLine {
  /** When the line was read (Date.now()). */
  at: number;
  text: string;
}

/** One `<time> vm NAME: FROM -> TO (REASON)` line of watch's log. */
export interface Transition extends LogLine {
  vm: string;
  from: string;
  to: string;
  reason: string;
}

const TRANSITION = /^\S+ vm (\S+): (\w+) -> (\w+) \((.*)\)$/;

/** `vigil watch` as a child process; its stderr lines kept, VM state transitions parsed. */
export class WatchProcess {
  readonly child: ChildProcess;
  readonly started = Date.now();
  readonly lines: LogLine[] = [];
  readonly transitions: Transition[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** stderr is read to its end: no line comes any more. */
  #closed = false;
  #waiters: (() => void)[] = [];

  /** `label` prefixes the lines echoed when VIGIL_TEST_VERBOSE is set. */
  constructor(args: readonly string[], label = 'watch') {
    this.child = spawn(process.execPath, [vigilBin(), 'watch', ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let buf = '';
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.#line(text, label);
      }
    });
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => resolve({ code, signal })),
    );
    this.child.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
  }

  #line(text: string, label: string): void {
    const at = Date.now();
    this.lines.push({ at, text });
    if (process.env.VIGIL_TEST_VERBOSE) process.stderr.write(`[${label}] vigil: ${text}\n`);
    const m = TRANSITION.exec(text);
    if (m) this.transitions.push({ at, text, vm: m[1]!, from: m[2]!, to: m[3]!, reason: m[4]! });
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** The first `find()` result; fails after the timeout or once vigil's output has ended without it. */
  async #wait<T>(find: () => T | undefined, failure: () => string, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = find();
      if (v) return v;
      if (Date.now() > deadline || this.#closed) assert.fail(failure());
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 500);
        this.#waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }

  #tail(n: number): string {
    return this.lines
      .slice(-n)
      .map((l) => l.text)
      .join('\n');
  }

  /** The first log line read at or after `since` that matches `re`. */
  line(re: RegExp, since: number, timeoutMs: number): Promise<LogLine> {
    return this.#wait(
      () => this.lines.find((l) => l.at >= since && re.test(l.text)),
      () => `timed out after ${timeoutMs} ms waiting for a log line ${re}\n${this.#tail(20)}`,
      timeoutMs,
    );
  }

  /** The first transition of `vm` to `to` read at or after `since`. */
  transition(vm: string, to: string, since: number, timeoutMs: number): Promise<Transition> {
    return this.#wait(
      () => this.transitions.find((x) => x.vm === vm && x.to === to && x.at >= since),
      () => `${vm} did not reach ${to} within ${timeoutMs} ms; log:\n${this.#tail(30)}`,
      timeoutMs,
    );
  }

  /** The metrics server's base URL, from the line vigil prints when it starts. */
  metricsUrl(): string {
    const m = this.lines.map((l) => / watch metrics at (\S+)\/metrics$/.exec(l.text)).find(Boolean);
    assert.ok(m, 'vigil printed its metrics address');
    return m[1]!;
  }
}

/** Poll `fn` until it gives a truthy value; fail after the timeout with `what` and `context()`. */
export async function until<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  context: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline)
      assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}\n${context()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The fields of a jsonl sink line the tests read (src/monitor/sinks/schema.ts EcsAlert). */
export interface JsonlAlert {
  vigil: {
    id: string;
    time: string;
    vm: string;
    policy: string;
    severity: string;
    summary: string;
    key: string;
    evidence: unknown;
    response?: unknown;
  };
}

/** The alerts of a jsonl sink file ([] before it exists). Every line must be a whole JSON document. */
export function readJsonl(path: string): JsonlAlert[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const lines = text.split('\n');
  assert.equal(lines.pop(), '', 'the file ends with a newline');
  return lines.map((l, i) => {
    try {
      return JSON.parse(l) as JsonlAlert;
    } catch (e) {
      assert.fail(`line ${i + 1} of ${path} is not JSON: ${l.slice(0, 200)} (${String(e)})`);
    }
  });
}
