import { get, set } from 'idb-keyval';
import type { BootImages, GuestBoot, VmConfig } from '../machine/hypervisor.ts';
import { maybeGunzip } from '../machine/gzip.ts';
import { loadGuestImages, loadGuestManifest } from '../ui/images.ts';
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
   * image, shape, NICs and command line, and saves one after the first cold boot reaches its shell; a URL starts
   * from a snapshot file shipped next to the image; `'none'` always boots cold.
   */
  readonly snapshot?: string;
}

/** The command line of a bare kernel URL (no manifest to name one). */
const BARE_KERNEL_BOOTARGS = 'console=ttyS0 earlycon=sbi';

/** A guest as the embed knows it before any image is fetched. */
interface GuestSource {
  /** The kernel command line: the manifest's, or {@link BARE_KERNEL_BOOTARGS}. */
  readonly bootargs: string;
  /**
   * What the images' bytes are: the manifest's sha256 of kernel and initramfs and its command line (a guest
   * booted with another one is another guest), or (a bare kernel) their URLs. A stored boot snapshot is used only
   * with the same identity, so an image updated in place is never resumed from a snapshot of its predecessor.
   */
  readonly identity: string;
  /** Fetch and unpack the kernel and initramfs: once per page, and only when a VM boots cold. */
  readonly images: () => Promise<BootImages>;
}

/**
 * A boot snapshot as stored in IndexedDB: the file as a Blob, so that reading the record is quick and the ~10 MB
 * of pages are read off the page's thread: by the VM's vCPU workers, each its share (parallel mode), or by the
 * VM's worker (single-worker mode). A Uint8Array record (the form older versions stored) would be deserialized
 * on the main thread, one VM after another (~45 ms each). Both forms are read.
 */
interface StoredSnapshot {
  readonly identity: string;
  readonly blob?: Blob;
  readonly bytes?: Uint8Array;
}

const sources = new Map<string, Promise<GuestSource>>();

async function fetchOk(url: URL, what: string): Promise<Response> {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(
      `the ${what} at ${url.href} answered ${response.status}; check the URL in the element's attributes`,
    );
  }
  return response;
}

async function fetchBytes(url: URL, what: string): Promise<Uint8Array> {
  return new Uint8Array(await (await fetchOk(url, what)).arrayBuffer());
}

/** `load`, run at most once at a time and remembered once it succeeded (a failure is tried again next call). */
function once<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () => {
    if (!loading) {
      const attempt = load();
      loading = attempt;
      attempt.catch(() => {
        if (loading === attempt) loading = undefined;
      });
    }
    return loading;
  };
}

async function loadKernel(kernelUrl: URL, initrdUrl: URL | undefined): Promise<BootImages> {
  const [kernel, initrd] = await Promise.all([
    fetchBytes(kernelUrl, 'kernel').then(maybeGunzip),
    initrdUrl ? fetchBytes(initrdUrl, 'initramfs').then(maybeGunzip) : Promise.resolve(undefined),
  ]);
  return { kernel, kernelName: kernelUrl.pathname.split('/').pop() ?? 'kernel', initrd };
}

/** The absolute URL of a config's image (the manifest or kernel), for caches and snapshot keys. */
export function imageUrl(config: EmbedVmConfig): URL {
  return config.image ? new URL(config.image, location.href) : defaultManifestUrl();
}

/**
 * A config's guest, once per page: a manifest is fetched (it is small and names the command line and the
 * images' sha256), the kernel and initramfs only when {@link GuestSource.images} is called.
 */
