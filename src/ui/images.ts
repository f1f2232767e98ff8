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

/**
 * Fetch the default guest described by `<base>/manifest.json` (public/images) and decompress its kernel and
 * initramfs. The errors say which file failed and how to fix it.
 */
export async function loadDefaultGuest(base: URL): Promise<GuestImages> {
  const manifestUrl = new URL('manifest.json', base);
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
  const initrdFile = file('initrd');
  const [kernelGz, initrdGz] = await Promise.all([
    fetchBytes(new URL(kernelFile.path, base), 'kernel'),
    initrdFile ? fetchBytes(new URL(initrdFile.path, base), 'initramfs') : Promise.resolve(undefined),
  ]);
  const [kernel, initrd] = await Promise.all([
    maybeGunzip(kernelGz),
    initrdGz ? maybeGunzip(initrdGz) : Promise.resolve(undefined),
  ]);
  return {
    kernel,
    kernelName: kernelFile.path,
    initrd,
    bootargs: manifest.bootargs,
    defaultMemoryMiB: manifest.memoryMiB?.default ?? 128,
  };
}
