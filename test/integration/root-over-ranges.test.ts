import { readFileSync } from 'node:fs';
import { describe, expect, it, vi } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { Vm } from '../../src/machine/vm.ts';
import { openChunkedImage, type HttpChunkedImage } from '../../src/storage/chunked-image.ts';
import { IdbBlockBackend, MemoryKeyValueStore } from '../../src/storage/idb-block-backend.ts';
import { MemoryBlockBackend } from '../../src/storage/memory-block-backend.ts';
import { OverlayBlockBackend, overlaySizeFor } from '../../src/storage/overlay-block-backend.ts';
import { ask, defaultImage, watchConsole } from '../helpers/guest.ts';

const images = new URL('../../public/images/', import.meta.url);

/** The default root image as the page opens it: index checked against the manifest, chunks fetched by range. */
async function rangeRoot(ranges: string[]): Promise<HttpChunkedImage> {
  const manifest = JSON.parse(readFileSync(new URL('manifest.json', images), 'utf8')) as {
    files: { role: string; path: string; index?: string; indexSha256?: string }[];
  };
  const root = manifest.files.find((f) => f.role === 'rootfs')!;
  const data = new Uint8Array(readFileSync(new URL(root.path, images)));
  return openChunkedImage({
    indexUrl: new URL(root.index!, images).href,
    indexSha256: root.indexSha256!,
    fetch: async (url, init) => {
      if (!init.headers.Range) return new Response(readFileSync(new URL(url)));
      ranges.push(init.headers.Range);
      const [start, end] = /^bytes=(\d+)-(\d+)$/.exec(init.headers.Range)!.slice(1).map(Number);
      return new Response(data.slice(start, end + 1), { status: 206 });
    },
  });
}

describe('a guest on a copy-on-write root over the range-fetched base image', () => {
  it('boots from it fetching only data chunks; fstrim and blkdiscard make blocks read zero, not the base, and free stored blocks', async () => {
    const ranges: string[] = [];
    const base = await rangeRoot(ranges);
    // The root's overlay in IndexedDB's 64 KiB blocks (over a Map), whose discards free space.
    const rootKeys = new MemoryKeyValueStore();
    const rootStore = new IdbBlockBackend(rootKeys, 'root/', overlaySizeFor(base.sizeBytes));
    const root = await OverlayBlockBackend.open(base, rootStore, base.index.sha256);
    // A second disk: an overlay over a base full of 0xab, to see discarded blocks read zero instead.
    const patterned = new MemoryBlockBackend(new Uint8Array(1 << 20).fill(0xab), { readOnly: true });
    const dataStore = new MemoryBlockBackend(overlaySizeFor(patterned.sizeBytes), { async: true });
    const data = await OverlayBlockBackend.open(patterned, dataStore, 'patterned');
    const vm = Vm.create(
      {
        cpus: 1,
        memoryMiB: 64,
        kernel: await defaultImage('Image.gz'),
        kernelName: 'Image.gz',
        initrd: undefined,
        bootargs: 'console=ttyS0 earlycon=sbi root=/dev/vda rw',
        disks: [root, data],
      },
      nodeThreads,
    );
    const problems: string[] = [];
    vm.onDiskProblem = (message) => problems.push(message);
    const c = watchConsole(vm);
    vm.start();
    try {
      await c.waitFor(':/root# ', 90_000);
      const dataChunks = base.index.chunks.filter((chunk) => chunk !== null).length;
      expect(base.stats.fetchedChunks).toBeGreaterThan(0);
      expect(base.stats.fetchedChunks).toBeLessThanOrEqual(dataChunks);
      expect(ranges.length).toBe(base.stats.requests);

      // Writeback without any flush (Linux's periodic writeback never flushes, and ext2 metadata written by
      // `sync` may follow its flush): the overlay saves its maps on its own once the writes go idle, so an
      // overlay reopened from the store, what a reloaded page opens, has every change the guest made.
      const changed = root.changedBlocks();
      c.type(
        'echo 50 > /proc/sys/vm/dirty_expire_centisecs; echo 50 > /proc/sys/vm/dirty_writeback_centisecs; ' +
          'mkdir -p /var/tmp/unsynced && echo kept > /var/tmp/unsynced/file',
      );
      await c.waitFor(':/root# ');
      await vi.waitFor(() => expect(root.changedBlocks()).toBeGreaterThan(changed), { timeout: 30_000 });
      await vi.waitFor(() => expect(root.unsavedBlocks()).toBe(0), { timeout: 30_000 });
      const reopened = await OverlayBlockBackend.open(base, rootStore, base.index.sha256, {
        checkpointWhenIdle: false,
      });
      expect(reopened.changedBlocks()).toBe(root.changedBlocks());

      // The guest sees discard support and uses it.
      expect(await ask(c, 'GRAN', 'cat /sys/block/vda/queue/discard_granularity')).toBe('4096');
      c.type('dd if=/dev/urandom of=/root/junk bs=4096 count=64 2>/dev/null; sync; rm /root/junk; sync');
      await c.waitFor(':/root# ');
      const sums = 'find /bin /sbin /etc /usr -type f | sort | xargs md5sum | md5sum';
      const before = await ask(c, 'SUM', sums);
      const beforeTrim = root.changedBlocks();
      const storedBeforeTrim = rootKeys.map.size;
      expect(await ask(c, 'TRIM', 'fstrim -v / 2>&1')).toMatch(/\/: \d+ bytes trimmed/);
      expect(root.changedBlocks()).toBeGreaterThan(beforeTrim); // free blocks became zero blocks
      // The 256 KiB the removed file held are free now: the store blocks that held only them are deleted.
      expect(rootKeys.map.size).toBeLessThan(storedBeforeTrim);
      // Every file still reads the same from the disk (the page cache dropped): only free blocks were trimmed.
      expect(await ask(c, 'DROP', 'echo 3 > /proc/sys/vm/drop_caches && echo dropped')).toBe('dropped');
      expect(await ask(c, 'SUM', sums)).toBe(before);

      c.type('blkdiscard -o 8192 -l 16384 /dev/vdb && sync');
      await c.waitFor(':/root# ');
      const dump = await ask(c, 'HEX', 'hexdump -C /dev/vdb | head -n 6 | tr "\\n" " "');
      // $(...) folds hexdump's spacing: offset, bytes, '*' for repeated lines.
      expect(dump).toMatch(/^00000000 ab ab .* \* 00002000 00 00 00 .* \* 00006000 ab ab .* \* $/);
      const host = new Uint8Array(1 << 20);
      await data.read(0, host);
      expect(host.subarray(8192, 24576).every((b) => b === 0)).toBe(true);
      expect(host.subarray(0, 8192).every((b) => b === 0xab)).toBe(true);
      expect(host.subarray(24576).every((b) => b === 0xab)).toBe(true);

      c.type('sync; poweroff');
      expect((await vm.whenPoweredOff()).kind).toBe('poweroff');
    } finally {
      await vm.stop();
    }
    expect(problems).toEqual([]);
  }, 180_000);
});
