import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { parseLinuxImage } from '../../../src/machine/linux-image.ts';
import { openChunkedImage } from '../../../src/storage/chunked-image.ts';

const dir = new URL('../../../public/images/', import.meta.url);

interface ManifestFile {
  role: string;
  path: string;
  size: number;
  sha256: string;
  compression: 'gzip' | 'gzip-chunks' | null;
  /** gzip-chunks: the chunk index (scripts/pack-disk-image.sh) and its sha256. */
  index?: string;
  indexSha256?: string;
  uncompressedSize: number;
  uncompressedSha256: string;
}

const manifest = JSON.parse(readFileSync(new URL('manifest.json', dir), 'utf8')) as {
  format: number;
  bootargs: string;
  kernelVersion: string;
  busyboxVersion: string;
  memoryMiB: { minimum: number; default: number };
  kernelImage: { loadOffset: number; imageSize: number };
  files: ManifestFile[];
};

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

describe('public/images/manifest.json', () => {
  it('is format 1 with versions, bootargs and memory sizes', () => {
    expect(manifest.format).toBe(1);
    expect(manifest.kernelVersion).toMatch(/^6\.1\.\d+$/);
    expect(manifest.busyboxVersion).toBe('1.35.0');
    // The shell's console is the virtio console (hvc1: hvc0 is the SBI console); early messages use earlycon.
    expect(manifest.bootargs).toContain('console=hvc1');
    expect(manifest.bootargs).toContain('earlycon=sbi');
    expect(manifest.memoryMiB.minimum).toBeLessThanOrEqual(manifest.memoryMiB.default);
  });

  for (const file of manifest.files) {
    it(`${file.path}: size and sha256 match the file, compressed and uncompressed`, () => {
      const bytes = new Uint8Array(readFileSync(new URL(file.path, dir)));
      expect(bytes.length).toBe(file.size);
      expect(sha256(bytes)).toBe(file.sha256);
      // gzip-chunks is a gzip file of many members: gunzip gives the whole image too.
      const raw = file.compression === null ? bytes : new Uint8Array(gunzipSync(bytes));
      expect(raw.length).toBe(file.uncompressedSize);
      expect(sha256(raw)).toBe(file.uncompressedSha256);
    });
  }

  it('lists a kernel, an initrd and a root disk; the kernel header agrees with the manifest', () => {
    const roles = manifest.files.map((f) => f.role);
    expect(roles).toEqual(
      expect.arrayContaining(['kernel', 'initrd', 'rootfs', 'kernel-config', 'busybox-config']),
    );
    const kernel = manifest.files.find((f) => f.role === 'kernel')!;
    const image = new Uint8Array(gunzipSync(readFileSync(new URL(kernel.path, dir))));
    const header = parseLinuxImage(image, kernel.path);
    expect(header.imageSize).toBe(manifest.kernelImage.imageSize);
    expect(header.textOffset).toBe(manifest.kernelImage.loadOffset);
  });

  it('the root disk is packed for range requests: the index matches, and every chunk reads back through it', async () => {
    const root = manifest.files.find((f) => f.role === 'rootfs')!;
    expect(root.compression).toBe('gzip-chunks');
    const data = new Uint8Array(readFileSync(new URL(root.path, dir)));
    const requests: string[] = [];
    const image = await openChunkedImage({
      indexUrl: new URL(root.index!, dir).href,
      indexSha256: root.indexSha256!,
      fetch: async (url, init) => {
        if (url.endsWith('.json')) return new Response(readFileSync(new URL(url)));
        expect(url).toBe(new URL(root.path, dir).href);
        const [start, end] = /^bytes=(\d+)-(\d+)$/.exec(init.headers.Range)!.slice(1).map(Number);
        requests.push(init.headers.Range);
        return new Response(data.slice(start, end + 1), { status: 206 });
      },
    });
    expect(image.sizeBytes).toBe(root.uncompressedSize);
    expect(image.index.sha256).toBe(root.uncompressedSha256);
    expect(image.index.dataSha256).toBe(root.sha256);
    const raw = new Uint8Array(image.sizeBytes);
    await image.read(0, raw);
    expect(sha256(raw)).toBe(root.uncompressedSha256);
    // Only the chunks with data were fetched, in one request per run of adjacent members.
    expect(image.stats.fetchedChunks).toBe(image.index.chunks.filter((c) => c !== null).length);
    expect(requests.length).toBeLessThanOrEqual(image.stats.fetchedChunks);
  });

  it('keeps the default download (kernel + initramfs, compressed) under 4 MB', () => {
    const total = manifest.files
      .filter((f) => f.role === 'kernel' || f.role === 'initrd')
      .reduce((sum, f) => sum + f.size, 0);
    expect(total).toBeLessThan(4_000_000);
  });
});
