import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';

/** Chromium's launch arguments: headless, and nothing that reaches for the network on its own. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];

/** Debian's Chromium; npm never downloads a browser. */
export const CHROMIUM = '/usr/bin/chromium';

/** Repository root (where index.html and vite.config.ts are). */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Whether the browser tests can run. Without Chromium they are skipped, unless TABVISOR_REQUIRE_BROWSER is set
 * (CI), where a missing browser must fail the run.
 */
export function browserAvailable(): boolean {
  if (existsSync(CHROMIUM)) return true;
  if (process.env.TABVISOR_REQUIRE_BROWSER) {
    throw new Error(`TABVISOR_REQUIRE_BROWSER is set but ${CHROMIUM} is missing; apt-get install chromium`);
  }
  return false;
}

/** Build the app (vite build, as `npm run build` does) into a fresh temporary folder; returns it. */
export async function buildApp(): Promise<string> {
  const outDir = mkdtempSync(join(tmpdir(), 'tabvisor-dist-'));
  await build({ root: ROOT, logLevel: 'warn', build: { outDir, emptyOutDir: true } });
  return outDir;
}

/**
 * Build the app, serve it with the isolation headers and (for `fn`'s second URL) without them, run `fn` with the
 * two base URLs, then close both servers and delete the build, whatever `fn` did.
 */
export async function withServedApp<T>(fn: (isolated: string, plain: string) => Promise<T>): Promise<T> {
  const outDir = await buildApp();
  try {
    const isolated = await serveApp(outDir, true);
    try {
      const plain = await serveApp(outDir, false);
      try {
        return await fn(isolated.url, plain.url);
      } finally {
        await plain.close();
      }
    } finally {
      await isolated.close();
    }
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}

/**
 * Serve a built app with `vite preview` on a free local port. With `isolationHeaders` false the server uses
 * none of vite.config.ts, so it sends no COOP/COEP: a static host that was not configured. `extraHeaders` go
 * on every response (e.g. a Content-Security-Policy).
 */
export async function serveApp(
  outDir: string,
  isolationHeaders = true,
  extraHeaders: Record<string, string> = {},
): Promise<{ url: string; close: () => Promise<void> }> {
  const isolation = {
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cross-Origin-Resource-Policy': 'same-origin',
  };
  const headers = { ...(isolationHeaders ? isolation : {}), ...extraHeaders };
  const server: PreviewServer = await preview({
    root: ROOT,
    logLevel: 'warn',
    ...(isolationHeaders ? {} : { configFile: false as const }),
    build: { outDir },
    preview: { host: '127.0.0.1', port: 0, strictPort: false, open: false, headers },
  });
  const address = server.httpServer.address();
  if (!address || typeof address === 'string') throw new Error('the vite preview server has no TCP address');
  return { url: `http://127.0.0.1:${address.port}/`, close: () => server.close() };
}

/** Chromium, headless, with a fresh profile that is deleted on close. */
export async function launchChromium(): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'tabvisor-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Milliseconds VM `vmName` (in `page`) takes to run `command` at its shell prompt, prompt to prompt. */
export async function timeGuestCommand(page: Page, vmName: string, command: string): Promise<number> {
  return page.evaluate(
    async ([name, text]) => {
      const vm = window.tabvisor?.vm(name);
      if (!vm) throw new Error(`no VM ${name}`);
      const start = performance.now();
      vm.console.write(`${text}; echo TIMED-$((40+2))\n`);
      await vm.console.waitFor('TIMED-42', 120_000);
      const end = performance.now();
      await vm.console.waitFor('# ', 10_000);
      return end - start;
    },
    [vmName, command] as const,
  );
}

/**
 * Run two CPU-bound shell loops (`iterations` each) one after the other, then at the same time, in VM `vmName`;
 * returns both wall times. On a 2-vCPU guest with 2 free host cores the second is about half the first.
 */
export async function measureParallelism(
  page: Page,
  vmName: string,
  iterations: number,
): Promise<{ sequentialMs: number; parallelMs: number }> {
  const job = `i=0; while [ $i -lt ${iterations} ]; do i=$((i+1)); done`;
  const sequentialMs = await timeGuestCommand(page, vmName, `${job}; ${job}`);
  const parallelMs = await timeGuestCommand(page, vmName, `(${job}) & (${job}) & wait`);
  return { sequentialMs, parallelMs };
}
