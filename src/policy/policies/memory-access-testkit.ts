// Test support for memory-access's parts: a baseline in memory, a sweep context over kernel-testkit's
// synthetic kernel, and a kernel learned by the policy with a poll function.
import assert from 'node:assert/strict';
import type { Kernel } from '../../os/linux/kernel.js';
import type { BaselineAccess, JsonValue } from '../baseline.js';
import type { SweepContext } from '../policy.js';
import type { Finding } from '../types.js';
import { IntegrityTestKernel } from './kernel-testkit.js';
import { checkIntegrity, memoryAccessPolicy } from './memory-access.js';

/** A baseline in memory, as the engine's StagedBaseline behaves for one policy. */
export function memoryBaseline(
  init?: Map<string, JsonValue>,
): BaselineAccess & { map: Map<string, JsonValue> } {
  const map = new Map<string, JsonValue>(init ?? []);
  return {
    map,
    get exists() {
      return map.size > 0;
    },
    identityChanged: false,
    learnedAt: undefined,
    get: <T extends JsonValue = JsonValue>(key: string) => map.get(key) as T | undefined,
    set: (key, value) => void map.set(key, JSON.parse(JSON.stringify(value)) as JsonValue),
    delete: (key) => void map.delete(key),
    keys: () => [...map.keys()],
    clear: () => map.clear(),
    acceptIdentity: () => undefined,
  };
}

export function context(
  k: IntegrityTestKernel,
  baseline: BaselineAccess,
  notes: string[] = [],
): SweepContext<Kernel> {
  const kernel = k as unknown as Kernel;
  return {
    vm: 'test-vm',
    machine: { name: 'test-vm', memory: k.memory, vcpus: [], close: async () => undefined },
    kernel,
    requireKernel: () => kernel,
    baseline,
    options: {},
    sweep: 1,
    signal: new AbortController().signal,
    now: () => 0,
    note: (kind, detail) => void notes.push(`${kind}: ${detail}`),
  };
}

/** Learn on a fresh kernel, then return a poll function (bumping the cache epoch like a new sweep). */
export function learned(k = new IntegrityTestKernel()) {
  const b = memoryBaseline();
  const notes: string[] = [];
  memoryAccessPolicy.learn!(context(k, b, notes), b);
  assert.deepEqual(notes, []);
  const poll = (): Finding[] => {
    k.refresh();
    return checkIntegrity(k, b).findings;
  };
  return { k, b, poll };
}

export const keys = (fs: readonly Finding[]) => fs.map((f) => f.key).sort();
