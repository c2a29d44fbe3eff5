// One error type for all of vigil: where it happened (origin), what kind of failure (kind), and the cause.
// The CLI turns any VigilError into one line for a person; anything else is a bug and gets a stack trace
// only with VIGIL_DEBUG=1.

export type ErrorOrigin = 'vmm' | 'arch' | 'os' | 'policy' | 'monitor' | 'cli' | 'lab';
export type ErrorKind =
  | 'not-found'
  | 'unsupported'
  | 'malformed'
  | 'unmapped'
  | 'timeout'
  | 'protocol'
  | 'io'
  | 'denied'
  | 'bound'
  | 'usage'
  | 'state';

export class VigilError extends Error {
  readonly origin: ErrorOrigin;
  readonly kind: ErrorKind;

  constructor(origin: ErrorOrigin, kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VigilError';
    this.origin = origin;
    this.kind = kind;
  }

  /** One line for a person: "vigil: <origin> <kind>: message (cause)". */
  toLine(): string {
    const cause = this.cause instanceof Error ? `: ${this.cause.message}` : '';
    return `${this.origin} ${this.kind}: ${this.message}${cause}`;
  }
}

export const isVigilError = (e: unknown): e is VigilError => e instanceof VigilError;

/** Describe a Node system error (ENOENT, EACCES…) in a few words. */
export function describeSysError(e: unknown): string {
  if (e && typeof e === 'object' && 'code' in e) {
    const code = String((e as { code: unknown }).code);
    const words: Record<string, string> = {
      ENOENT: 'no such file',
      EACCES: 'permission denied',
      EPERM: 'operation not permitted',
      ECONNREFUSED: 'connection refused',
      ENOTSOCK: 'not a socket',
      EISDIR: 'is a directory',
      ESRCH: 'no such process',
    };
    return words[code] ?? code;
  }
  return e instanceof Error ? e.message : String(e);
}
