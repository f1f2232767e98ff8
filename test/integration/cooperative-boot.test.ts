import { describe, expect, it } from 'vitest';
import { CooperativeThreads } from '../../src/machine/cooperative-threads.ts';
import { Vm } from '../../src/machine/vm.ts';
import { defaultSpec, watchConsole } from '../helpers/guest.ts';

describe('single-thread mode (pages without cross-origin isolation)', () => {
  it('boots SMP Linux with every vCPU time-sliced on one thread over an ordinary ArrayBuffer', async () => {
    const threads = new CooperativeThreads(false);
    const vm = Vm.create(await defaultSpec(2), threads);
    expect(vm.board.block.buffer).toBeInstanceOf(ArrayBuffer);
    const console = watchConsole(vm);
    vm.setInputPacing('line');
    console.type('echo cpus=$(nproc)\npoweroff');
    vm.start();
    expect(threads.size).toBe(2);
    const event = await vm.whenPoweredOff();
    expect(event.kind).toBe('poweroff');
    expect(console.text()).toContain('cpus=2');
    expect(threads.size).toBe(0);
  });
});
