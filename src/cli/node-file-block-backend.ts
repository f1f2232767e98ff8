import { open, type FileHandle } from 'node:fs/promises';
import type { BlockBackend } from '../devices/block-backend.ts';
import { BLOCK_SECTOR_SIZE, BlockIoError } from '../devices/block-backend.ts';
import { UserError } from '../common/errors.ts';

/** Operations a raw image file accepts at once: libuv's default thread pool has 4 threads; a few more queue. */
export const NODE_FILE_QUEUE_DEPTH = 8;

/** Options of {@link openNodeFileBlockBackend}. */
export interface NodeFileBlockBackendOptions {
  /** Open the image read-only (the guest sees a read-only disk). Default false. */
  readonly readOnly?: boolean;
}

/**
 * A raw disk image file on the host, through node:fs/promises: positional reads and writes on one FileHandle,
 * `datasync` for the guest's flush. Operations run concurrently and complete in any order. Close it with
 * {@link NodeFileBlockBackend.close} after the device has gone idle.
 */
export class NodeFileBlockBackend implements BlockBackend {
  readonly queueDepth = NODE_FILE_QUEUE_DEPTH;

  private constructor(
    private readonly handle: FileHandle,
    readonly path: string,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {}

  /** Open `path` as a disk. Throws a {@link UserError} naming the fix when the file cannot be used. */
  static async open(path: string, options: NodeFileBlockBackendOptions = {}): Promise<NodeFileBlockBackend> {
    const readOnly = options.readOnly ?? false;
    let handle: FileHandle;
    try {
      handle = await open(path, readOnly ? 'r' : 'r+');
    } catch (error) {
      throw openError(path, readOnly, error);
    }
    try {
      const stat = await handle.stat();
      if (!stat.isFile())
        throw new UserError(`disk image ${path} is not a regular file; give the path of a raw image`);
      const size = stat.size;
      if (size === 0 || size % BLOCK_SECTOR_SIZE !== 0) {
        throw new UserError(
          `disk image ${path} is ${size} bytes, not a positive multiple of ${BLOCK_SECTOR_SIZE}; ` +
            `pad it with: truncate -s %${BLOCK_SECTOR_SIZE} ${path}` +
            (size === 0 ? ` (an empty file: create one with truncate -s 64M ${path})` : ''),
        );
      }
      if (size > Number.MAX_SAFE_INTEGER) throw new UserError(`disk image ${path} is too large (over 8 PiB)`);
      return new NodeFileBlockBackend(handle, path, size, readOnly);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    let done = 0;
    while (done < dst.length) {
      const { bytesRead } = await this.io(() =>
        this.handle.read(dst, done, dst.length - done, offset + done),
      );
      if (bytesRead === 0)
        throw new BlockIoError(`${this.path}: unexpected end of file at byte ${offset + done}`);
      done += bytesRead;
    }
  }

  async write(offset: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) throw new BlockIoError(`${this.path} is open read-only`);
    let done = 0;
    while (done < src.length) {
      const { bytesWritten } = await this.io(() =>
        this.handle.write(src, done, src.length - done, offset + done),
      );
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.io(() => this.handle.datasync());
  }

  /** Close the file. Call only when the device is idle (`VirtioBlkHost.close()` resolved). */
  async close(): Promise<void> {
    await this.handle.close();
  }

  private async io<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw new BlockIoError(`${this.path}: ${(error as Error).message}`, { cause: error });
    }
  }
}

/** Open a raw disk image; see {@link NodeFileBlockBackend.open}. */
export function openNodeFileBlockBackend(
  path: string,
  options: NodeFileBlockBackendOptions = {},
): Promise<NodeFileBlockBackend> {
  return NodeFileBlockBackend.open(path, options);
}

/** Turn an open() failure into a message that says what to do. */
function openError(path: string, readOnly: boolean, error: unknown): Error {
  const code = (error as { code?: unknown }).code;
  switch (code) {
    case 'ENOENT':
      return new UserError(
        `disk image ${path} does not exist; check the path, or create one with truncate -s 64M ${path}`,
      );
    case 'EISDIR':
      return new UserError(`disk image ${path} is a directory; give the path of a raw image file`);
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new UserError(
        readOnly
          ? `cannot read disk image ${path}: permission denied; fix its permissions`
          : `cannot open disk image ${path} for writing (${code}); fix its permissions or attach it read-only`,
      );
    case 'EBUSY':
    case 'ETXTBSY':
    case 'EAGAIN':
    case 'EWOULDBLOCK':
      return new UserError(
        `disk image ${path} is locked by another program (${code}); stop the program using it or attach a copy`,
      );
    default:
      return error instanceof Error ? error : new Error(String(error));
  }
}
