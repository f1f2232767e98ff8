import { rmSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, buildApp, launchChromium, serveApp } from '../helpers/browser.ts';

const enabled = browserAvailable();

/** Boot the page's default VM, run a command, and say whether each vCPU translates code and runs WebAssembly. */
async function bootAndAsk(
  page: Page,
  url: string,
): Promise<{ output: string; jit: boolean[]; wasm: boolean[] }> {
  await page.goto(url);
  await page.waitForFunction(() => (window.tabvisor?.vms.length ?? 0) > 0, null, { timeout: 60_000 });
  return page.evaluate(async () => {
    const vm = window.tabvisor!.vms[0];
    await vm.console.waitFor('# ', 60_000);
    vm.console.write('echo $((6 * 7))\n');
    const output = await vm.console.waitFor('# ', 20_000);
    const vcpus = vm.stats().vcpus;
    return { output, jit: vcpus.map((v) => v.jit), wasm: vcpus.map((v) => v.wasm) };
  });
}

/**
 * The block translator and the WebAssembly tier in the browser: both on by default, the translator off with
 * `?jit=0`; on a site whose Content-Security-Policy forbids eval (no 'unsafe-eval'; the header also governs the
 * vCPU workers) both are off by themselves and the guest still runs, on the interpreter; with
 * 'wasm-unsafe-eval' only, the WebAssembly tier runs and the translator does not.
 */
describe.skipIf(!enabled)('the block translator and the WebAssembly tier in Chromium', () => {
  let outDir = '';
  const servers: { url: string; close: () => Promise<void> }[] = [];
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;

  beforeAll(async () => {
    outDir = await buildApp();
    servers.push(await serveApp(outDir));
    servers.push(await serveApp(outDir, true, { 'Content-Security-Policy': "script-src 'self'" }));
    servers.push(
      await serveApp(outDir, true, {
        'Content-Security-Policy': "script-src 'self' 'wasm-unsafe-eval'",
      }),
    );
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    for (const server of servers) await server.close();
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });

  it('translates by default and not with ?jit=0; the guest runs either way', async () => {
    const page = await browser!.context.newPage();
    const on = await bootAndAsk(page, `${servers[0].url}?cpus=2&mem=64&storage=none`);
    expect(on.output).toContain('42');
    expect(on.jit).toEqual([true, true]);
    expect(on.wasm).toEqual([true, true]);
    const off = await bootAndAsk(page, `${servers[0].url}?cpus=2&mem=64&storage=none&jit=0`);
    expect(off.output).toContain('42');
    expect(off.jit).toEqual([false, false]);
    expect(off.wasm).toEqual([true, true]);
    await page.close();
  });

  it('under a CSP without unsafe-eval the vCPUs interpret, and the guest boots and runs commands', async () => {
    const page = await browser!.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    const result = await bootAndAsk(page, `${servers[1].url}?cpus=1&mem=64&storage=none`);
    expect(result.output).toContain('42');
    expect(result.jit).toEqual([false]);
    expect(result.wasm).toEqual([false]);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("with 'wasm-unsafe-eval' alone the vCPUs run the WebAssembly tier without the translator", async () => {
    const page = await browser!.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    const result = await bootAndAsk(page, `${servers[2].url}?cpus=1&mem=64&storage=none`);
    expect(result.output).toContain('42');
    expect(result.jit).toEqual([false]);
    expect(result.wasm).toEqual([true]);
    expect(errors).toEqual([]);
    await page.close();
  });
});
