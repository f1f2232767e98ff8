import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { maybeGunzip } from '../../src/machine/gzip.ts';
import { createVmHost, type VmHostEvent } from '../../src/embed/vm-host.ts';
import { defaultBootargs } from '../helpers/guest.ts';

const images = new URL('../../public/images/', import.meta.url);
const image = async (name: string): Promise<Uint8Array> =>
  maybeGunzip(new Uint8Array(await readFile(new URL(name, images))));

describe('the single-worker VM host (in-process, as its worker runs it)', () => {
  it('boots SMP Linux on one thread, batches console output into few messages, passes the terminal size, and snapshots at the prompt', async () => {
    const events: VmHostEvent[] = [];
    let text = '';
    const host = createVmHost((event) => {
      events.push(event);
      if (event.tabvisor === 'output') text += new TextDecoder().decode(event.bytes);
    });
    const guest = {
      kernel: await image('Image.gz'),
      kernelName: 'Image.gz',
      initrd: await image('initramfs.cpio.gz'),
      bootargs: await defaultBootargs(),
    };
    // The page's terminal size may arrive before the VM exists: it is kept for it.
    host.resize(101, 33);
    expect(await host.create('7', { name: 'hosted', cpus: 2, memoryMiB: 64 }, guest)).toEqual({
      name: 'hosted',
      cpus: 2,
      memoryMiB: 64,
    });
    await host.start();
    const until = async (done: () => boolean): Promise<void> => {
      const deadline = Date.now() + 60_000;
      while (!done()) {
        if (Date.now() > deadline) throw new Error(`timed out; output so far:\n${text.slice(-400)}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    await until(() => /# $/.test(text));
    host.write(new TextEncoder().encode('echo cpus=$(nproc) size=$(stty size)-\n'));
    await until(() => text.includes('cpus=2 size=33 101-'));
    host.resize(77, 21);
    host.write(new TextEncoder().encode('echo now=$(stty size)-\n'));
    await until(() => text.includes('now=21 77-'));
    const outputs = events.filter((e) => e.tabvisor === 'output');
    const bytes = outputs.reduce((n, e) => n + (e.tabvisor === 'output' ? e.bytes.length : 0), 0);
    // Boot prints kilobytes; batching sends them in far fewer messages than bytes (or UART drains).
    expect(bytes).toBeGreaterThan(2000);
    expect(outputs.length).toBeLessThan(bytes / 20);
    const status = events.filter((e) => e.tabvisor === 'status').at(-1);
    expect(status).toMatchObject({ state: 'running', stats: { id: '7', cpus: 2 } });
    const snapshot = await host.snapshot();
    expect(snapshot.length).toBeGreaterThan(1 << 20);
    await host.delete();
    expect(events.filter((e) => e.tabvisor === 'status').at(-1)).toMatchObject({ state: 'deleted' });
  });
});
