// The list of commands. A new command is one module with a `register(program)` function, added here.
import type { Command } from 'commander';
import { register as registerWatch } from './commands/watch.js';
import { register as registerCheck } from './commands/check.js';
import { register as registerDemo } from './commands/demo.js';
import { register as registerInfo } from './commands/info.js';
import { register as registerMaps } from './commands/maps.js';
import { register as registerFiles } from './commands/files.js';
import { register as registerNetdev } from './commands/netdev.js';
import { register as registerSockets } from './commands/sockets.js';
import { register as registerLab } from './lab.js';
import { register as registerModules } from './commands/modules.js';
import { register as registerSyscalls } from './commands/syscalls.js';
import { register as registerKernel } from './commands/kernel.js';
import { register as registerPs } from './commands/ps.js';
import { register as registerPstree } from './commands/pstree.js';

export function registerCommands(program: Command): void {
  registerWatch(program);
  registerInfo(program);
  registerCheck(program);
  registerDemo(program);
  registerMaps(program);
  registerFiles(program);
  registerNetdev(program);
  registerSockets(program);
  registerLab(program);
  registerModules(program);
  registerSyscalls(program);
  registerKernel(program);
  registerPs(program);
  registerPstree(program);
}
