// Small checks shared by vigil's JSON protocol clients (QMP, qemu-guest-agent): replies are checked for
// shape before use, and options for sense, with the same error kinds everywhere.
import { VigilError } from '../util/errors.js';

/** A JSON object (not null, not an array). */
export type Json = Record<string, unknown>;

export function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An option that must be a positive number (a timeout, a size). */
export function positive(n: number, name: string): number {
  if (!Number.isFinite(n) || n <= 0)
    throw new VigilError('vmm', 'usage', `${name} must be positive, got ${n}`);
  return n;
}
