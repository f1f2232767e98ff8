import { rmSync } from 'node:fs';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, buildApp, launchChromium, serveApp } from '../helpers/browser.ts';

const enabled = browserAvailable();
/** Longest a boot to the shell prompt may take on a loaded 2-core CI machine (it takes about 2 s alone). */
const BOOT_TIMEOUT_MS = 60_000;

/** The page's vCPU workers (the storage worker, one per page, is not one). */
function vcpuWorkers(page: Page): unknown[] {
  return page.workers().filter((w) => w.url().includes('hart.worker'));
}

/**
 * The output of `command` run in VM `name` (`vm.run`: it waits for its own end marker, not for a `# ` that a
 * prompt redrawn on a terminal resize could supply early).
 */
function run(page: Page, name: string, command: string): Promise<string> {
  return page.evaluate(
    async ([vmName, text]) => {
      const vm = window.tabvisor?.vm(vmName);
      if (!vm) throw new Error(`no VM ${vmName}`);
      return (await vm.run(text, { timeoutMs: 20_000 })).output;
    },
    [name, command] as const,
  );
}

/** Wait for VM `name` to print its shell prompt; returns page time (ms since navigation) when it did. */
function waitForPrompt(page: Page, name: string): Promise<number> {
  return page.evaluate(
    async ([vmName, timeout]) => {
      const vm = window.tabvisor?.vm(vmName);
      if (!vm) throw new Error(`no VM ${vmName}`);
      await vm.console.waitFor('# ', timeout);
      return performance.now();
    },
    [name, BOOT_TIMEOUT_MS] as const,
  );
}

