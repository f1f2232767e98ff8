import { maybeGunzip } from '../machine/gzip.ts';

/** The default guest as the page boots it. */
export interface GuestImages {
  readonly kernel: Uint8Array;
  readonly kernelName: string;
  readonly initrd: Uint8Array | undefined;
  readonly bootargs: string;
  /** Memory the image suggests, in MiB. */
  readonly defaultMemoryMiB: number;
}

interface Manifest {
  readonly bootargs: string;
  readonly memoryMiB?: { readonly default?: number };
  readonly files: readonly { readonly role: string; readonly path: string; readonly sha256?: string }[];
}

/** One file of a guest manifest. */
export interface GuestFile {
  readonly url: URL;
  readonly path: string;
  /** sha256 of the file as served (from the manifest), when it names one. */
  readonly sha256: string | undefined;
}

/** What a guest's `manifest.json` says, without any image fetched yet. */
export interface GuestManifest {
  readonly bootargs: string;
  readonly defaultMemoryMiB: number;
  readonly kernel: GuestFile;
  readonly initrd: GuestFile | undefined;
}

async function fetchBytes(url: URL, what: string): Promise<Uint8Array> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new Error(`cannot fetch the ${what} from ${url.href}: ${String(error)}; is the server running?`);
  }
  if (!response.ok) {
    throw new Error(
      `the ${what} at ${url.href} answered ${response.status} ${response.statusText}; ` +
        'serve public/images with the app (npm start, npm run preview)',
    );
  }
  return new Uint8Array(await response.arrayBuffer());
}

/** Fetch and check `<base>/manifest.json` (public/images): small, and enough to name the guest's files. */
export async function loadGuestManifest(base: URL): Promise<GuestManifest> {
  const manifestUrl = new URL('manifest.json', base);
  const manifestText = new TextDecoder().decode(await fetchBytes(manifestUrl, 'image manifest'));
  let manifest: Manifest;
  try {
    manifest = JSON.parse(manifestText) as Manifest;
  } catch {
    throw new Error(`${manifestUrl.href} is not JSON; rebuild it with scripts/build-guest-image.sh`);
  }
  const file = (role: string): GuestFile | undefined => {
    const entry = manifest.files.find((f) => f.role === role);
    return entry && { url: new URL(entry.path, base), path: entry.path, sha256: entry.sha256 };
  };
  const kernel = file('kernel');
  if (!kernel)
    throw new Error(`${manifestUrl.href} names no kernel; rebuild it with scripts/build-guest-image.sh`);
  return {
    bootargs: manifest.bootargs,
    defaultMemoryMiB: manifest.memoryMiB?.default ?? 128,
    kernel,
    initrd: file('initrd'),
  };
}

/** Fetch a manifest's kernel and initramfs and decompress them. The errors say which file failed and how to fix it. */
export async function loadGuestImages(manifest: GuestManifest): Promise<{
  readonly kernel: Uint8Array;
  readonly kernelName: string;
  readonly initrd: Uint8Array | undefined;
}> {
  const [kernelGz, initrdGz] = await Promise.all([
    fetchBytes(manifest.kernel.url, 'kernel'),
    manifest.initrd ? fetchBytes(manifest.initrd.url, 'initramfs') : Promise.resolve(undefined),
  ]);
  const [kernel, initrd] = await Promise.all([
    maybeGunzip(kernelGz),
    initrdGz ? maybeGunzip(initrdGz) : Promise.resolve(undefined),
  ]);
  return { kernel, kernelName: manifest.kernel.path, initrd };
}

/**
 * The default guest described by `<base>/manifest.json` (public/images), fetched for a page: the manifest and
 * kernel once, the initramfs only when a VM boots from it (a VM whose root is a disk never needs it), each
 * decompressed once and shared; the kernel and the initramfs download at the same time. A failed fetch is tried
 * again on the next call. The errors say which file failed and how to fix it.
 */
export class DefaultGuestLoader {
  private manifest: Promise<Manifest> | undefined;
  private kernel: Promise<Uint8Array> | undefined;
  private initrd: Promise<Uint8Array> | undefined;

  constructor(private readonly base: URL) {}

  /** The guest; with `initrd: false` its initramfs is not fetched (and is undefined in the result). */
  async load(needs: { readonly initrd: boolean } = { initrd: true }): Promise<GuestImages> {
    const manifest = await (this.manifest ??= this.retryable(
      this.fetchManifest(),
      () => (this.manifest = undefined),
    ));
    const manifestUrl = new URL('manifest.json', this.base);
    const file = (role: string) => manifest.files.find((f) => f.role === role);
    const kernelFile = file('kernel');
    if (!kernelFile)
      throw new Error(`${manifestUrl.href} names no kernel; rebuild it with scripts/build-guest-image.sh`);
    const initrdFile = needs.initrd ? file('initrd') : undefined;
    this.kernel ??= this.retryable(
      fetchBytes(new URL(kernelFile.path, this.base), 'kernel').then(maybeGunzip),
      () => (this.kernel = undefined),
    );
    if (initrdFile) {
      this.initrd ??= this.retryable(
        fetchBytes(new URL(initrdFile.path, this.base), 'initramfs').then(maybeGunzip),
        () => (this.initrd = undefined),
      );
    }
    const [kernel, initrd] = await Promise.all([this.kernel, initrdFile ? this.initrd : undefined]);
    return {
      kernel,
      kernelName: kernelFile.path,
      initrd,
      bootargs: manifest.bootargs,
      defaultMemoryMiB: manifest.memoryMiB?.default ?? 128,
    };
  }

  private async fetchManifest(): Promise<Manifest> {
    const manifestUrl = new URL('manifest.json', this.base);
    const manifestText = new TextDecoder().decode(await fetchBytes(manifestUrl, 'image manifest'));
    try {
      return JSON.parse(manifestText) as Manifest;
    } catch {
      throw new Error(`${manifestUrl.href} is not JSON; rebuild it with scripts/build-guest-image.sh`);
    }
  }

  /** `promise`, forgotten (by `forget`) when it fails, so the next call fetches again. */
  private retryable<T>(promise: Promise<T>, forget: () => void): Promise<T> {
    return promise.catch((error: unknown) => {
      forget();
      throw error;
    });
  }
}

/**
 * Fetch the default guest described by `<base>/manifest.json` (public/images) and decompress its kernel and
 * initramfs. The errors say which file failed and how to fix it.
 */
export function loadDefaultGuest(base: URL): Promise<GuestImages> {
  return new DefaultGuestLoader(base).load();
}
