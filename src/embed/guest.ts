import { del, get, set } from 'idb-keyval';
import type { GuestBoot, VmConfig } from '../machine/hypervisor.ts';
import { maybeGunzip } from '../machine/gzip.ts';
import { loadDefaultGuest, type GuestImages } from '../ui/images.ts';
import { defaultManifestUrl } from './assets.ts';

/** What an embedded VM may add to {@link VmConfig}. */
export interface EmbedVmConfig extends VmConfig {
  /**
   * The guest: a `manifest.json` URL (as in public/images) or a kernel URL (Image or Image.gz); relative URLs
   * resolve against the page. Default: the image shipped with the library.
   */
  readonly image?: string;
  /** An initramfs URL, with a kernel URL in `image`. */
  readonly initrd?: string;
  /**
   * The boot snapshot: `'auto'` (default) starts from the snapshot this browser saved (IndexedDB) for the same
   * image, shape and command line, and saves one after the first cold boot reaches its shell; a URL starts from a
   * snapshot file shipped next to the image; `'none'` always boots cold.
   */
  readonly snapshot?: string;
}

const guests = new Map<string, Promise<GuestImages>>();

async function fetchBytes(url: URL, what: string): Promise<Uint8Array> {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(
      `the ${what} at ${url.href} answered ${response.status}; check the URL in the element's attributes`,
    );
  }
  return new Uint8Array(await response.arrayBuffer());
}

async function loadKernel(kernelUrl: URL, initrdUrl: URL | undefined): Promise<GuestImages> {
  const [kernel, initrd] = await Promise.all([
    fetchBytes(kernelUrl, 'kernel').then(maybeGunzip),
    initrdUrl ? fetchBytes(initrdUrl, 'initramfs').then(maybeGunzip) : Promise.resolve(undefined),
  ]);
  return {
    kernel,
    kernelName: kernelUrl.pathname.split('/').pop() ?? 'kernel',
    initrd,
    bootargs: 'console=ttyS0 earlycon=sbi',
    defaultMemoryMiB: 128,
  };
}

/** The absolute URL of a config's image (the manifest or kernel), for caches and snapshot keys. */
export function imageUrl(config: EmbedVmConfig): URL {
  return config.image ? new URL(config.image, location.href) : defaultManifestUrl();
}

/** Fetch and decompress a config's guest once per page (every VM with the same image shares it). */
export function loadGuest(config: EmbedVmConfig): Promise<GuestImages> {
  const url = imageUrl(config);
  const initrd = config.initrd ? new URL(config.initrd, location.href) : undefined;
  const key = `${url.href} ${initrd?.href ?? ''}`;
  let guest = guests.get(key);
  if (!guest) {
    guest = url.pathname.endsWith('.json') ? loadDefaultGuest(new URL('./', url)) : loadKernel(url, initrd);
    guest.catch(() => guests.delete(key)); // try again next time
    guests.set(key, guest);
  }
  return guest;
}

/**
 * The IndexedDB key of a config's boot snapshot: the image, the shape and the command line (`config.bootargs`,
 * empty for the image's default) must all match.
 */
export function snapshotKey(
  config: EmbedVmConfig,
  cpus: number,
  memoryMiB: number,
  bootargs: string,
): string {
  return `tabvisor:snapshot:v1:${imageUrl(config).href}:${config.initrd ?? ''}:${cpus}:${memoryMiB}:${bootargs}`;
}

/**
 * The guest plus, where one applies, the boot snapshot's bytes: fetched from `config.snapshot` when it is a URL,
 * or from IndexedDB in `auto` mode. A snapshot that cannot be fetched is left out (the VM boots cold).
 */
export async function resolveGuest(
  config: EmbedVmConfig,
  cpus: number,
  memoryMiB: number,
): Promise<GuestBoot & { readonly snapshotSource: 'url' | 'idb' | 'none' }> {
  const mode = config.snapshot ?? 'auto';
  // The snapshot and the images load in parallel (a cold-boot fallback needs the images anyway).
  const stored =
    mode === 'auto'
      ? get<Uint8Array>(snapshotKey(config, cpus, memoryMiB, config.bootargs ?? '')).catch(() => undefined)
      : mode === 'none'
        ? Promise.resolve(undefined)
        : fetchBytes(new URL(mode, location.href), 'snapshot').catch(() => undefined);
  const [guest, snapshot] = await Promise.all([loadGuest(config), stored]);
  const bootargs = config.bootargs ?? guest.bootargs;
  const base = { kernel: guest.kernel, kernelName: guest.kernelName, initrd: guest.initrd, bootargs };
  if (!(snapshot instanceof Uint8Array)) return { ...base, snapshotSource: 'none' };
  return { ...base, snapshot, snapshotSource: mode === 'auto' ? 'idb' : 'url' };
}

/** Save a boot snapshot for configs in `auto` mode. */
export async function storeSnapshot(key: string, bytes: Uint8Array): Promise<void> {
  await set(key, bytes);
}

/** Forget a stored boot snapshot (it was corrupt or did not fit). */
export async function forgetSnapshot(key: string): Promise<void> {
  await del(key);
}
