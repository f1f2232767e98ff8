import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, CHROMIUM_ARGS, browserAvailable, buildApp, serveApp } from '../helpers/browser.ts';

const enabled = browserAvailable();
const BOOT_TIMEOUT_MS = 90_000;

function launch(profile: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

/** Process ids whose command line names this (unique, temporary) profile: the browser we launched on it. */
function browserPids(profile: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(`--user-data-dir=${profile}`))
        pids.push(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return pids;
}

/**
 * Run `command` in VM `name` and return its output once it has finished. `vm.run` waits for its own end marker:
 * waiting for the next `# ` instead could match a prompt the shell redrew (SIGWINCH when the terminal pane is
 * fitted after boot) and return before the command ran, e.g. reload the page before a `sync` had finished.
 */
function run(page: Page, name: string, command: string, timeout = 30_000): Promise<string> {
  return page.evaluate(
    async ([vmName, text, ms]) => {
      const vm = window.tabvisor?.vm(vmName);
      if (!vm) throw new Error(`no VM ${vmName}`);
      const result = await vm.run(text, { timeoutMs: ms });
      return `${result.output}[exit ${result.exitStatus}]`;
    },
    [name, command, timeout] as const,
  );
}

async function openAndBoot(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await page.waitForFunction(() => (window.tabvisor?.vms.length ?? 0) > 0, undefined, {
    timeout: BOOT_TIMEOUT_MS,
  });
  await page.evaluate((ms) => window.tabvisor?.vms[0]?.console.waitFor('# ', ms), BOOT_TIMEOUT_MS);
}

describe.skipIf(!enabled)('VM disks persist in Chromium (OPFS, persistent profile)', () => {
  let outDir = '';
  let server: { url: string; close: () => Promise<void> } | undefined;
  let context: BrowserContext | undefined;
  const profile = mkdtempSync(join(tmpdir(), 'tabvisor-profile-'));

  beforeAll(async () => {
    outDir = await buildApp();
    server = await serveApp(outDir);
  });

  afterAll(async () => {
    await context?.close().catch(() => {});
    await server?.close();
    if (outDir) rmSync(outDir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
  });

  it('a file written in the guest is still there after a page reload (root disk is an OPFS overlay)', async () => {
    context = await launch(profile);
    const page = context.pages()[0] ?? (await context.newPage());
    // Range requests for the base image's chunks (the root disk's base is fetched as the guest reads it).
    const chunkRequests: string[] = [];
    page.on('request', (request) => {
      if (request.url().endsWith('/rootfs.ext2.chunked')) chunkRequests.push(request.headers().range ?? '');
    });
    await openAndBoot(page, `${server?.url}?cpus=1&mem=64`);
    expect(chunkRequests.length).toBeGreaterThan(0);
    expect(chunkRequests.every((range) => /^bytes=\d+-\d+$/.test(range))).toBe(true);
    expect(await page.locator('#storage-status').getAttribute('data-store')).toBe('opfs');
    console.log(`storage status: ${await page.locator('#storage-status').innerText()}`);
    expect(await run(page, 'vm-1', 'cat /proc/cmdline')).toContain('root=/dev/vda');
    await run(page, 'vm-1', 'echo persisted-$((6*7)) > /root/reload.txt; sync');
    // Never synced: the guest's periodic writeback (sped up here) writes it without a flush, and the overlay
    // saves its block maps on its own once those writes are done.
    await run(
      page,
      'vm-1',
      'echo 50 > /proc/sys/vm/dirty_expire_centisecs; echo 50 > /proc/sys/vm/dirty_writeback_centisecs; ' +
        'mkdir -p /root/later && echo unsynced-$((6*7)) > /root/later/file; sleep 3',
    );
    const started = performance.now();
    chunkRequests.length = 0;
    await openAndBoot(page, `${server?.url}?cpus=1&mem=64`);
    console.log(`reload to prompt: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    expect(chunkRequests).toEqual([]); // every chunk came from the IndexedDB cache
    expect(await page.evaluate(() => window.tabvisor?.vms.map((vm) => vm.name))).toEqual(['vm-1']);
    expect(await run(page, 'vm-1', 'cat /root/reload.txt /root/later/file')).toMatch(
      /persisted-42[\s\S]*unsynced-42/,
    );
  });

  it('a file synced right before the browser process is killed is there after a restart', async () => {
    const page = context?.pages()[0];
    if (!page) throw new Error('no page');
    await run(page, 'vm-1', 'echo survived-$((6*7)) > /root/crash.txt; sync; echo SYNC-$((1+1))');
    const pids = browserPids(profile);
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await context?.close().catch(() => {});
    context = await launch(profile);
    const again = context.pages()[0] ?? (await context.newPage());
    await openAndBoot(again, `${server?.url}?cpus=1&mem=64`);
    expect(await run(again, 'vm-1', 'cat /root/crash.txt /root/reload.txt')).toMatch(
      /survived-42[\s\S]*persisted-42/,
    );
  });

  it('reset disk returns the root to the base image; Delete (confirmed) erases the VM and its OPFS directory', async () => {
    const page = context?.pages()[0];
    if (!page) throw new Error('no page');
    await page.evaluate(async () => {
      // Return nothing: a VM object would drag its whole host RAM through the protocol.
      await window.tabvisor?.createVM({ name: 'scratch', cpus: 1, memoryMiB: 64 });
    });
    await page.evaluate((ms) => window.tabvisor?.vm('scratch')?.console.waitFor('# ', ms), BOOT_TIMEOUT_MS);
    await run(page, 'scratch', 'echo scratch > /root/s.txt; sync');
    const vmDirs = () =>
      page.evaluate(async () => {
        const root = await navigator.storage.getDirectory();
        const vms = await root.getDirectoryHandle('vms');
        const names: string[] = [];
        for await (const name of (vms as unknown as { keys(): AsyncIterable<string> }).keys())
          names.push(name);
        return names.length;
      });
    const before = await vmDirs();
    page.on('dialog', (dialog) => void dialog.accept());
    await page.evaluate(() => window.tabvisor?.vm('scratch')?.stop());
    await page.locator('.vm-row', { hasText: 'scratch' }).locator('button[data-disk-action="reset"]').click();
    await expect
      .poll(() => page.locator('.vm-row', { hasText: 'scratch' }).locator('.disk-message').innerText())
      .toContain('original image');
    await page.evaluate(() => window.tabvisor?.vm('scratch')?.start());
    await page.evaluate((ms) => window.tabvisor?.vm('scratch')?.console.waitFor('# ', ms), BOOT_TIMEOUT_MS);
    expect(await run(page, 'scratch', 'cat /root/s.txt')).toContain('No such file');
    await page.locator('.vm-row', { hasText: 'scratch' }).locator('button[data-action="delete"]').click();
    await expect
      .poll(() => page.evaluate(() => window.tabvisor?.vm('scratch')?.state ?? 'gone'))
      .toBe('gone');
    await expect.poll(vmDirs).toBe(before - 1);
  });

  it('an attached raw image file appears as /dev/vdb, and its download holds what the guest wrote', async () => {
    const page = context?.pages()[0];
    if (!page) throw new Error('no page');
    const row = page.locator('.vm-row', { hasText: 'vm-1' });
    await page.evaluate(() => window.tabvisor?.vm('vm-1')?.stop());
    const image = Buffer.alloc(1 << 20);
    image.write('TABVISOR-IMPORT', 0);
    await row.locator('input[data-disk-action="attach-file"]').setInputFiles({
      name: 'data.img',
      mimeType: 'application/octet-stream',
      buffer: image,
    });
    await expect
      .poll(() => row.locator('.disk-message').innerText())
      .toContain('data.img attached as disk 1');
    await page.evaluate(() => window.tabvisor?.vm('vm-1')?.start());
    await page.evaluate((ms) => window.tabvisor?.vm('vm-1')?.console.waitFor('# ', ms), BOOT_TIMEOUT_MS);
    expect(await run(page, 'vm-1', 'head -c 15 /dev/vdb; echo')).toContain('TABVISOR-IMPORT');
    await run(
      page,
      'vm-1',
      'printf GUEST-WROTE | dd of=/dev/vdb bs=512 seek=1 conv=notrunc 2>/dev/null; sync',
    );
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      row.locator('button[data-disk-action="download"]', { hasText: 'data.img' }).click(),
    ]);
    const path = await download.path();
    const bytes = readFileSync(path);
    expect(bytes.length).toBe(1 << 20);
    expect(bytes.subarray(0, 15).toString()).toBe('TABVISOR-IMPORT');
    expect(bytes.subarray(512, 523).toString()).toBe('GUEST-WROTE');
  });

  it('with the IndexedDB fallback (?storage=indexeddb) a written file survives a reload too', async () => {
    const idbProfile = mkdtempSync(join(tmpdir(), 'tabvisor-profile-idb-'));
    const idb = await launch(idbProfile);
    try {
      const page = idb.pages()[0] ?? (await idb.newPage());
      const url = `${server?.url}?cpus=1&mem=64&storage=indexeddb`;
      await openAndBoot(page, url);
      expect(await page.locator('#storage-status').getAttribute('data-store')).toBe('indexeddb');
      await run(page, 'vm-1', 'echo idb-$((6*7)) > /root/idb.txt; sync');
      await openAndBoot(page, url);
      expect(await run(page, 'vm-1', 'cat /root/idb.txt')).toContain('idb-42');
    } finally {
      await idb.close();
      rmSync(idbProfile, { recursive: true, force: true });
    }
  });

  it('a second tab of the same profile leaves a VM to the tab that runs it, and says so', async () => {
    const page = context?.pages()[0];
    if (!page || !context) throw new Error('no page');
    const second = await context.newPage();
    try {
      await second.goto(`${server?.url}?cpus=1&mem=64&autostart=0`);
      await expect
        .poll(() => second.locator('#storage-status').innerText(), { timeout: 30_000 })
        .toMatch(/1 saved VM is open in another tab of this site .*close that tab and reload this one/);
      expect(await second.evaluate(() => window.tabvisor?.vms.length)).toBe(0);
    } finally {
      await second.close();
    }
    expect(await run(page, 'vm-1', 'echo still-$((1+1))')).toContain('still-2');
  });

  it('a tab that gets past the Web Lock finds the disk open in OPFS and says to close the other tab', async () => {
    const page = context?.pages()[0];
    if (!page || !context) throw new Error('no page');
    const second = await context.newPage();
    try {
      // A same-origin page steals the VMs' Web Locks and drops them when it navigates away (as if a lock were
      // lost): the app that loads next gets the lock, and only OPFS itself stands between it and vm-1's disk.
      await second.goto(`${server?.url}images/manifest.json`);
      const stolen = await second.evaluate(async () => {
        const vms = await (await navigator.storage.getDirectory()).getDirectoryHandle('vms');
        const names: string[] = [];
        for await (const name of (vms as unknown as { keys(): AsyncIterable<string> }).keys())
          names.push(name);
        await Promise.all(
          names.map(
            (name) =>
              new Promise<void>((granted) => {
                void navigator.locks.request(`tabvisor-vm-${name}`, { steal: true }, () => {
                  granted();
                  return new Promise(() => {}); // held until this page goes away
                });
              }),
          ),
        );
        return names.length;
      });
      expect(stolen).toBeGreaterThan(0);
      await second.goto(`${server?.url}?cpus=1&mem=64&autostart=0`);
      await expect
        .poll(() => second.locator('.notice.error').allInnerTexts(), { timeout: 30_000 })
        .toContainEqual(
          expect.stringMatching(
            /VM vm-1 could not be restored[\s\S]*disk 0 of VM [\w-]+ is open in another tab of this site \(OPFS allows one writer per file\); close that tab, or its VM, and reload this one/,
          ),
        );
      expect(await second.evaluate(() => window.tabvisor?.vms.length)).toBe(0);
    } finally {
      await second.close();
    }
    expect(await run(page, 'vm-1', 'echo fine-$((1+2))')).toContain('fine-3');
  });

  it('a full quota (Chromium quota override): a new VM is refused with how to free space, and leaves nothing behind', async () => {
    const page = context?.pages()[0];
    if (!page || !context || !server) throw new Error('no page');
    const origin = new URL(server.url).origin;
    const cdp = await context.newCDPSession(page);
    const vmDirs = () =>
      page.evaluate(async () => {
        const vms = await (await navigator.storage.getDirectory()).getDirectoryHandle('vms');
        let count = 0;
        for await (const _ of (vms as unknown as { keys(): AsyncIterable<string> }).keys()) count++;
        return count;
      });
    const before = await vmDirs();
    const usage = await page.evaluate(async () => (await navigator.storage.estimate()).usage ?? 0);
    // A root overlay needs about 33 MB; leave 1 MiB.
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: usage + (1 << 20) });
    try {
      const message = await page.evaluate(async () => {
        try {
          await window.tabvisor?.createVM({ name: 'over-quota', cpus: 1, memoryMiB: 32 });
          return 'created';
        } catch (error) {
          return error instanceof Error ? error.message : String(error);
        }
      });
      expect(message).toMatch(
        /disk 0 of VM [\w-]+: the browser's storage quota for this site is full; the write was refused and nothing written before was lost\. Free space by deleting a VM or a disk/,
      );
      expect(await page.evaluate(() => Boolean(window.tabvisor?.vm('over-quota')))).toBe(false);
      expect(await vmDirs()).toBe(before);
      // The running VM's disk was reserved when it was made: it keeps working.
      expect(await run(page, 'vm-1', 'echo q-$((2+2)) > /root/q.txt; sync; cat /root/q.txt')).toContain(
        'q-4',
      );
    } finally {
      await cdp.send('Storage.overrideQuotaForOrigin', { origin });
      await cdp.detach();
    }
  });

  it('with IndexedDB, guest writes past a full quota are I/O errors in the guest and a clear message in the VM row', async () => {
    const idbProfile = mkdtempSync(join(tmpdir(), 'tabvisor-profile-quota-'));
    const idb = await launch(idbProfile);
    try {
      const page = idb.pages()[0] ?? (await idb.newPage());
      const url = `${server?.url}?cpus=1&mem=64&storage=indexeddb`;
      const origin = new URL(server?.url ?? '').origin;
      const cdp = await idb.newCDPSession(page);
      // Set before the page opens IndexedDB (Chromium applies an override to databases opened after it):
      // room for the boot (overlay header, saved VM, cached base chunks), not for 4 MiB more.
      await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 3 << 20 });
      await openAndBoot(page, url);
      // dd's fsync reports the failed writeback (sync(1) cannot: sync(2) returns nothing).
      const output = await run(
        page,
        'vm-1',
        'dd if=/dev/urandom of=/root/big bs=65536 count=64 conv=fsync 2>&1 | grep -v records; echo DD-DONE',
        60_000,
      );
      expect(output).toMatch(/I\/O error/);
      const row = page.locator('.vm-row', { hasText: 'vm-1' });
      await expect
        .poll(() => row.locator('.disk-message').innerText())
        .toMatch(
          /disk 0: disk 0 of VM [\w-]+: the browser's storage quota for this site is full.*Free space/,
        );
      expect(await page.evaluate(() => window.tabvisor?.vm('vm-1')?.state)).toBe('running');
      // Space again: the same disk takes writes again.
      await cdp.send('Storage.overrideQuotaForOrigin', { origin });
      expect(
        await run(page, 'vm-1', 'rm -f /root/big; echo room-$((3+4)) > /root/r.txt; sync; cat /root/r.txt'),
      ).toContain('room-7');
    } finally {
      await idb.close();
      rmSync(idbProfile, { recursive: true, force: true });
    }
  });

  it('a corrupt base image chunk from the server fails the guest read with a message naming the chunk', async () => {
    const freshProfile = mkdtempSync(join(tmpdir(), 'tabvisor-profile-corrupt-'));
    const browser = await launch(freshProfile);
    try {
      const page = browser.pages()[0] ?? (await browser.newPage());
      // Flip one byte in the middle of every range the server sends (after the first request, so the
      // superblock read works and the damage lands in what the kernel reads next).
      let seen = 0;
      await page.route('**/rootfs.ext2.chunked', async (route) => {
        try {
          const response = await route.fetch();
          const body = Buffer.from(await response.body());
          if (seen++ > 0) body[body.length >> 1] ^= 0xff;
          await route.fulfill({ response, body });
        } catch {
          // The browser closed while this range was in flight (the test is over): nothing to answer.
        }
      });
      await page.goto(`${server?.url}?cpus=1&mem=64`);
      const row = page.locator('.vm-row', { hasText: 'vm-1' });
      await expect
        .poll(() => row.locator('.disk-message').innerText(), { timeout: 60_000 })
        .toMatch(
          /the base image is corrupt: chunk \d+ \(disk bytes \[\d+, \d+\)\) from \S+rootfs\.ext2\.chunked/,
        );
      expect(await page.evaluate(() => window.tabvisor?.vms[0].console.transcript())).toMatch(/I\/O error/);
    } finally {
      await browser.close();
      rmSync(freshProfile, { recursive: true, force: true });
    }
  });
});
