import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DefaultGuestLoader } from '../../../src/ui/images.ts';

const images = new URL('../../../public/images/', import.meta.url);
const base = new URL('http://app.test/images/');

/** Serve public/images at http://app.test/images/ and record each path asked for. */
function serve(fail: Set<string> = new Set()): string[] {
  const asked: string[] = [];
  vi.stubGlobal('fetch', async (input: URL | string) => {
    const name = String(input).slice(base.href.length);
    asked.push(name);
    if (fail.has(name)) {
      fail.delete(name);
      throw new TypeError('Failed to fetch');
    }
    return new Response(readFileSync(new URL(name, images)));
  });
  return asked;
}

afterEach(() => vi.unstubAllGlobals());

describe('DefaultGuestLoader: the page fetches each guest file once, the initramfs only when a VM needs it', () => {
  it('a VM that boots from its root disk gets the kernel without the initramfs being fetched', async () => {
    const asked = serve();
    const loader = new DefaultGuestLoader(base);
    const diskRoot = await loader.load({ initrd: false });
    expect(diskRoot.initrd).toBeUndefined();
    expect(diskRoot.kernel.length).toBeGreaterThan(1 << 20);
    expect(asked.sort()).toEqual(['Image.gz', 'manifest.json']);
    const initramfsRoot = await loader.load({ initrd: true });
    expect(initramfsRoot.kernel).toBe(diskRoot.kernel);
    expect(initramfsRoot.initrd?.length).toBeGreaterThan(1 << 20);
    expect(asked.sort()).toEqual(['Image.gz', 'initramfs.cpio.gz', 'manifest.json']);
  });

  it('a failed fetch is not remembered: the next load fetches that file again', async () => {
    const asked = serve(new Set(['Image.gz']));
    const loader = new DefaultGuestLoader(base);
    await expect(loader.load()).rejects.toThrow(/cannot fetch the kernel .*Failed to fetch/);
    const guest = await loader.load();
    expect(guest.initrd).toBeDefined();
    expect(asked.filter((name) => name === 'Image.gz')).toHaveLength(2);
    expect(asked.filter((name) => name === 'manifest.json')).toHaveLength(1);
  });
});
