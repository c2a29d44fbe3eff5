// Where the lab keeps things: built images under <cache>/lab/<kernel-release>/, running guests under
// <cache>/run/<name>/, the guest-side sources in the repository's lab/ folder.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VigilError } from '../util/errors.js';

/** The vigil cache root: $VIGIL_CACHE, else $XDG_CACHE_HOME/vigil, else ~/.cache/vigil. */
export function cacheRoot(): string {
  if (process.env.VIGIL_CACHE) return resolve(process.env.VIGIL_CACHE);
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg ? resolve(xdg) : join(homedir(), '.cache'), 'vigil');
}

export const imageDir = (release: string): string => join(cacheRoot(), 'lab', release);
export const runRoot = (): string => join(cacheRoot(), 'run');
export const guestDir = (name: string): string => join(runRoot(), checkGuestName(name));

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$/;

/** Guest names become file and socket names: keep them short and plain. */
export function checkGuestName(name: string): string {
  if (!NAME_RE.test(name)) {
    throw new VigilError(
      'lab',
      'usage',
      `bad guest name "${name}": use 1-48 letters, digits, '.', '_' or '-'`,
    );
  }
  return name;
}

/** The repository's lab/ folder (init script, guest scripts), found from this module's own location. */
export function labSourceDir(): string {
  if (process.env.VIGIL_LAB_DIR) return resolve(process.env.VIGIL_LAB_DIR);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'lab', 'init')) && existsSync(join(dir, 'package.json')))
      return join(dir, 'lab');
    dir = dirname(dir);
  }
  throw new VigilError(
    'lab',
    'not-found',
    'cannot find the lab/ folder of the vigil repository (set VIGIL_LAB_DIR)',
  );
}
