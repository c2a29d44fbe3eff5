// The list of commands. A new command is one module with a `register(program)` function, added here.
import type { Command } from 'commander';
import { register as registerInfo } from './commands/info.js';
import { register as registerLab } from './lab.js';

export function registerCommands(program: Command): void {
  registerInfo(program);
  registerLab(program);
}