describe.skipIf(!enabled)('the page hypervisor in Chromium', () => {
  let outDir = '';
  let server: { url: string; close: () => Promise<void> } | undefined;
  let browser: { context: BrowserContext; close: () => Promise<void> } | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    outDir = await buildApp();
    server = await serveApp(outDir);
    browser = await launchChromium();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.on('pageerror', (error) => pageErrors.push(String(error)));
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });

  it('is cross-origin isolated and boots the default guest to its shell prompt with one worker per vCPU', async () => {
    await page.goto(`${server?.url}?cpus=2&mem=128`);
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    await page.waitForFunction(() => (window.tabvisor?.vms.length ?? 0) > 0);
    const promptMs = await waitForPrompt(page, 'vm-1');
    console.log(`page load to shell prompt: ${(promptMs / 1000).toFixed(2)} s`);
    const stats = await page.evaluate(() => window.tabvisor?.vm('vm-1')?.stats());
    expect(stats).toMatchObject({
      state: 'running',
      cpus: 2,
      memoryMiB: 128,
      threads: 2,
      hostFrames: 128 * 256,
    });
    expect(stats?.vcpus.map((v) => v.instructions > 0)).toEqual([true, true]);
    expect(vcpuWorkers(page)).toHaveLength(2);
    expect(
      page
        .workers()
        .filter((w) => !w.url().includes('hart.worker'))
        .map((w) => w.url()),
    ).toEqual([expect.stringContaining('storage.worker')]);
    // The console pane shows the guest's output (the app uses the same API).
    await expect.poll(() => page.locator('.card[data-vm="1"] .xterm-rows').innerText()).toContain('# ');
    expect(pageErrors).toEqual([]);
  });

  it('`nproc` in the guest prints the VM vCPU count', async () => {
    expect(await run(page, 'vm-1', 'nproc')).toBe('2\n');
  });

  it('two VMs boot side by side with different vCPU counts and both answer commands', async () => {
    await page.evaluate(async () => {
      // Return nothing: a VM object would drag its whole host RAM through the protocol.
      await window.tabvisor?.createVM({ name: 'second', cpus: 1, memoryMiB: 64 });
    });
    await waitForPrompt(page, 'second');
    expect(vcpuWorkers(page)).toHaveLength(3);
    expect(await run(page, 'second', 'nproc')).toBe('1\n');
    expect(await run(page, 'vm-1', 'nproc')).toBe('2\n');
    expect(await run(page, 'second', 'echo $((6*7))')).toContain('42');
    const host = await page.evaluate(() => window.tabvisor?.hostRam());
    expect((host?.totalFrames ?? 0) - (host?.freeFrames ?? 0)).toBe((128 + 64) * 256);
  });

  it('pause parks every vCPU of one VM (instructions stop) and resume runs it on', async () => {
    await page.evaluate(() => window.tabvisor?.vm('vm-1')?.pause());
    await page.waitForFunction(() =>
      window.tabvisor
        ?.vm('vm-1')
        ?.stats()
        .vcpus.every((v) => v.state === 'paused'),
    );
    const before = await page.evaluate(() =>
      window.tabvisor
        ?.vm('vm-1')
        ?.stats()
        .vcpus.map((v) => v.instructions),
    );
    await page.waitForTimeout(300);
    const after = await page.evaluate(() =>
      window.tabvisor
        ?.vm('vm-1')
        ?.stats()
        .vcpus.map((v) => v.instructions),
    );
    expect(after).toEqual(before);
    expect(await run(page, 'second', 'echo other-vm-runs')).toContain('other-vm-runs');
    await page.evaluate(() => window.tabvisor?.vm('vm-1')?.resume());
    expect(await run(page, 'vm-1', 'echo resumed')).toContain('resumed');
  });

  it("killing one VM's vCPU worker marks that VM crashed with the reason; the other VM keeps running", async () => {
    expect(await page.evaluate(() => window.tabvisor?.vm('second')?.killVcpu(0))).toBe(true);
    await page.waitForFunction(() => window.tabvisor?.vm('second')?.state === 'crashed');
    const crashed = await page.evaluate(() => window.tabvisor?.vm('second')?.stats());
    expect(crashed?.reason).toMatch(/vCPU 0 crashed: its worker was terminated/);
    expect(crashed?.hostFrames).toBe(0);
    expect(vcpuWorkers(page)).toHaveLength(2);
    expect(await run(page, 'vm-1', 'echo still-here')).toContain('still-here');
    await expect.poll(() => page.locator('.vm-row[data-vm="2"] .reason').innerText()).toContain('vCPU 0');
  });

  it('reset boots a crashed VM afresh; delete gives its frames back to host RAM', async () => {
    await page.evaluate(() => window.tabvisor?.vm('second')?.reset());
    await waitForPrompt(page, 'second');
    expect(await run(page, 'second', 'nproc')).toBe('1\n');
    await page.evaluate(() => window.tabvisor?.vm('second')?.delete());
    const state = await page.evaluate(() => ({
      names: window.tabvisor?.vms.map((vm) => vm.name),
      host: window.tabvisor?.hostRam(),
    }));
    expect(state.names).toEqual(['vm-1']);
    expect((state.host?.totalFrames ?? 0) - (state.host?.freeFrames ?? 0)).toBe(128 * 256);
    expect(vcpuWorkers(page)).toHaveLength(2);
    await expect.poll(() => page.locator('.vm-row').count()).toBe(1);
  });

  it('the create-VM form refuses shapes outside the CLI limits with a message naming the limit', async () => {
    const tryCreate = async (cpus: string, memory: string) => {
      await page.fill('#vm-cpus', cpus);
      await page.fill('#vm-memory', memory);
      await page.click('#create-vm');
      return page.locator('#create-error').innerText();
    };
    expect(await tryCreate('9', '64')).toBe('vCPUs must be a whole number from 1 to 8, not 9');
    expect(await tryCreate('1', '4096')).toBe(
      'memory must be a whole number of MiB from 16 to 2048, not 4096',
    );
    expect(await tryCreate('1', '2000')).toMatch(/^not enough host memory: 2000 MiB asked, 896 MiB free/);
    expect(await page.evaluate(() => window.tabvisor?.vms.length)).toBe(1);
    await expect(page.evaluate(() => window.tabvisor?.createVM({ cpus: 0 }))).rejects.toThrow(
      /vCPUs must be a whole number from 1 to 8, not 0/,
    );
    expect(pageErrors).toEqual([]);
  });

  it("the console pane tells the guest its size, and the guest's stty size follows the viewport", async () => {
    const consoleSize = () => page.evaluate(() => window.tabvisor!.vm('vm-1')!.console.size());
    const rowsShown = () => page.locator('.card[data-vm="1"] .xterm-rows > div').count();
    const sttySize = () =>
      page.evaluate(async () => (await window.tabvisor!.vm('vm-1')!.run('stty size')).output.trim());
    const viewport = page.viewportSize() ?? { width: 1280, height: 720 };
    const before = await consoleSize();
    expect(before.rows).toBe(await rowsShown());
    expect(await sttySize()).toBe(`${before.rows} ${before.cols}`);

    await page.setViewportSize({ width: 900, height: viewport.height });
    await expect.poll(async () => (await consoleSize()).cols).toBeLessThan(before.cols);
    const narrower = await consoleSize();
    expect(await sttySize()).toBe(`${narrower.rows} ${narrower.cols}`);

    await page.setViewportSize(viewport);
    await expect.poll(async () => (await consoleSize()).cols).toBe(before.cols);
    expect(await sttySize()).toBe(`${before.rows} ${before.cols}`);
    // The page API checks sizes like the CLI and the Vm do.
    await expect(page.evaluate(() => window.tabvisor!.vm('vm-1')!.console.resize(0, 24))).rejects.toThrow(
      /whole numbers of columns and rows from 1 to 65535/,
    );
    expect(pageErrors).toEqual([]);
  });
});

describe.skipIf(!enabled)('the page on a host that sends no isolation headers', () => {
  let outDir = '';
  let server: { url: string; close: () => Promise<void> } | undefined;
  let browser: { context: BrowserContext; close: () => Promise<void> } | undefined;

  beforeAll(async () => {
    outDir = await buildApp();
    server = await serveApp(outDir, false);
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });

  it('says which headers are missing and how to fix it (service worker disabled)', async () => {
    const page = await browser!.context.newPage();
    await page.goto(`${server?.url}?isolation-worker=0`);
    const notice = page.locator('#notice');
    await expect.poll(() => notice.innerText()).toContain('not cross-origin isolated');
    const text = await notice.innerText();
    expect(text).toContain('Cross-Origin-Opener-Policy: same-origin');
    expect(text).toContain('Cross-Origin-Embedder-Policy: require-corp');
    expect(text).toContain('coi-serviceworker.js');
    expect(await page.evaluate(() => window.tabvisor)).toBeUndefined();
    await page.close();
  });

  it('the isolation service worker makes the page cross-origin isolated after one reload', async () => {
    const page = await browser!.context.newPage();
    await page.goto(`${server?.url}?autostart=0`);
    await page.waitForFunction(() => window.tabvisor !== undefined, null, { timeout: 20_000 });
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    expect(await page.evaluate(() => navigator.serviceWorker.controller?.scriptURL)).toMatch(
      /coi-serviceworker\.js$/,
    );
    await page.close();
  });
});
