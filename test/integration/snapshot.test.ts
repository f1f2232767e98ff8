import { describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { decodeSnapshot, encodeSnapshot } from '../../src/machine/snapshot.ts';
import { Vm } from '../../src/machine/vm.ts';
import { defaultSpec, watchConsole } from '../helpers/guest.ts';

describe('snapshots', () => {
  it('a VM restored from a snapshot of a booted guest continues at its shell, on new vCPU threads', async () => {
    const vm = Vm.create(await defaultSpec(2), nodeThreads);
    const original = watchConsole(vm);
    vm.start();
    await original.waitFor(':/root# ');
    original.type('export MARK=before-snapshot');
    await original.waitFor('export MARK=before-snapshot\r\n');
    await original.waitFor(':/root# ');

    const bytes = encodeSnapshot(await vm.snapshot());
    // A booted 64 MiB guest packs to far less than its RAM: zero pages are not stored.
    expect(bytes.length).toBeLessThan(32 << 20);
    await vm.stop();

    const restored = Vm.fromSnapshot(decodeSnapshot(bytes), nodeThreads);
    const console = watchConsole(restored);
    restored.start();
    console.type('echo $MARK-$((6*7)) cpus=$(nproc)');
    await console.waitFor('before-snapshot-42 cpus=2');
    console.type('poweroff');
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
