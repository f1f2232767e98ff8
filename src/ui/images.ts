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
  readonly files: readonly { readonly role: string; readonly path: string }[];
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

/** The manifest and the kernel: what every VM of the page needs. */
interface KernelPart {
  readonly manifest: Manifest;
  readonly kernel: Uint8Array;
  readonly kernelName: string;
  readonly initrdPath: string | undefined;
}

/**
 * The default guest described by `<base>/manifest.json` (public/images), fetched for a page: the manifest and
 * kernel once, the initramfs only when a VM boots from it (a VM whose root is a disk never needs it), each
 * decompressed once and shared. A failed fetch is tried again on the next call. The errors say which file
 * failed and how to fix it.
 */
export class DefaultGuestLoader {
  private kernelPart: Promise<KernelPart> | undefined;
  private initrd: Promise<Uint8Array | undefined> | undefined;

  constructor(private readonly base: URL) {}

  /** The guest; with `initrd: false` its initramfs is not fetched (and is undefined in the result). */
  async load(needs: { readonly initrd: boolean } = { initrd: true }): Promise<GuestImages> {
    this.kernelPart ??= this.fetchKernelPart().catch((error: unknown) => {
      this.kernelPart = undefined;
      throw error;
    });
    const part = await this.kernelPart;
    let initrd: Uint8Array | undefined;
    if (needs.initrd && part.initrdPath !== undefined) {
      const path = part.initrdPath;
      this.initrd ??= fetchBytes(new URL(path, this.base), 'initramfs')
        .then(maybeGunzip)
        .catch((error: unknown) => {
          this.initrd = undefined;
          throw error;
        });
      initrd = await this.initrd;
    }
    return {
      kernel: part.kernel,
      kernelName: part.kernelName,
      initrd,
      bootargs: part.manifest.bootargs,
      defaultMemoryMiB: part.manifest.memoryMiB?.default ?? 128,
    };
  }

  private async fetchKernelPart(): Promise<KernelPart> {
    const manifestUrl = new URL('manifest.json', this.base);
    const manifestText = new TextDecoder().decode(await fetchBytes(manifestUrl, 'image manifest'));
    let manifest: Manifest;
    try {
      manifest = JSON.parse(manifestText) as Manifest;
    } catch {
      throw new Error(`${manifestUrl.href} is not JSON; rebuild it with scripts/build-guest-image.sh`);
    }
    const file = (role: string) => manifest.files.find((f) => f.role === role);
    const kernelFile = file('kernel');
    if (!kernelFile)
      throw new Error(`${manifestUrl.href} names no kernel; rebuild it with scripts/build-guest-image.sh`);
    const kernel = await maybeGunzip(await fetchBytes(new URL(kernelFile.path, this.base), 'kernel'));
    return { manifest, kernel, kernelName: kernelFile.path, initrdPath: file('initrd')?.path };
  }
}

/**
 * Fetch the default guest described by `<base>/manifest.json` (public/images) and decompress its kernel and
 * initramfs. The errors say which file failed and how to fix it.
 */
export function loadDefaultGuest(base: URL): Promise<GuestImages> {
  return new DefaultGuestLoader(base).load();
}
