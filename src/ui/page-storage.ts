/**
 * The page's disks: picks OPFS (a storage worker with sync access handles) or IndexedDB, opens each VM's own
 * disks (the hypervisor's `disks` hook), keeps VM configurations across reloads and asks for persistent
 * storage.
 *
 * A VM's storage is named by a storage id (a random UUID made when the VM is created, saved with its
 * configuration), not by the page's VM number, which every tab starts at 1. A tab holds a Web Lock per storage
 * id while the VM lives, so a reloaded second tab does not open the first tab's disks (IndexedDB has no file
 * locks of its own; OPFS would refuse the second writer).
 */
import type { TabvisorApi, VmDiskSet } from '../machine/hypervisor.ts';
import type { DiskStore } from '../storage/disk-store.ts';
import { OpfsDiskStore } from '../storage/opfs-block-backend.ts';
import { VmDisks, type RootImage } from '../storage/vm-disks.ts';
import { forgetVm, loadSavedVms, saveVm, type SavedVm } from '../storage/vm-registry.ts';
import {
  KeyValueChunkCache,
  openChunkedImage,
  type ChunkedImageStats,
  type HttpChunkedImage,
} from '../storage/chunked-image.ts';
import { IdbDiskStore, idbKeyValueStore, type KeyValueStore } from '../storage/idb-block-backend.ts';

/** The root image's entry in public/images/manifest.json. */
interface ManifestFile {
  readonly role: string;
  readonly path: string;
  readonly compression?: string | null;
  readonly index?: string;
  readonly indexSha256?: string;
  readonly uncompressedSize?: number;
  readonly uncompressedSha256?: string;
}

/** What `navigator.storage.persist()` answered ('unsupported' without the API). */
export type PersistState = 'granted' | 'denied' | 'unsupported';

/** How long a saved VM's lock is awaited: the page this one replaced (a reload) may still be letting go of it. */
const LOCK_WAIT_MS = 3000;

/**
 * Take the Web Lock `name`, waiting up to `waitMs` for another holder to let go; resolves the function that
 * releases it, or undefined when another tab keeps it.
 */
async function claim(name: string, waitMs = 0): Promise<(() => void) | undefined> {
  if (!navigator.locks) return () => {};
  return new Promise((resolve) => {
    const granted = (lock: Lock | null) => {
      if (!lock) {
        resolve(undefined);
        return undefined;
      }
      return new Promise<void>((release) => resolve(() => release()));
    };
    const request =
      waitMs > 0
        ? navigator.locks.request(name, { signal: AbortSignal.timeout(waitMs) }, granted)
        : navigator.locks.request(name, { ifAvailable: true }, granted);
    request.catch(() => resolve(undefined)); // timed out: another tab has the VM
  });
}

interface Owned {
  readonly storageId: string;
  readonly disks: VmDisks;
  readonly release: () => void;
  readonly createdAt: number;
  lastSaved: string;
}

/** The page's storage. Create it with {@link PageStorage.start}. */
export class PageStorage {
  /** Page VM id -> its storage. */
  private readonly owned = new Map<string, Owned>();
  private readonly problems = new Map<string, string>();
  private restorable: SavedVm[] = [];
  private restoring: { readonly saved: SavedVm; readonly release: () => void } | undefined;
  private root: Promise<RootImage | undefined> | undefined;
  private readonly listeners = new Set<() => void>();
  persist: PersistState = 'unsupported';
  /** `navigator.storage.estimate()` at start: bytes this site uses and may use (undefined without the API). */
  usage: { readonly usedBytes: number; readonly quotaBytes: number } | undefined;
  /** Saved VMs another tab of this site has open (not restored here). */
  elsewhere = 0;
  /** The root disks' base image, once a VM opened it. */
  private baseImage: HttpChunkedImage | undefined;

  private constructor(
    readonly store: DiskStore,
    private readonly imagesBase: URL,
  ) {}

  /** OPFS when a worker can create sync access handles, else IndexedDB; finds the saved VMs this tab may restore. */
  static async start(imagesBase: URL, kind: string | null): Promise<PageStorage> {
    const opfs = kind === 'indexeddb' ? undefined : await OpfsDiskStore.start();
    const storage = new PageStorage(opfs ?? new IdbDiskStore(), imagesBase);
    let saved: SavedVm[] = [];
    try {
      saved = await loadSavedVms();
    } catch {
      saved = [];
    }
    const claims = await Promise.all(saved.map((vm) => claim(`tabvisor-vm-${vm.storageId}`, LOCK_WAIT_MS)));
    saved.forEach((vm, i) => {
      const release = claims[i];
      if (!release) {
        storage.elsewhere++;
        return;
      }
      storage.restorable.push(vm);
      storage.releases.set(vm.storageId, release);
    });
    if (navigator.storage?.persist) {
      try {
        const granted = (await navigator.storage.persisted()) || (await navigator.storage.persist());
        storage.persist = granted ? 'granted' : 'denied';
      } catch {
        storage.persist = 'denied';
      }
    }
    try {
      const estimate = await navigator.storage?.estimate?.();
      if (estimate?.usage !== undefined && estimate.quota !== undefined) {
        storage.usage = { usedBytes: estimate.usage, quotaBytes: estimate.quota };
      }
    } catch {
      // no estimate: nothing to show
    }
    return storage;
  }

  private readonly releases = new Map<string, () => void>();

  /** The saved VMs this tab should recreate, oldest first. */
  get savedVms(): readonly SavedVm[] {
    return this.restorable;
  }

