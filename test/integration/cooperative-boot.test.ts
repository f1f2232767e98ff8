import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { maybeGunzip } from '../../src/machine/gzip.ts';
import { CooperativeThreads } from '../../src/machine/cooperative-threads.ts';
import { Vm } from '../../src/machine/vm.ts';

const images = new URL('../../public/images/', import.meta.url);
const image = async (name: string): Promise<Uint8Array> =>
  maybeGunzip(new Uint8Array(await readFile(new URL(name, images))));

describe('single-thread mode (pages without cross-origin isolation)', () => {
  it('boots SMP Linux with every vCPU time-sliced on one thread over an ordinary ArrayBuffer', async () => {
    const threads = new CooperativeThreads(false);
    const vm = Vm.create(
      {
        cpus: 2,
        memoryMiB: 64,
        kernel: await image('Image.gz'),
        kernelName: 'Image.gz',
        initrd: await image('initramfs.cpio.gz'),
        bootargs: 'console=ttyS0 earlycon=sbi',
      },
      threads,
    );
    expect(vm.board.block.buffer).toBeInstanceOf(ArrayBuffer);
    let output = '';
    vm.onOutput((bytes) => (output += new TextDecoder().decode(bytes)));
    vm.setInputPacing('line');
    vm.write(new TextEncoder().encode('echo cpus=$(nproc)\npoweroff\n'));
    vm.start();
    expect(threads.size).toBe(2);
    const event = await vm.whenPoweredOff();
    expect(event.kind).toBe('poweroff');
    expect(output).toContain('cpus=2');
    expect(threads.size).toBe(0);
  });
});
