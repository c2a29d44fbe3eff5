// `signature`: Livewire's signature detector with YARA-X rules over guest memory. Each user process's
// private memory (anonymous maps, heap, stack, writable file data, and the whole of any mapped file that
// no longer exists on disk: memfd and unlinked executables) is gathered page by page through its page
// tables — only pages that are present; swapped-out and never-touched ones are skipped — into one
// buffer and scanned as one block, so a rule's condition sees the whole process as YARA's own process
// scan does. Kernel module memory is scanned per module. A physical page is scanned once per sweep
// (shared pages, the zero page), and every sweep and process is bounded in bytes.
//
// Rules: rules/default.yar (shipped; matches the lab's yara-string attack and real-world indicators) plus
// the user's rule files (option `rules`), compiled together; `noDefaultRules` leaves the default set out.
//
// This file holds the options and the policy; yara-rules.ts loads and compiles the rules, signature-scan.ts
// decides what is scanned under which budget (gathering through os/linux/mm/gather.ts), yara-scan.ts places
// matches at their addresses and signature-findings.ts turns them into findings.
import type { Kernel } from '../../os/linux/kernel.js';
import { VigilError } from '../../util/errors.js';
import { definePolicy, type SweepContext } from '../policy.js';
import { signatureSweep, type ScanOptions } from './signature-scan.js';
import { loadRules, type RuleOptions } from './yara-rules.js';

const MiB = 1024 * 1024;

export interface SignatureOptions extends RuleOptions, ScanOptions {}

export const DEFAULT_SIGNATURE_OPTIONS: Readonly<SignatureOptions> = Object.freeze({
  rules: [],
  noDefaultRules: false,
  maxBytesPerProcess: 64 * MiB,
  maxBytesPerSweep: 256 * MiB,
  scanFileMappings: false,
  scanKernelModules: true,
  maxStringsPerRule: 16,
});

/** Validate config options; unknown keys and wrong types are usage errors. */
export function parseSignatureOptions(raw: Readonly<Record<string, unknown>>): SignatureOptions {
  const o: SignatureOptions = { ...DEFAULT_SIGNATURE_OPTIONS, rules: [] };
  for (const [key, v] of Object.entries(raw)) {
    switch (key) {
      case 'rules':
        if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x.length > 0)) {
          throw new VigilError('policy', 'usage', 'option "rules" must be a list of rule file paths');
        }
        o.rules = [...(v as string[])];
        break;
      case 'noDefaultRules':
      case 'scanFileMappings':
      case 'scanKernelModules':
        if (typeof v !== 'boolean')
          throw new VigilError('policy', 'usage', `option "${key}" must be true or false`);
        o[key] = v;
        break;
      case 'maxBytesPerProcess':
      case 'maxBytesPerSweep':
      case 'maxStringsPerRule':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
          throw new VigilError('policy', 'usage', `option "${key}" must be a positive integer`);
        }
        o[key] = v;
        break;
      default:
        throw new VigilError('policy', 'usage', `unknown option "${key}"`);
    }
  }
  // One process's bytes live in one buffer: keep it to a sane size whatever the config says.
  o.maxBytesPerProcess = Math.min(o.maxBytesPerProcess, 1024 * MiB);
  if (o.noDefaultRules && o.rules.length === 0) {
    throw new VigilError('policy', 'usage', 'noDefaultRules is set but no "rules" files are given');
  }
  return o;
}

export const signaturePolicy = definePolicy<Kernel>({
  id: 'signature',
  title: 'Signatures (YARA) in process and module memory',
  description:
    'Scans the private memory of every user process (anonymous maps, heap, stack, writable and deleted ' +
    'file maps) and of kernel modules with YARA-X rules: the shipped rules/default.yar plus your own.',
  severity: 'high',
  requires: ['kernel'],
  defaultIntervalMs: 60_000,
  parseOptions: (raw) => ({ ...parseSignatureOptions(raw) }),
  poll(ctx: SweepContext<Kernel>) {
    const k = ctx.requireKernel();
    const opts = parseSignatureOptions(ctx.options);
    const rules = loadRules(opts);
    return signatureSweep(k, rules, opts, (kind, detail) => ctx.note(kind, detail), ctx.signal).findings;
  },
});
