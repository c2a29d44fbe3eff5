// The one sanitiser for guest-derived strings. Every string that came out of guest memory passes through
// here before it reaches a terminal, a log line or HTML: the guest is hostile and may plant escape
// sequences (terminal injection), newlines (log forging) or bidi controls (visual spoofing).

const CONTROL = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Replace control characters with a visible \xNN escape and cap the length. */
export function sanitize(s: string, max = 4096): string {
  const clipped = s.length > max ? s.slice(0, max) + '…' : s;
  return clipped.replace(CONTROL, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * Decode guest bytes (up to the first NUL) as a sanitised string. Bytes are read as latin1 so that any
 * byte sequence maps to something and invalid UTF-8 cannot hide characters.
 */
export function guestString(buf: Buffer, max = 4096): string {
  const nul = buf.indexOf(0);
  const bytes = nul >= 0 ? buf.subarray(0, nul) : buf;
  return sanitize(bytes.toString('latin1'), max);
}

/** Escape for HTML after sanitising. */
export function htmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
