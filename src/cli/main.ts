import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { UserError } from '../common/errors.ts';
import { runElf } from '../machine/run-elf.ts';
import { Vm, validateVmShape, type VmSpec } from '../machine/vm.ts';
import { NodeFileBlockBackend } from './node-file-block-backend.ts';
import { manifestFile, readImageFile, readManifest } from './images.ts';
import { attachConsole } from './console.ts';
import { nodeThreads } from './node-threads.ts';

const USAGE = `usage: tabvisor <command> [options]

commands:
  boot       boot a Linux guest with its console on this terminal
  run-elf    run bare-metal RV32 ELF programs (HTIF tohost) and report PASS/FAIL/TIMEOUT

Run 'tabvisor <command> --help' for a command's options.`;

const BOOT_USAGE = `usage: tabvisor boot [--kernel FILE] [--initrd FILE] [--disk FILE]... [--disk-ro FILE]... [--mem MiB] [--cpus N] [--append ARGS]

Boots the default image from public/images when no kernel is given. The console is this terminal:
on a TTY it runs in raw mode (Ctrl-A x quits); from a pipe, input is fed to the guest as it reads it.
Exits 0 when the guest powers off.

options:
  --kernel FILE   Linux Image for RV32 (gzip accepted)
  --initrd FILE   initramfs (gzip accepted)
  --disk FILE     raw disk image attached as virtio-blk, read-write (repeatable: /dev/vda, /dev/vdb, ...);
                  with the default image the guest then boots from the first disk (root=/dev/vda rw)
  --disk-ro FILE  the same, read-only
  --mem MiB       guest memory in MiB (default: the image's default, else 128)
  --cpus N        number of vCPUs, 1..8 (default 1)
  --append ARGS   kernel command line (default: the image's bootargs)
  -h, --help      show this help`;

const RUN_ELF_USAGE = `usage: tabvisor run-elf FILE... [--max-insns N]

Runs each bare-metal RV32 ELF from its entry in M-mode on the virt board, honouring the HTIF tohost/fromhost
convention. Prints one line per file: PASS <file>, FAIL <file> (code N) or TIMEOUT <file>.
Exits 0 only when every file passed.

options:
  --max-insns N   instruction limit per program (default 100000000)
  -h, --help      show this help`;

function parsePositiveInt(value: string | undefined, option: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new UserError(`${option} takes a whole number, not '${value}'`);
  return Number(value);
}

async function boot(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      kernel: { type: 'string' },
      initrd: { type: 'string' },
      disk: { type: 'string', multiple: true },
      'disk-ro': { type: 'string', multiple: true },
      mem: { type: 'string' },
      cpus: { type: 'string' },
      append: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(BOOT_USAGE + '\n');
    return 0;
  }
  const usingDefault = values.kernel === undefined;
  const manifest = usingDefault ? await readManifest() : undefined;
  const cpus = parsePositiveInt(values.cpus, '--cpus', 1);
  const memoryMiB = parsePositiveInt(values.mem, '--mem', manifest?.memoryMiB.default ?? 128);
  validateVmShape(cpus, memoryMiB);
  const diskPaths = [
    ...(values.disk ?? []).map((path) => ({ path, readOnly: false })),
    ...(values['disk-ro'] ?? []).map((path) => ({ path, readOnly: true })),
  ];
  const kernelPath = values.kernel ?? manifestFile(manifest!, 'kernel');
  if (kernelPath === undefined) throw new UserError('the image manifest names no kernel; pass --kernel');
  // The default image boots from its initramfs, or from the first disk (root=/dev/vda) when one is attached.
  const rootFromDisk = usingDefault && diskPaths.length > 0 && values.initrd === undefined;
  const initrdPath =
    values.initrd ?? (usingDefault && !rootFromDisk ? manifestFile(manifest!, 'initrd') : undefined);
  const kernel = await readImageFile(kernelPath, 'kernel');
  const initrd = initrdPath === undefined ? undefined : await readImageFile(initrdPath, 'initrd');
  const defaultArgs = manifest?.bootargs ?? 'console=ttyS0 earlycon=sbi';
  const bootargs = values.append ?? (rootFromDisk ? `${defaultArgs} root=/dev/vda rw` : defaultArgs);
  const disks: NodeFileBlockBackend[] = [];
  try {
    for (const disk of diskPaths)
      disks.push(await NodeFileBlockBackend.open(disk.path, { readOnly: disk.readOnly }));
    return await runVm({
      cpus,
      memoryMiB,
      kernel,
      kernelName: basename(kernelPath),
      initrd,
      bootargs,
      disks,
    });
  } finally {
    for (const disk of disks) await disk.close();
  }
}

