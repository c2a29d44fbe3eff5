// What a process shows beyond its task_struct: the executable's path (mm->exe_file) and its command line
// and environment, read from its own user memory (mm->arg_start..arg_end, env_start..env_end) through its
// page tables (mm->pgd). User pages can be absent (never touched, swapped out): a read stops at the first
// one and the result is marked partial. Ranges come from the guest: they are checked and capped.
import { VigilError } from '../../../util/errors.js';
import { guestString } from '../../../util/sanitize.js';
import { resolveFilePath } from '../fs/path.js';
import { hex, tryReadAt, type TaskKernel, type TryReader } from './access.js';
import { taskLayout } from './layout.js';
import type { Task } from './task.js';

/** Bytes read at most from each of the argument and environment areas. */
export const MAX_USER_AREA = 64 * 1024;
/** Each argument or variable is cut here (display; the bytes read are capped above). */
const MAX_STRING = 4096;
/** User addresses end below 2^56 with 5-level paging (2^47 with 4-level). */
const USER_LIMIT = 1n << 56n;
const PAGE = 4096n;

export interface UserStrings {
  /** NUL-separated strings, sanitised. */
  strings: string[];
  /** False when a page was missing, the range was capped or malformed. */
  complete: boolean;
  note?: string;
}

export interface ProcessDetails {
  /** Path of mm->exe_file as /proc/PID/exe shows it; null for kernel threads or when unreadable. */
  exe: string | null;
  cmdline: UserStrings;
  environ?: UserStrings;
  notes: string[];
}

export interface DetailOptions {
  /** Read the environment too (default false: it can be large and is rarely needed). */
  environ?: boolean;
  /** Cap on each area, default MAX_USER_AREA. */
  maxBytes?: number;
}

const none = (note?: string): UserStrings => ({
  strings: [],
  complete: note === undefined,
  ...(note ? { note } : {}),
});

/** Executable, command line (and environment) of a task's process (its mm). */
export function readProcessDetails(k: TaskKernel, task: Task, opts: DetailOptions = {}): ProcessDetails {
  const notes: string[] = [];
  if (task.mm === null) {
    return { exe: null, cmdline: none(), ...(opts.environ ? { environ: none() } : {}), notes };
  }
  const M = taskLayout(k.types).mm;
  const mb = tryReadAt(k.space, task.mm, M.span);
  if (!mb) {
    const note = `mm ${hex(task.mm)} is not readable`;
    return {
      exe: null,
      cmdline: none(note),
      ...(opts.environ ? { environ: none(note) } : {}),
      notes: [note],
    };
  }
  const at = (off: number) => mb.readBigUInt64LE(off);

  let exe: string | null = null;
  const exeFile = M.exeFile === undefined ? 0n : at(M.exeFile);
  if (exeFile !== 0n) {
    try {
      const p = resolveFilePath(k, exeFile);
      exe = p.path;
      if (p.truncated) notes.push(`exe path walk stopped early (${p.truncated})`);
    } catch (e) {
      if (!(e instanceof VigilError)) throw e;
      notes.push(`exe: ${e.message}`);
    }
  }

  let space: TryReader | undefined;
  let spaceNote: string | undefined;
  try {
    space = k.userSpace(at(M.pgd));
  } catch (e) {
    if (!(e instanceof VigilError)) throw e;
    spaceNote = `user page tables: ${e.message}`;
  }
  const area = (start: bigint, end: bigint): UserStrings =>
    space ? readUserStrings(space, start, end, opts.maxBytes ?? MAX_USER_AREA) : none(spaceNote);
  const cmdline = area(at(M.argStart), at(M.argEnd));
  const out: ProcessDetails = { exe, cmdline, notes };
  if (opts.environ) out.environ = area(at(M.envStart), at(M.envEnd));
  return out;
}

/**
 * NUL-separated strings in [start, end) of a user address space, at most `max` bytes, page by page,
 * stopping at the first page that is not present.
 */
export function readUserStrings(
  space: TryReader,
  start: bigint,
  end: bigint,
  max = MAX_USER_AREA,
): UserStrings {
  if (start === 0n && end === 0n) return none();
  if (end < start || end > USER_LIMIT) {
    return none(`range ${hex(start)}..${hex(end)} is not a user range`);
  }
  let limit = end - start;
  let note: string | undefined;
  if (limit > BigInt(max)) {
    note = `${limit} bytes at ${hex(start)}: capped at ${max}`;
    limit = BigInt(max);
  }
  const parts: Buffer[] = [];
  let at = start;
  const stop = start + limit;
  while (at < stop) {
    const pageEnd = (at / PAGE + 1n) * PAGE;
    const n = Number((pageEnd < stop ? pageEnd : stop) - at);
    const chunk = space.tryRead(at, n);
    if (!chunk) {
      note ??= `page at ${hex(at - (at % PAGE))} is not present: ${at - start} of ${end - start} bytes read`;
      break;
    }
    parts.push(chunk);
    at += BigInt(n);
  }
  const bytes = Buffer.concat(parts);
  return { strings: splitNul(bytes), complete: note === undefined, ...(note ? { note } : {}) };
}

/** Split at NULs; a trailing NUL does not start another (empty) string, but empty arguments in between stay. */
function splitNul(b: Buffer): string[] {
  const out: string[] = [];
  let from = 0;
  while (from < b.length) {
    let nul = b.indexOf(0, from);
    if (nul < 0) nul = b.length;
    out.push(guestString(b.subarray(from, nul), MAX_STRING));
    from = nul + 1;
  }
  return out;
}
