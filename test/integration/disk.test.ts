import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.ts';

const scratch = mkdtempSync(join(tmpdir(), 'tabvisor-disk-'));
const rootImage = (): string => {
  const path = join(scratch, `root-${Math.random().toString(36).slice(2)}.img`);
  writeFileSync(
    path,
    // gzip members, one per chunk: gunzip gives the whole image
    gunzipSync(readFileSync(new URL('../../public/images/rootfs.ext2.chunked', import.meta.url))),
  );
  return path;
};

describe('virtio-blk disks from the command line', () => {
  it('boots the default image from its root disk, and a file written and synced survives a power cycle', async () => {
    const disk = rootImage();
    const first = await runCli(
      ['boot', '--disk', disk],
      'echo persisted-$((40+2)) > /root/note\nsync\npoweroff\n',
      90_000,
    );
    expect(first.status).toBe(0);
    expect(first.stdout).toMatch(/EXT4-fs \(vda\)|VFS: Mounted root/);
    const second = await runCli(['boot', '--disk', disk], 'cat /root/note\npoweroff\n', 90_000);
    expect(second.status).toBe(0);
    expect(second.stdout).toContain('persisted-42');
  });

  it('a blank second disk: mkfs.ext2, mount, write, sync, power off, boot again, read back', async () => {
    const root = rootImage();
    const blank = join(scratch, 'blank.img');
    writeFileSync(blank, new Uint8Array(8 << 20));
    const script = [
      'mkfs.ext2 -q /dev/vdb || mke2fs -q /dev/vdb',
      'mkdir -p /mnt/data && mount /dev/vdb /mnt/data',
      'dd if=/dev/zero bs=1024 count=512 2>/dev/null | tr "\\0" "x" > /mnt/data/blob',
      'md5sum /mnt/data/blob',
      'sync; umount /mnt/data; poweroff',
      '',
    ].join('\n');
    const first = await runCli(['boot', '--disk', root, '--disk', blank], script, 90_000);
    expect(first.status).toBe(0);
    const sum = /([0-9a-f]{32})\s+\/mnt\/data\/blob/.exec(first.stdout)?.[1];
    expect(sum).toBeDefined();
    const second = await runCli(
      ['boot', '--disk', root, '--disk', blank],
      'mkdir -p /mnt/data && mount /dev/vdb /mnt/data && md5sum /mnt/data/blob\npoweroff\n',
      90_000,
    );
    expect(second.status).toBe(0);
    expect(second.stdout).toContain(`${sum}  /mnt/data/blob`);
  });

  it('a read-only disk refuses writes in the guest and is left unchanged', async () => {
    const root = rootImage();
    const before = readFileSync(root);
    const result = await runCli(
      ['boot', '--disk-ro', root, '--append', 'console=ttyS0 earlycon=sbi root=/dev/vda ro'],
      'touch /root/x || echo write-refused\npoweroff\n',
      90_000,
    );
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('write-refused');
    expect(readFileSync(root).equals(before)).toBe(true);
  });

  it('a disk whose size is not a multiple of 512 bytes is refused with the fix', async () => {
    const odd = join(scratch, 'odd.img');
    writeFileSync(odd, new Uint8Array(1000));
    const result = await runCli(['boot', '--disk', odd]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/512/);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a missing disk file is named', async () => {
    const result = await runCli(['boot', '--disk', join(scratch, 'nope.img')]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/nope\.img/);
  });
});
