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

/** Type `command` into VM `name` and return the output up to the next prompt. */
function run(page: Page, name: string, command: string, timeout = 30_000): Promise<string> {
  return page.evaluate(
    async ([vmName, text, ms]) => {
      const vm = window.tabvisor?.vm(vmName);
      if (!vm) throw new Error(`no VM ${vmName}`);
      vm.console.write(`${text}\n`);
      return vm.console.waitFor('# ', ms);
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
    await openAndBoot(page, `${server?.url}?cpus=1&mem=64`);
    expect(await page.locator('#storage-status').getAttribute('data-store')).toBe('opfs');
    console.log(`storage status: ${await page.locator('#storage-status').innerText()}`);
    expect(await run(page, 'vm-1', 'cat /proc/cmdline')).toContain('root=/dev/vda');
    await run(page, 'vm-1', 'echo persisted-$((6*7)) > /root/reload.txt; sync');
    const started = performance.now();
    await openAndBoot(page, `${server?.url}?cpus=1&mem=64`);
    console.log(`reload to prompt: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    expect(await page.evaluate(() => window.tabvisor?.vms.map((vm) => vm.name))).toEqual(['vm-1']);
    expect(await run(page, 'vm-1', 'cat /root/reload.txt')).toContain('persisted-42');
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
});