function guestSource(config: EmbedVmConfig): Promise<GuestSource> {
  const url = imageUrl(config);
  const initrd = config.initrd ? new URL(config.initrd, location.href) : undefined;
  const key = `${url.href} ${initrd?.href ?? ''}`;
  let source = sources.get(key);
  if (!source) {
    source = url.pathname.endsWith('.json')
      ? loadGuestManifest(new URL('./', url)).then((manifest) => ({
          bootargs: manifest.bootargs,
          identity: `sha256:${manifest.kernel.sha256 ?? manifest.kernel.url.href}:${manifest.initrd?.sha256 ?? manifest.initrd?.url.href ?? ''}:${manifest.bootargs}`,
          images: once(() => loadGuestImages(manifest)),
        }))
      : Promise.resolve({
          bootargs: BARE_KERNEL_BOOTARGS,
          identity: `url:${url.href}:${initrd?.href ?? ''}`,
          images: once(() => loadKernel(url, initrd)),
        });
    source.catch(() => sources.delete(key)); // try again next time
    sources.set(key, source);
  }
  return source;
}

/**
 * The IndexedDB key of a config's boot snapshot: the image URL, the shape, the number of NICs and the command
 * line (`config.bootargs`, empty for the image's default) must all match. (The image's bytes are checked
 * against the stored identity, see {@link GuestSource.identity}; NIC networks and VLANs need not match: a
 * restored guest takes its new card's MAC and asks for an address again, see Vm.fromSnapshot.)
 */
export function snapshotKey(
  config: EmbedVmConfig,
  cpus: number,
  memoryMiB: number,
  bootargs: string,
): string {
  const nics = config.nics?.length ?? 0;
  return `tabvisor:snapshot:v2:${imageUrl(config).href}:${config.initrd ?? ''}:${cpus}:${memoryMiB}:${nics}:${bootargs}`;
}

function isStoredSnapshot(value: unknown): value is StoredSnapshot {
  const stored = value as Partial<StoredSnapshot> | undefined;
  return (
    typeof stored?.identity === 'string' &&
    (stored.blob instanceof Blob || stored.bytes instanceof Uint8Array)
  );
}

/** A stored snapshot's file: its Blob (read by whoever restores it), or the bytes of an older record. */
function storedFile(stored: StoredSnapshot): Blob | Uint8Array | undefined {
  return stored.blob ?? stored.bytes;
}

/**
 * The guest plus, where one applies, the boot snapshot's file (a Blob, read by whoever restores it): fetched
 * from `config.snapshot` when it is a URL, or from IndexedDB in `auto` mode (only if it was taken of the same
 * images). A snapshot that cannot be fetched is left out (the VM boots cold). No kernel or initramfs is fetched
 * here: the VM loads them only if it boots cold ({@link GuestBoot.images}).
 */
export async function resolveGuest(
  config: EmbedVmConfig,
  cpus: number,
  memoryMiB: number,
): Promise<GuestBoot & { readonly snapshotSource: 'url' | 'idb' | 'none' }> {
  const mode = config.snapshot ?? 'auto';
  // The manifest and the snapshot load in parallel.
  const found: Promise<unknown> =
    mode === 'auto'
      ? get(snapshotKey(config, cpus, memoryMiB, config.bootargs ?? '')).catch(() => undefined)
      : mode === 'none'
        ? Promise.resolve(undefined)
        : fetchOk(new URL(mode, location.href), 'snapshot')
            .then((response) => response.blob())
            .catch(() => undefined);
  const [source, snapshot] = await Promise.all([guestSource(config), found]);
  const base = { bootargs: config.bootargs ?? source.bootargs, images: source.images };
  if (mode === 'auto') {
    const file =
      isStoredSnapshot(snapshot) && snapshot.identity === source.identity ? storedFile(snapshot) : undefined;
    return file ? { ...base, snapshot: file, snapshotSource: 'idb' } : { ...base, snapshotSource: 'none' };
  }
  return snapshot instanceof Blob
    ? { ...base, snapshot, snapshotSource: 'url' }
    : { ...base, snapshotSource: 'none' };
}

/** Save a boot snapshot of `config`'s guest for configs in `auto` mode. */
export async function storeSnapshot(config: EmbedVmConfig, key: string, bytes: Uint8Array): Promise<void> {
  const { identity } = await guestSource(config);
  // A Blob takes bytes of an ordinary ArrayBuffer: copy them (the file is made once, when it is saved).
  const stored: StoredSnapshot = { identity, blob: new Blob([new Uint8Array(bytes)]) };
  await set(key, stored);
}