/** Run a VM with this terminal as its console until it powers off; a guest reboot starts it afresh, as QEMU does. */
async function runVm(spec: VmSpec): Promise<number> {
  let carriedInput: Uint8Array = new Uint8Array(0);
  for (;;) {
    const vm = Vm.create(spec, nodeThreads);
    vm.onDiskProblem = (message) => process.stderr.write(`\r\ntabvisor: ${message}\r\n`);
    // A script from a pipe runs as if typed at the prompt: one line whenever the guest waits for input.
    if (!process.stdin.isTTY) vm.setInputPacing('line');
    vm.write(carriedInput);
    const console = attachConsole(vm, process.stdin, process.stdout);
    vm.start();
    const event = await Promise.race([vm.whenPoweredOff(), console.quit]);
    console.detach();
    await vm.stop();
    if (event === 'quit') {
      process.stderr.write('\r\ntabvisor: quit (Ctrl-A x)\r\n');
      return 0;
    }
    carriedInput = vm.takeUnreadInput();
    if (event.kind === 'reboot') continue;
    if (event.kind === 'failure') {
      process.stderr.write(`\ntabvisor: the VM failed: ${event.message}\n`);
      return 1;
    }
    return 0;
  }
}

async function runElfCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      'max-insns': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write(RUN_ELF_USAGE + '\n');
    return 0;
  }
  if (positionals.length === 0)
    throw new UserError('run-elf needs at least one ELF file; see tabvisor run-elf --help');
  const maxInsns = parsePositiveInt(values['max-insns'], '--max-insns', 100_000_000);
  let allPassed = true;
  for (const file of positionals) {
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(file));
    } catch {
      throw new UserError(`${file}: no such file; check the path`);
    }
    const result = await runElf(bytes, file, {
      maxInsns,
      onConsole: (byte) => process.stdout.write(Uint8Array.of(byte)),
    });
    if (result.kind === 'pass') process.stdout.write(`PASS ${file}\n`);
    else if (result.kind === 'fail') process.stdout.write(`FAIL ${file} (code ${result.code})\n`);
    else process.stdout.write(`TIMEOUT ${file}\n`);
    if (result.kind !== 'pass') allPassed = false;
  }
  return allPassed ? 0 : 1;
}

/** Run the CLI with `argv` (without node and script); resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'boot':
        return await boot(rest);
      case 'run-elf':
        return await runElfCommand(rest);
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(USAGE + '\n');
        return command === undefined ? 2 : 0;
      default:
        throw new UserError(`unknown command '${command}'; run tabvisor --help`);
    }
  } catch (error) {
    if (error instanceof UserError) {
      process.stderr.write(`tabvisor: ${error.message}\n`);
      return 2;
    }
    if (error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`tabvisor: ${error.message}; see tabvisor ${command} --help\n`);
      return 2;
    }
    throw error;
  }
}

const isEntry = process.argv[1] !== undefined && import.meta.url.endsWith(basename(process.argv[1]));
if (isEntry) {
  main(process.argv.slice(2)).then(
    (status) => process.exit(status),
    (error: unknown) => {
      process.stderr.write(
        `tabvisor: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exit(1);
    },
  );
}
