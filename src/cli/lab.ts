// `vigil lab up|down|exec|status`: the reference guest every end-to-end test, benchmark and demo uses.
import type { Command } from 'commander';
import { VigilError } from '../util/errors.js';
import { sanitize } from '../util/sanitize.js';
import {
  DEFAULT_GUEST_NAME,
  ensureGuest,
  execInGuest,
  KERNEL_FLAVOURS,
  listGuests,
  stopGuest,
  type Accel,
  type GuestState,
  type KernelFlavour,
} from '../lab/index.js';
import { ATTACKS, attackImage, findAttack, runAttack } from '../lab/attacks.js';

const progress = (line: string) => process.stderr.write(`${line}\n`);

function describe(s: GuestState): string {
  return [
    `guest ${s.name}: QEMU pid ${s.pid}, ${s.memory} ${s.accel} cpu ${s.cpu}, kernel ${s.kernelRelease} (${s.paging}-level paging expected)`,
    `  memory file ${s.memoryFile}`,
    `  qmp         ${s.qmp}`,
    `  serial      ${s.serial}`,
    ...(s.qga ? [`  qga         ${s.qga}`] : []),
    `  gdb         127.0.0.1:${s.gdbPort}`,
  ].join('\n');
}

/** Guest output to a terminal: control characters escaped, line breaks and tabs kept. */
function displayOutput(text: string): string {
  return text
    .split('\n')
    .map((line) =>
      line
        .split('\t')
        .map((f) => sanitize(f, 1 << 20))
        .join('\t'),
    )
    .join('\n');
}

interface UpOptions {
  name: string;
  memory: string;
  accel: string;
  cpu: string;
  flavour: string;
  timeout?: string;
  json?: boolean;
  attacks?: boolean;
}

/** `vigil lab attack --list`: name, ATT&CK technique and description of each attack. */
function attackList(): string {
  const width = Math.max(...ATTACKS.map((a) => a.name.length + (a.args ? a.args.length + 1 : 0)));
  return ATTACKS.map((a) => {
    const head = a.args ? `${a.name} ${a.args}` : a.name;
    return `${head.padEnd(width)}  ${a.technique.padEnd(9)}  ${a.description}`;
  }).join('\n');
}

export function register(program: Command): void {
  const lab = program.command('lab').description('the reference guest: build, boot, run commands, stop');

  lab
    .command('up')
    .description('build (cached) and boot a lab guest; report it if already running')
    .option('--name <name>', 'guest name', DEFAULT_GUEST_NAME)
    .option('--memory <size>', 'guest RAM, e.g. 256M or 3G', '256M')
    .option('--accel <accel>', 'tcg or kvm', 'tcg')
    .option('--cpu <model>', 'QEMU CPU model (max,la57=off for 4-level paging)', 'max')
    .option('--flavour <flavour>', `kernel flavour: ${KERNEL_FLAVOURS.join(' or ')}`, 'amd64')
    .option('--timeout <seconds>', 'seconds to wait for the guest to become ready')
    .option('--json', 'print the guest state as JSON')
    .option('--attacks', 'include the attack suite (/attacks: vigil lab attack); builds it on first use')
    .action(async (o: UpOptions) => {
      if (o.accel !== 'tcg' && o.accel !== 'kvm') {
        throw new VigilError('cli', 'usage', `--accel must be tcg or kvm, not "${o.accel}"`);
      }
      const timeout = o.timeout === undefined ? undefined : Number(o.timeout);
      if (timeout !== undefined && !(timeout > 0)) {
        throw new VigilError('cli', 'usage', `--timeout must be a positive number of seconds`);
      }
      const image = o.attacks
        ? await attackImage({ flavour: o.flavour as KernelFlavour, progress })
        : undefined;
      const { state, reused: running } = await ensureGuest({
        ...image,
        name: o.name,
        memory: o.memory,
        accel: o.accel as Accel,
        cpu: o.cpu,
        flavour: o.flavour as KernelFlavour,
        readyTimeoutMs: timeout === undefined ? undefined : timeout * 1000,
        progress,
        onDifferent: 'keep',
      });
      if (running) progress(`guest ${o.name} is already running`);
      if (running && image && state.initrd !== image.initrd) {
        progress(`guest ${o.name} runs without this attack suite: "vigil lab down --name ${o.name}" first`);
      }
      if (o.json) process.stdout.write(JSON.stringify({ ...state, alreadyRunning: running }, null, 2) + '\n');
      else process.stdout.write(describe(state) + '\n');
    });

  lab
    .command('down')
    .description('stop a lab guest (by its QEMU pid) and remove its memory file and sockets')
    .option('--name <name>', 'guest name', DEFAULT_GUEST_NAME)
    .action(async (o: { name: string }) => {
      const was = await stopGuest(o.name);
      progress(was ? `guest ${o.name} stopped` : `guest ${o.name} was not running`);
    });

  lab
    .command('exec')
    .description('run a shell command on the guest console; exits with its status')
    .option('--name <name>', 'guest name', DEFAULT_GUEST_NAME)
    .option('--timeout <seconds>', 'seconds to wait for the command', '60')
    .argument('<command...>', 'the command (after --)')
    .action(async (words: string[], o: { name: string; timeout: string }) => {
      const timeoutMs = Number(o.timeout) * 1000;
      if (!(timeoutMs > 0)) throw new VigilError('cli', 'usage', '--timeout must be a positive number');
      const r = await execInGuest(o.name, words.join(' '), { timeoutMs });
      process.stdout.write(displayOutput(r.output));
      process.exitCode = r.exitCode;
    });

  lab
    .command('attack')
    .description('run an attack of the attack suite in a guest booted with --attacks; --list shows them')
    .option('--name <name>', 'guest name', DEFAULT_GUEST_NAME)
    .option('--list', 'list the attacks')
    .option('--json', 'print the result (or the list) as JSON')
    .option('--timeout <seconds>', 'seconds to wait for the attack', '90')
    .argument('[attack]', 'the attack to run')
    .argument('[args...]', "the attack's own arguments (see --list)")
    .action(
      async (
        attack: string | undefined,
        args: string[],
        o: { name: string; list?: boolean; json?: boolean; timeout: string },
      ) => {
        if (o.list || !attack) {
          if (!o.list) throw new VigilError('cli', 'usage', 'name an attack, or --list them');
          process.stdout.write((o.json ? JSON.stringify(ATTACKS, null, 2) : attackList()) + '\n');
          return;
        }
        const timeoutMs = Number(o.timeout) * 1000;
        if (!(timeoutMs > 0)) throw new VigilError('cli', 'usage', '--timeout must be a positive number');
        const spec = findAttack(attack);
        const r = await runAttack(o.name, attack, args, { timeoutMs });
        if (o.json) {
          process.stdout.write(
            JSON.stringify({ ...r, technique: spec.technique, expect: spec.expect }, null, 2) + '\n',
          );
        } else {
          const fields = Object.entries(r.fields).map(([k, v]) => `${k}=${v}`);
          process.stdout.write(`attack ${attack} (${spec.technique}) in ${o.name}: ${fields.join(' ')}\n`);
          process.stdout.write(`  expect: ${spec.expect}\n`);
        }
      },
    );

  lab
    .command('status')
    .description('list running lab guests')
    .option('--json', 'print JSON')
    .action((o: { json?: boolean }) => {
      const guests = listGuests();
      if (o.json) process.stdout.write(JSON.stringify(guests, null, 2) + '\n');
      else if (guests.length === 0) process.stdout.write('no lab guest is running\n');
      else process.stdout.write(guests.map(describe).join('\n') + '\n');
    });
}