  /** Recreate saved VM `saved` with `create` (which calls the hypervisor's createVM, and so {@link hook}). */
  async restore<T>(saved: SavedVm, create: () => Promise<T>): Promise<T> {
    const release = this.releases.get(saved.storageId) ?? (() => {});
    this.restoring = { saved, release };
    try {
      return await create();
    } finally {
      this.restoring = undefined;
    }
  }

  /** What the root disks' base image fetched and found cached so far (undefined before a VM opened it). */
  baseImageStats(): Readonly<ChunkedImageStats> | undefined {
    return this.baseImage ? { ...this.baseImage.stats } : undefined;
  }

  /** VM `id`'s open disks (undefined when it has none). */
  disks(id: string): VmDisks | undefined {
    return this.owned.get(id)?.disks;
  }

  /** The last disk problem of VM `id`. */
  problem(id: string): string | undefined {
    return this.problems.get(id);
  }

  /** Be told when a disk problem appears. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The hypervisor's `disks` hook: the saved VM being restored, or a fresh root overlay under a new storage id. */
  readonly hook = async (vm: { readonly id: string; readonly name: string }): Promise<VmDiskSet> => {
    const restoring = this.restoring;
    this.restoring = undefined;
    let storageId: string;
    let release: () => void;
    if (restoring) {
      storageId = restoring.saved.storageId;
      release = restoring.release;
    } else {
      storageId = crypto.randomUUID();
      release = (await claim(`tabvisor-vm-${storageId}`)) ?? (() => {});
    }
    let disks: VmDisks;
    try {
      disks = await VmDisks.open(this.store, storageId, restoring?.saved.disks, await this.rootImage());
    } catch (error) {
      // A new VM that could not get its disks (a full quota) leaves nothing behind; a saved one keeps its own.
      if (!restoring) await this.store.deleteVm(storageId).catch(() => {});
      release();
      throw error;
    }
    this.owned.set(vm.id, {
      storageId,
      disks,
      release,
      createdAt: restoring?.saved.createdAt ?? Date.now(),
      lastSaved: '',
    });
    this.problems.delete(vm.id);
    return {
      get backends() {
        return disks.backends;
      },
      rootOnFirstDisk: disks.rootOnFirstDisk,
      onProblem: (message) => {
        this.problems.set(vm.id, message);
        for (const listener of this.listeners) listener();
      },
      close: async (erase) => {
        this.owned.delete(vm.id);
        try {
          await disks.close(erase);
          if (erase) await forgetVm(storageId);
        } finally {
          release();
        }
      },
    };
  };

  /** Save the configurations of `hv`'s VMs that changed (called on every hypervisor change). */
  save(hv: TabvisorApi): void {
    for (const vm of hv.vms) {
      const owned = this.owned.get(vm.id);
      if (!owned) continue;
      const entry: SavedVm = {
        storageId: owned.storageId,
        name: vm.name,
        cpus: vm.cpus,
        memoryMiB: vm.memoryMiB,
        disks: owned.disks.saved,
        running: vm.state === 'running' || vm.state === 'paused',
        createdAt: owned.createdAt,
        nics: vm.nics?.map((nic) => ({ ...nic })),
      };
      const text = JSON.stringify(entry);
      if (text === owned.lastSaved || vm.state === 'deleted') continue;
      owned.lastSaved = text;
      void saveVm(entry).catch(() => {});
    }
  }

  /**
   * The default root file system (public/images, role `rootfs`): one {@link HttpChunkedImage} per page, shared
   * by every VM's root overlay. Nothing of it is fetched here but its index; chunks come as guests read them and
   * are kept in IndexedDB (`tabvisor-base`), so a reload fetches none again.
   */
  private rootImage(): Promise<RootImage | undefined> {
    this.root ??= (async () => {
      const manifestUrl = new URL('manifest.json', this.imagesBase);
      const response = await fetch(manifestUrl);
      if (!response.ok) throw new Error(`${manifestUrl.href} answered ${response.status}`);
      const manifest = (await response.json()) as { files: ManifestFile[] };
      const file = manifest.files.find((f) => f.role === 'rootfs');
      if (!file) return undefined;
      if (file.compression !== 'gzip-chunks' || !file.index || !file.indexSha256) {
        throw new Error(
          `the root image ${file.path} is not packed for range requests (no chunk index in manifest.json); ` +
            'rebuild public/images with scripts/build-guest-image.sh',
        );
      }
      const image = await openChunkedImage({
        indexUrl: new URL(file.index, this.imagesBase).href,
        indexSha256: file.indexSha256,
        cache: (sha256) => KeyValueChunkCache.open(this.chunkStore(), sha256),
      });
      if (image.sizeBytes !== file.uncompressedSize || image.index.sha256 !== file.uncompressedSha256) {
        throw new Error(
          `the root image index ${file.index} describes another image than manifest.json; redeploy public/images`,
        );
      }
      this.baseImage = image;
      // What the last visit read comes into memory at once when the guest starts reading its root disk.
      image.warmAtFirstMiss();
      return { backend: image, id: image.index.sha256 };
    })().catch((error: unknown) => {
      this.root = undefined;
      throw error;
    });
    return this.root;
  }

  /** Where base image chunks are kept between page loads (IndexedDB, whichever store holds the disks). */
  private chunkStore(): KeyValueStore {
    return idbKeyValueStore('tabvisor-base', 'chunks');
  }
}
