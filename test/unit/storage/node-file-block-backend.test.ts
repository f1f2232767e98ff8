import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../../src/common/errors.ts';
import { BlockIoError } from '../../../src/devices/block-backend.ts';
import { openNodeFileBlockBackend } from '../../../src/cli/node-file-block-backend.ts';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tabvisor-disk-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('NodeFileBlockBackend', () => {
  it('reads and writes a raw image at byte offsets, concurrently, and flushes with datasync', async () => {
    const path = join(dir, 'disk.img');
    await writeFile(path, new Uint8Array(8192).fill(1));
    const disk = await openNodeFileBlockBackend(path);
    expect(disk.sizeBytes).toBe(8192);
    expect(disk.readOnly).toBe(false);
    await Promise.all([
      disk.write(512, new Uint8Array(512).fill(2)),
      disk.write(4096, new Uint8Array(1024).fill(3)),
    ]);
    await disk.flush();
    const out = new Uint8Array(1024);
    await disk.read(0, out);
    expect(out[0]).toBe(1);
    expect(out[512]).toBe(2);
    await disk.close();
    const bytes = await readFile(path);
    expect(bytes[4096]).toBe(3);
    expect(bytes[5119]).toBe(3);
    expect(bytes[5120]).toBe(1);
  });

  it('read-only images refuse writes with BlockIoError', async () => {
    const path = join(dir, 'ro.img');
    await writeFile(path, new Uint8Array(1024));
    const disk = await openNodeFileBlockBackend(path, { readOnly: true });
    expect(disk.readOnly).toBe(true);
    await expect(disk.write(0, new Uint8Array(512))).rejects.toThrow(BlockIoError);
    await disk.close();
  });

  it('explains the fix for a missing file, a directory, an odd size, an empty file', async () => {
    await expect(openNodeFileBlockBackend(join(dir, 'nope.img'))).rejects.toThrow(/does not exist.*truncate/);
    await expect(openNodeFileBlockBackend(dir)).rejects.toThrow(UserError);
    const odd = join(dir, 'odd.img');
    await writeFile(odd, new Uint8Array(1000));
    await expect(openNodeFileBlockBackend(odd)).rejects.toThrow(/truncate -s %512/);
    const empty = join(dir, 'empty.img');
    await writeFile(empty, new Uint8Array(0));
    await expect(openNodeFileBlockBackend(empty)).rejects.toThrow(UserError);
  });
});
