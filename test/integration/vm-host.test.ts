import { readFile } from 'node:fs/promises';
import { expose } from 'comlink';
import { describe, expect, it } from 'vitest';
import { maybeGunzip } from '../../src/machine/gzip.ts';
import { createVmHost, type PlannedVm, type VmHostApi, type VmHostEvent } from '../../src/embed/vm-host.ts';
import type { BootImages } from '../../src/machine/hypervisor.ts';
import { defaultBootargs } from '../helpers/guest.ts';

const images = new URL('../../public/images/', import.meta.url);
const image = async (name: string): Promise<Uint8Array> =>
  maybeGunzip(new Uint8Array(await readFile(new URL(name, images))));

/** Where the page is, as a plan says (nothing here fetches from it). */
const BASE = { pageUrl: 'http://docs.test/page', defaultImage: 'http://docs.test/images/manifest.json' };
/** A planned guest's images: the page serves them with `create`; the host never loads its own. */
const servedByThePage = (): Promise<BootImages> => Promise.reject(new Error('the page serves the images'));

/** The boot snapshot the first test takes, for the second. */
let bootSnapshot: Uint8Array | undefined;

/** A host whose output is collected, with a wait for text in it. */
function watchedHost(planned?: PlannedVm): {
  host: VmHostApi;
  until: (done: (text: string) => boolean) => Promise<void>;
  state: () => string | undefined;
  events: VmHostEvent[];
} {
  let text = '';
  let state: string | undefined;
  const events: VmHostEvent[] = [];
  const host = createVmHost((event) => {
    events.push(event);
    if (event.tabvisor === 'output') text += new TextDecoder().decode(event.bytes);
    if (event.tabvisor === 'status') state = event.state;
  }, planned);
  const until = async (done: (text: string) => boolean): Promise<void> => {
    const deadline = Date.now() + 60_000;
    while (!done(text)) {
      if (Date.now() > deadline) throw new Error(`timed out; output so far:\n${text.slice(-400)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  return { host, until, state: () => state, events };
}

/**
 * The page's side of the images: one port per VM, answering `() => images` as the embed's worker hypervisor
 * does, and how many times it was asked.
 */
async function imageServer(): Promise<{ serve: () => MessagePort; asked: () => number }> {
  const images: BootImages = {
    kernel: await image('Image.gz'),
    kernelName: 'Image.gz',
    initrd: await image('initramfs.cpio.gz'),
  };
  let asked = 0;
  const serve = (): MessagePort => {
    const channel = new MessageChannel();
    expose(() => {
      asked++;
      return images;
    }, channel.port1);
    return channel.port2;
  };
  return { serve, asked: () => asked };
}

describe('the single-worker VM host (in-process, as its worker runs it)', () => {
  it('boots SMP Linux on one thread, batches console output into few messages, passes the terminal size, and snapshots at the prompt', async () => {
    const events: VmHostEvent[] = [];
    let text = '';
    const bootargs = await defaultBootargs();
    const host = createVmHost(
      (event) => {
        events.push(event);
        if (event.tabvisor === 'output') text += new TextDecoder().decode(event.bytes);
      },
      {
        plan: { id: '7', config: { name: 'hosted', cpus: 2, memoryMiB: 64 }, base: BASE },
        guest: Promise.resolve({ bootargs, images: servedByThePage }),
      },
    );
    const images = {
      kernel: await image('Image.gz'),
      kernelName: 'Image.gz',
      initrd: await image('initramfs.cpio.gz'),
    };
    // The page's terminal size may arrive before the VM exists: it is kept for it.
    host.resize(101, 33);
    expect(await host.create({ images })).toEqual({
      name: 'hosted',
      cpus: 2,
      memoryMiB: 64,
    });
    // It was started (no start() call from the page).
    expect(events.filter((e) => e.tabvisor === 'status').at(-1)).toMatchObject({ state: 'running' });
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
    bootSnapshot = snapshot;
    await host.delete();
    expect(events.filter((e) => e.tabvisor === 'status').at(-1)).toMatchObject({ state: 'deleted' });
  });

  it('a host with a plan creates and starts its VM before the page asks; create brings the images and the size', async () => {
    const { serve, asked } = await imageServer();
    const bootargs = 'console=ttyS0 earlycon=sbi';
    // Restored from the snapshot it read itself: running, with its shell, before any call from the page.
    const restored = watchedHost({
      plan: { id: '3', config: { name: 'planned', cpus: 2, memoryMiB: 64 }, base: BASE },
      guest: Promise.resolve({ bootargs, images: servedByThePage, snapshot: bootSnapshot }),
    });
    await restored.until((text) => /# $/.test(text));
    expect(restored.state()).toBe('running');
    // ...and it told the page so, without being asked.
    expect(restored.events.filter((e) => e.tabvisor === 'created')).toEqual([
      { tabvisor: 'created', identity: { name: 'planned', cpus: 2, memoryMiB: 64 } },
    ]);
    expect(await restored.host.create({ images: serve() }, { cols: 90, rows: 30 })).toEqual({
      name: 'planned',
      cpus: 2,
      memoryMiB: 64,
    });
    restored.host.write(new TextEncoder().encode('echo size=$(stty size)-\n'));
    await restored.until((text) => text.includes('size=30 90-'));
    expect(asked()).toBe(0);
    // No snapshot: the cold boot waits for the images that come with create; `start: false` is kept.
    const cold = watchedHost({
      plan: { id: '4', config: { name: 'cold', cpus: 1, memoryMiB: 64, start: false }, base: BASE },
      guest: Promise.resolve({ bootargs, images: servedByThePage }),
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(cold.state()).toBeUndefined();
    await cold.host.create({ images: serve() });
    expect(asked()).toBe(1);
    expect(cold.state()).not.toBe('running');
    await cold.host.start();
    expect(cold.state()).toBe('running');
    await cold.until((text) => text.includes('Linux version') && /# $/.test(text));
    // A guest that could not be read fails the page's create with its reason, and leaves no VM.
    const failed = watchedHost({
      plan: { id: '5', config: { name: 'failed', cpus: 1, memoryMiB: 64 }, base: BASE },
      guest: Promise.reject(new Error('the image manifest at http://docs.test/m.json answered 404')),
    });
    await expect(failed.host.create({ images: serve() })).rejects.toThrow(/answered 404/);
    expect(failed.events).toContainEqual({
      tabvisor: 'failed',
      name: 'Error',
      message: 'the image manifest at http://docs.test/m.json answered 404',
    });
    expect(() => failed.host.start()).toThrow(/no VM yet/);
    expect(failed.state()).toBeUndefined();
    // A host whose worker's name carried no plan has nothing to create.
    await expect(watchedHost().host.create({ images: serve() })).rejects.toThrow(/no plan/);
    await Promise.all([restored.host.delete(), cold.host.delete(), failed.host.delete()]);
  });
});
