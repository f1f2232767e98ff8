import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { maybeGunzip } from '../../src/machine/gzip.ts';
import { decodeSnapshot, encodeSnapshot } from '../../src/machine/snapshot.ts';
import { Vm } from '../../src/machine/vm.ts';

const images = new URL('../../public/images/', import.meta.url);
const image = async (name: string): Promise<Uint8Array> =>
  maybeGunzip(new Uint8Array(await readFile(new URL(name, images))));

/** Collects a VM's console output and waits for text in it. */
function consoleOf(vm: Vm): { text: () => string; waitFor: (needle: string, ms?: number) => Promise<void> } {
  let text = '';
  vm.onOutput((bytes) => (text += new TextDecoder().decode(bytes)));
  return {
    text: () => text,
    waitFor: async (needle, ms = 60_000) => {
      const deadline = Date.now() + ms;
      while (!text.includes(needle)) {
        if (Date.now() > deadline) throw new Error(`no '${needle}' in:\n${text.slice(-1500)}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
  };
}

describe('snapshots', () => {
  it('a VM restored from a snapshot of a booted guest continues at its shell, on new vCPU threads', async () => {
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
    const original = consoleOf(vm);
    vm.start();
    await original.waitFor(':/root# ');
    vm.write(new TextEncoder().encode('export MARK=before-snapshot\n'));
    await original.waitFor('export MARK=before-snapshot\r\n');
    await original.waitFor(':/root# ');

    const bytes = encodeSnapshot(await vm.snapshot());
    // A booted 64 MiB guest packs to far less than its RAM: zero pages are not stored.
    expect(bytes.length).toBeLessThan(32 << 20);
    await vm.stop();

    const restored = Vm.fromSnapshot(decodeSnapshot(bytes), nodeThreads);
    const console = consoleOf(restored);
    restored.start();
    restored.write(new TextEncoder().encode('echo $MARK-$((6*7)) cpus=$(nproc)\n'));
    await console.waitFor('before-snapshot-42 cpus=2');
    restored.write(new TextEncoder().encode('poweroff\n'));
    const event = await restored.whenPoweredOff();
    expect(event.kind).toBe('poweroff');
  });

  it('a corrupt or truncated snapshot is refused with a clear message', () => {
    expect(() => decodeSnapshot(new Uint8Array(100))).toThrow(/not a usable tabvisor snapshot/);
    const bogus = new Uint8Array(64);
    bogus.set([0x54, 0x56, 0x53, 0x4e, 0x41, 0x50, 0x00, 0x01]);
    new DataView(bogus.buffer).setUint32(8, 1 << 30, true);
    expect(() => decodeSnapshot(bogus)).toThrow(/header length/);
  });
});
