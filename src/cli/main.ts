// vigil's command line. Each command lives in its own module and registers itself here; every failure a
// person can cause (bad target, bad option) becomes one line on stderr and a non-zero exit.
import { Command, CommanderError } from 'commander';
import { isVigilError } from '../util/errors.js';
import { registerCommands } from './commands.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('vigil')
    .description('Agentless intrusion detection for QEMU/KVM Linux guests, by virtual machine introspection')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str) })
    .showHelpAfterError('(run vigil --help for usage)');
  registerCommands(program);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    return reportError(e);
  }
}

/** Turn any error into one line for a person; stack traces only with VIGIL_DEBUG=1. */
export function reportError(e: unknown): number {
  if (e instanceof CommanderError) {
    // Commander already printed its message (help, version or a usage error).
    return e.exitCode === 0 ? 0 : 2;
  }
  if (process.env.VIGIL_DEBUG) console.error(e);
  if (isVigilError(e)) {
    process.stderr.write(`vigil: ${e.toLine()}\n`);
  } else {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`vigil: internal error: ${msg.split('\n')[0]} (set VIGIL_DEBUG=1 for details)\n`);
  }
  return 2;
}
