import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { maybeGunzip } from '../../src/machine/gzip.ts';
import { Vm } from '../../src/machine/vm.ts';

const images = new URL('../../public/images/', import.meta.url);
const image = async (name: string): Promise<Uint8Array> =>
  maybeGunzip(new Uint8Array(await readFile(new URL(name, images))));

/**
 * Runs alone (vitest.serial.config.ts, after the main suite), because it needs the host's cores to itself.
 * It measures host CPU time, not wall time against a limit: two busy guest processes on a 2-vCPU guest keep two
 * vCPU threads busy at once, so the process burns CPU time at about twice the wall-clock rate. On a 2-core host
 * a ratio well above 1 can only come from vCPUs executing in parallel.
 */
describe('real parallelism', () => {
  it('two CPU-bound guest processes on a 2-vCPU guest run on two host cores at once', async () => {
    const vm = Vm.create(
      {
        cpus: 2,
        memoryMiB: 64,
        kernel: await image('Image.gz'),
        kernelName: 'Image.gz',
        initrd: await image('initramfs.cpio.gz'),
        bootargs: 'console=ttyS0 earlycon=sbi',
      },
      nodeThreads,
    );
    let text = '';
    vm.onOutput((bytes) => (text += new TextDecoder().decode(bytes)));
    const waitFor = async (needle: string): Promise<void> => {
      const deadline = Date.now() + 60_000;
      while (!text.includes(needle)) {
        if (Date.now() > deadline) throw new Error(`no '${needle}' in:\n${text.slice(-1500)}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    vm.start();
    await waitFor(':/root# ');
    vm.write(
      new TextEncoder().encode('(while :; do :; done) & (while :; do :; done) & echo LOOPS-STARTED\n'),
    );
    await waitFor('LOOPS-STARTED\r\n');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const cpuBefore = process.cpuUsage();
    const wallBefore = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const cpu = process.cpuUsage(cpuBefore);
    const ratio = (cpu.user + cpu.system) / 1000 / (performance.now() - wallBefore);
    vm.write(new TextEncoder().encode('kill %1 %2; poweroff\n'));
    await vm.whenPoweredOff();
    expect(ratio).toBeGreaterThan(1.5);
  });
});
