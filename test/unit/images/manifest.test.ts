import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { parseLinuxImage } from '../../../src/machine/linux-image.ts';

const dir = new URL('../../../public/images/', import.meta.url);

interface ManifestFile {
  role: string;
  path: string;
  size: number;
  sha256: string;
  compression: 'gzip' | null;
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
      const raw = file.compression === 'gzip' ? new Uint8Array(gunzipSync(bytes)) : bytes;
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

  it('keeps the default download (kernel + initramfs, compressed) under 4 MB', () => {
    const total = manifest.files
      .filter((f) => f.role === 'kernel' || f.role === 'initrd')
      .reduce((sum, f) => sum + f.size, 0);
    expect(total).toBeLessThan(4_000_000);
  });
});
