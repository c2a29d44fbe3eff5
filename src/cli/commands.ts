// The list of commands. A new command is one module with a `register(program)` function, added here.
import type { Command } from 'commander';

export function registerCommands(_program: Command): void {}
