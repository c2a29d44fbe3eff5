// System call names by number, and whether an address is a system call function's entry point: how an
// alert names a sys_call_table entry, and where every entry must point.
import type { KernelAccess } from '../modules/access.js';
import type { ImageRange } from './image.js';
import { MAX_SYSCALLS } from './syscalls.js';

const syscallNameCache = new WeakMap<object, Map<number, string>>();

/** x86-64 system call names by number, from the kernel's syscalls_metadata (CONFIG_FTRACE_SYSCALLS). */
export function syscallNames(k: KernelAccess, count: number): Map<number, string> {
  const hit = syscallNameCache.get(k);
  if (hit) return hit;
  const out = new Map<number, string>();
  syscallNameCache.set(k, out);
  const sym = k.symbols.address('syscalls_metadata');
  const arr = sym !== undefined ? k.readPointer(sym) : undefined;
  if (!arr || k.types.find('syscall_metadata') === undefined) return out;
  const n = Math.min(count, MAX_SYSCALLS);
  const ptrs = k.space.tryRead(arr, n * 8);
  if (!ptrs) return out;
  const nameOff = BigInt(k.types.offsetof('syscall_metadata', 'name'));
  for (let nr = 0; nr < n; nr++) {
    const meta = ptrs.readBigUInt64LE(nr * 8);
    if (meta === 0n) continue;
    const namePtr = k.readPointer(meta + nameOff);
    const raw = namePtr ? k.space.tryRead(namePtr, 64) : undefined;
    if (!raw) continue;
    const name = raw.toString('latin1', 0, Math.max(0, raw.indexOf(0)));
    if (/^sys_[a-z0-9_]{1,48}$/.test(name)) out.set(nr, name.slice(4));
  }
  return out;
}

/** Names a syscall table entry may carry: the arch wrappers, __do_sys_ (zero-argument calls), ni_syscall. */
const SYSCALL_FN_RE =
  /^(__x64_sys_|__ia32_sys_|__x32_compat_sys_|__ia32_compat_sys_|__x64_compat_sys_|__do_sys_|__se_sys_)\w+$|^(__x64_)?sys_ni_syscall$/;

/** True when `va` is the entry point of a system call function in kernel text. */
export function isSyscallFunction(k: KernelAccess, va: bigint, text: ImageRange): boolean {
  if (va < text.start || va >= text.end) return false;
  let n = 0;
  for (const s of k.symbols.range(va, va + 1n)) {
    if (SYSCALL_FN_RE.test(s.name)) return true;
    if (++n > 64) break;
  }
  return false;
}
