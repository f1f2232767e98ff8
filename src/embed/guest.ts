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

/**
 * Where a config's relative URLs resolve and which image it gets by default: the page's (its URL and the
 * library's `images/manifest.json`). A VM-host worker is given the page's (its own location is the worker's
 * script), so its snapshot keys and URLs are the page's.
 */
export interface GuestBase {
  readonly pageUrl: string;
  readonly defaultImage: string;
}

/** The page's {@link GuestBase} (on the page only). */
export function pageGuestBase(): GuestBase {
  return { pageUrl: location.href, defaultImage: defaultManifestUrl().href };
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
export function imageUrl(config: EmbedVmConfig, base: GuestBase = pageGuestBase()): URL {
  return new URL(config.image ? config.image : base.defaultImage, base.pageUrl);
}

/**
 * A config's guest, once per page: a manifest is fetched (it is small and names the command line and the
 * images' sha256), the kernel and initramfs only when {@link GuestSource.images} is called.
 */
function guestSource(config: EmbedVmConfig, base: GuestBase = pageGuestBase()): Promise<GuestSource> {
  const url = imageUrl(config, base);
  const initrd = config.initrd ? new URL(config.initrd, base.pageUrl) : undefined;
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
  base: GuestBase = pageGuestBase(),
): string {
  const nics = config.nics?.length ?? 0;
  return `tabvisor:snapshot:v2:${imageUrl(config, base).href}:${config.initrd ?? ''}:${cpus}:${memoryMiB}:${nics}:${bootargs}`;
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
 * here: the VM loads them only if it boots cold ({@link GuestBoot.images}). Runs on the page or, given the
 * page's `base`, in a VM-host worker.
 */
export async function resolveGuest(
  config: EmbedVmConfig,
  cpus: number,
  memoryMiB: number,
  base: GuestBase = pageGuestBase(),
): Promise<GuestBoot & { readonly snapshotSource: 'url' | 'idb' | 'none' }> {
  const mode = config.snapshot ?? 'auto';
  // The manifest and the snapshot load in parallel.
  const found: Promise<unknown> =
    mode === 'auto'
      ? get(snapshotKey(config, cpus, memoryMiB, config.bootargs ?? '', base)).catch(() => undefined)
      : mode === 'none'
        ? Promise.resolve(undefined)
        : fetchOk(new URL(mode, base.pageUrl), 'snapshot')
            .then((response) => response.blob())
            .catch(() => undefined);
  const [source, snapshot] = await Promise.all([guestSource(config, base), found]);
  const boot = { bootargs: config.bootargs ?? source.bootargs, images: source.images };
  if (mode === 'auto') {
    const file =
      isStoredSnapshot(snapshot) && snapshot.identity === source.identity ? storedFile(snapshot) : undefined;
    return file ? { ...boot, snapshot: file, snapshotSource: 'idb' } : { ...boot, snapshotSource: 'none' };
  }
  return snapshot instanceof Blob
    ? { ...boot, snapshot, snapshotSource: 'url' }
    : { ...boot, snapshotSource: 'none' };
}

/** A loader of `config`'s kernel and initramfs on the page (fetched once per page, whichever VM asks first). */
export function guestImages(config: EmbedVmConfig): () => Promise<BootImages> {
  return () => guestSource(config).then((source) => source.images());
}

/** Save a boot snapshot of `config`'s guest for configs in `auto` mode. */
export async function storeSnapshot(config: EmbedVmConfig, key: string, bytes: Uint8Array): Promise<void> {
  const { identity } = await guestSource(config);
  // A Blob takes bytes of an ordinary ArrayBuffer: copy them (the file is made once, when it is saved).
  const stored: StoredSnapshot = { identity, blob: new Blob([new Uint8Array(bytes)]) };
  await set(key, stored);
}
