import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { preview } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, browserAvailable, launchChromium } from '../helpers/browser.ts';
import { buildLibrary } from '../helpers/library.ts';

const enabled = browserAvailable();

const PAGE = `<!doctype html>
<html><head><link rel="icon" href="data:," /></head><body>
<tabvisor-vm id="tagged" cpus="1" memory="64" snapshot="none"></tabvisor-vm>
<script type="module">
  import * as tabvisor from '../../cdn/tabvisor/0.1.0/tabvisor.js';
  window.lib = tabvisor;
</script>
</body></html>`;

describe.skipIf(!enabled)(
  'the library build (dist-lib) served from an arbitrary path of a static host',
  () => {
    let site = '';
    const servers: Awaited<ReturnType<typeof preview>>[] = [];
    let browser: { context: BrowserContext; close: () => Promise<void> } | undefined;
    let url = '';

    /** Serve the site (configFile false reads no vite.config.ts) with `headers`; returns the page's URL. */
    async function serve(headers: Record<string, string>): Promise<string> {
      const server = await preview({
        root: ROOT,
        configFile: false,
        logLevel: 'warn',
        build: { outDir: site },
        preview: { host: '127.0.0.1', port: 0, strictPort: false, open: false, headers },
      });
      servers.push(server);
      const address = server.httpServer.address();
      if (!address || typeof address === 'string') throw new Error('no TCP address');
      return `http://127.0.0.1:${address.port}/docs/page/`;
    }

    beforeAll(async () => {
      site = mkdtempSync(join(tmpdir(), 'tabvisor-site-'));
      const lib = join(site, 'cdn/tabvisor/0.1.0');
      const sizes = await buildLibrary(lib);
      console.log(
        `library JS gzip: entry ${(sizes.entryGzipBytes / 1024).toFixed(1)} KiB, isolated page ${(sizes.parallelGzipBytes / 1024).toFixed(1)} KiB, page without isolation ${(sizes.singleWorkerGzipBytes / 1024).toFixed(1)} KiB`,
      );
      mkdirSync(join(site, 'docs/page'), { recursive: true });
      writeFileSync(join(site, 'docs/page/index.html'), PAGE);
      // No COOP/COEP: a static host that was not configured.
      url = await serve({});
      browser = await launchChromium();
    });

    afterAll(async () => {
      await browser?.close();
      for (const server of servers) await server.close();
      if (site) rmSync(site, { recursive: true, force: true });
    });

    /**
     * Open the docs page at `pageUrl`, run a command in its tagged VM and in a `createVM()` VM, and return
     * what they printed, the mode, the VM names, the JS files the page fetched and every error it showed.
     */
    async function runPage(pageUrl: string) {
      const page = await browser!.context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (error) => errors.push(String(error)));
      const scripts: string[] = [];
      page.on('response', (response) => {
        if (response.status() >= 400) errors.push(`${response.status()} ${response.url()}`);
        const path = new URL(response.url()).pathname;
        if (path.endsWith('.js')) scripts.push(path.split('/').pop() ?? path);
      });
      page.on('console', (message) => {
        if (message.type() === 'error') errors.push(message.text());
      });
      await page.goto(pageUrl);
      await page
        .waitForFunction(() => 'lib' in window, undefined, { timeout: 10_000 })
        .catch(() => undefined);
      expect(errors).toEqual([]);
      const result = await page.evaluate(async () => {
        const lib = (window as unknown as { lib: typeof import('../../src/embed/index.ts') }).lib;
        const tagged = document.getElementById('tagged') as HTMLElementTagNameMap['tabvisor-vm'];
        const fromTag = await tagged.run('uname -m', { timeoutMs: 90_000 });
        const vm = await lib.createVM({ name: 'scripted', cpus: 2, memoryMiB: 64, snapshot: 'none' });
        const fromApi = await vm.run('nproc', { timeoutMs: 90_000 });
        return { mode: lib.embedMode(), fromTag, fromApi, names: lib.vms().map((v) => v.name) };
      });
      const workers = page.workers().map((w) => w.url());
      await page.close();
      return { result, scripts, workers, errors };
    }

    /** What both modes print. */
    const ran = {
      fromTag: { output: 'riscv32\n', exitStatus: 0 },
      fromApi: { output: '2\n', exitStatus: 0 },
      names: ['vm-1', 'scripted'],
    };
    const inLibrary = (workerUrl: string): boolean => workerUrl.includes('/cdn/tabvisor/0.1.0/assets/');
    const parallelOnly = (name: string): boolean =>
      name.startsWith('hart.worker') ||
      name.startsWith('parallel-hypervisor') ||
      name.startsWith('net-hub.worker');

    it('boots the tag and a createVM() VM with worker and image URLs resolved next to the module', async () => {
      const { result, scripts, workers, errors } = await runPage(url);
      expect(result).toEqual({ mode: 'single-worker', ...ran });
      expect(workers.every(inLibrary)).toBe(true);
      // A page without isolation loads the entry, its shared chunks, the terminal (a chunk loaded beside the
      // VM) and the VM host worker, never the page VMM, the vCPU worker or the network relay: exactly what the
      // benchmark's "page without isolation downloads" figure counts (every chunk but those three).
      const built = readdirSync(join(site, 'cdn/tabvisor/0.1.0/assets')).filter((name) =>
        name.endsWith('.js'),
      );
      expect(built.filter(parallelOnly)).toHaveLength(3);
      expect(new Set(scripts.filter((name) => !name.startsWith('coi-')))).toEqual(
        new Set(['tabvisor.js', ...built.filter((name) => !parallelOnly(name))]),
      );
      expect(built).toContainEqual(expect.stringMatching(/^terminal-pane-[\w-]+\.js$/));
      expect(built).toContainEqual(expect.stringMatching(/^vm-host\.worker-[\w-]+\.js$/));
      expect(errors).toEqual([]);
    });

    it('on an isolated host loads the page VMM and one worker per vCPU, with images found next to the module', async () => {
      const isolated = await serve({
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
      });
      const { result, scripts, workers, errors } = await runPage(isolated);
      expect(result).toEqual({ mode: 'parallel', ...ran });
      expect(new Set(scripts.filter(parallelOnly)).size).toBe(2); // the page VMM and the vCPU worker
      expect(scripts.some((name) => name.startsWith('vm-host'))).toBe(false);
      // One vCPU worker per vCPU (1 + 2; spares may be running too), all loaded from the library's folder.
      expect(workers.filter((w) => w.includes('hart.worker')).length).toBeGreaterThanOrEqual(3);
      expect(workers.every(inLibrary)).toBe(true);
      expect(errors).toEqual([]);
    });
  },
);
