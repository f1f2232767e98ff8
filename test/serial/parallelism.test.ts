import { describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { Vm } from '../../src/machine/vm.ts';
import { defaultSpec, watchConsole } from '../helpers/guest.ts';

/**
 * Runs alone (vitest.serial.config.ts, after the main suite), because it needs the host's cores to itself.
 * It measures host CPU time, not wall time against a limit: two busy guest processes on a 2-vCPU guest keep two
 * vCPU threads busy at once, so the process burns CPU time at about twice the wall-clock rate. On a 2-core host
 * a ratio well above 1 can only come from vCPUs executing in parallel.
 */
describe('real parallelism', () => {
  it('two CPU-bound guest processes on a 2-vCPU guest run on two host cores at once', async () => {
    const vm = Vm.create(await defaultSpec(2), nodeThreads);
    const { waitFor, type } = watchConsole(vm);
    vm.start();
    await waitFor(':/root# ');
    type('(while :; do :; done) & (while :; do :; done) & echo LOOPS-STARTED');
    await waitFor('LOOPS-STARTED\r\n');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const cpuBefore = process.cpuUsage();
    const wallBefore = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const cpu = process.cpuUsage(cpuBefore);
    const ratio = (cpu.user + cpu.system) / 1000 / (performance.now() - wallBefore);
    type('kill %1 %2; poweroff');
    await vm.whenPoweredOff();
    expect(ratio).toBeGreaterThan(1.5);
  });
});
