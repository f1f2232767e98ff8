/**
 * The disks of one VM, scoped by its id: everything is opened through a {@link DiskStore} by (vmId, index), so
 * a VM's backends are only ever its own disks. Disk 0 is the copy-on-write root (the default root image under
 * the VM's own overlay); disks 1-7 are raw images the user attached.
 */
import type { BlockBackend } from '../devices/block-backend.ts';
import type { DiskStore, StoredDisk } from './disk-store.ts';
import { OverlayBlockBackend, overlaySizeFor } from './overlay-block-backend.ts';
import { MAX_DISKS_PER_VM, checkDiskName } from './storage-protocol.ts';

/** A disk as a VM's saved configuration lists it. */
export interface SavedDisk {
  /** Storage index: 0 is the root overlay, 1-7 attached images. */
  readonly index: number;
  readonly kind: 'root-overlay' | 'raw';
  /** Shown in the UI: `root` or the imported file's name. */
  readonly label: string;
  readonly sizeBytes: number;
}

/**
 * The read-only base of every VM's root disk: the default image's ext2 file system (in the page an
 * `HttpChunkedImage` shared by every VM, fetched in ranges as guests read it).
 */
export interface RootImage {
  readonly backend: BlockBackend;
  /** Identifies the contents (the manifest's sha256 of the uncompressed image). */
  readonly id: string;
}

/** Largest image {@link VmDisks.attachImage} takes (kept in memory while copied). */
export const MAX_IMPORT_BYTES = 2 ** 31;
/** Bytes copied per request when importing or exporting. */
const COPY_CHUNK = 1 << 20;

interface OpenDisk {
  readonly saved: SavedDisk;
  readonly stored: StoredDisk;
  readonly backend: BlockBackend;
}

/** One VM's open disks. */
export class VmDisks {
  private readonly open: OpenDisk[] = [];
  private closed = false;

  private constructor(
    private readonly store: DiskStore,
    readonly vmId: string,
  ) {
    checkDiskName(vmId, 0);
  }

  /**
   * Open VM `vmId`'s disks as `saved` lists them; with no list, a fresh VM: a root overlay over `root` (when
   * given). Closes whatever it opened when one fails.
   */
  static async open(
    store: DiskStore,
    vmId: string,
    saved: readonly SavedDisk[] | undefined,
    root: RootImage | undefined,
  ): Promise<VmDisks> {
    const disks = new VmDisks(store, vmId);
    const plan =
      saved ??
      (root
        ? [
            {
              index: 0,
              kind: 'root-overlay',
              label: 'root',
              sizeBytes: root.backend.sizeBytes,
            } satisfies SavedDisk,
          ]
        : []);
    try {
      for (const disk of plan) {
        if (disk.kind === 'root-overlay') {
          if (!root) continue; // no base image on this page: boot without the root disk
          const base = root.backend;
          const stored = await store.openDisk(vmId, disk.index, overlaySizeFor(base.sizeBytes));
          const backend = await OverlayBlockBackend.open(base, stored, root.id);
          disks.open.push({ saved: disk, stored, backend });
        } else {
          const stored = await store.openDisk(vmId, disk.index, disk.sizeBytes);
          disks.open.push({ saved: disk, stored, backend: stored });
        }
      }
    } catch (error) {
      await disks.close(false).catch(() => {});
      throw error;
    }
    return disks;
  }

  /** The backends in board order (/dev/vda, /dev/vdb, ...). */
  get backends(): readonly BlockBackend[] {
    return this.open.map((disk) => disk.backend);
  }

  /** True when the first disk is the root file system (boot with root=/dev/vda, no initramfs). */
  get rootOnFirstDisk(): boolean {
    return this.open[0]?.saved.kind === 'root-overlay';
  }

  /** The disks as the VM's saved configuration lists them. */
  get saved(): readonly SavedDisk[] {
    return this.open.map((disk) => disk.saved);
  }

  /** Where the disks live ('opfs' or 'indexeddb'). */
  get storeKind(): string {
    return this.store.kind;
  }

  /** Return the root disk to the base image (only while the VM is not running). */
  async resetRoot(): Promise<void> {
    const root = this.open.find((disk) => disk.saved.kind === 'root-overlay');
    if (root) await (root.backend as OverlayBlockBackend).reset();
  }

  /** Copy a raw image into a new disk of this VM (attached at the next boot). Returns its entry. */
  async attachImage(image: Blob, label: string): Promise<SavedDisk> {
    const used = new Set(this.open.map((disk) => disk.saved.index));
    let index = 1;
    while (used.has(index)) index++;
    if (index >= MAX_DISKS_PER_VM)
      throw new RangeError(`a VM has at most ${MAX_DISKS_PER_VM - 1} attached images`);
    if (image.size === 0 || image.size > MAX_IMPORT_BYTES) {
      throw new RangeError(`an image is 1 byte to ${MAX_IMPORT_BYTES} bytes, not ${image.size}`);
    }
    const sizeBytes = Math.ceil(image.size / 512) * 512; // a disk is whole sectors; the tail reads as zeroes
    const stored = await this.store.openDisk(this.vmId, index, sizeBytes);
    try {
      for (let at = 0; at < image.size; at += COPY_CHUNK) {
        const chunk = new Uint8Array(
          await image.slice(at, Math.min(image.size, at + COPY_CHUNK)).arrayBuffer(),
        );
        const padded = new Uint8Array(Math.ceil(chunk.length / 512) * 512);
        padded.set(chunk);
        await stored.write(at, padded);
      }
      await stored.flush();
    } catch (error) {
      await stored.close().catch(() => {});
      throw error;
    }
    const saved: SavedDisk = { index, kind: 'raw', label, sizeBytes };
    this.open.push({ saved, stored, backend: stored });
    return saved;
  }

  /** Disk `position` (board order) as a raw image: the guest's view, the root with its changes applied. */
  async exportDisk(position: number): Promise<Blob> {
    const disk = this.open[position];
    if (!disk) throw new RangeError(`no disk ${position}`);
    const parts: BlobPart[] = [];
    for (let at = 0; at < disk.backend.sizeBytes; at += COPY_CHUNK) {
      const chunk = new Uint8Array(Math.min(COPY_CHUNK, disk.backend.sizeBytes - at));
      await disk.backend.read(at, chunk);
      parts.push(chunk);
    }
    return new Blob(parts, { type: 'application/octet-stream' });
  }

  /** Flush and close every disk; with `erase`, then delete the VM's storage. */
  async close(erase: boolean): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const disk of this.open) {
        try {
          await disk.backend.flush();
        } finally {
          await disk.stored.close();
        }
      }
    }
    if (erase) await this.store.deleteVm(this.vmId);
  }
}
