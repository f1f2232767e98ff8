import { rmSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, buildApp, launchChromium, serveApp } from '../helpers/browser.ts';

const enabled = browserAvailable();

/** Boot the page's default VM, run a command, and say whether each vCPU translates code. */
async function bootAndAsk(page: Page, url: string): Promise<{ output: string; jit: boolean[] }> {
  await page.goto(url);
  await page.waitForFunction(() => (window.tabvisor?.vms.length ?? 0) > 0, null, { timeout: 60_000 });
  return page.evaluate(async () => {
    const vm = window.tabvisor!.vms[0];
    await vm.console.waitFor('# ', 60_000);
    vm.console.write('echo $((6 * 7))\n');
    const output = await vm.console.waitFor('# ', 20_000);
    return { output, jit: vm.stats().vcpus.map((v) => v.jit) };
  });
}

/**
 * The block translator in the browser: on by default, off with `?jit=0`, and off by itself on a site whose
 * Content-Security-Policy forbids eval (no 'unsafe-eval'; the header also governs the vCPU workers), where the
 * guest still runs, on the interpreter.
 */
describe.skipIf(!enabled)('the block translator in Chromium', () => {
  let outDir = '';
  const servers: { url: string; close: () => Promise<void> }[] = [];
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;

  beforeAll(async () => {
    outDir = await buildApp();
    servers.push(await serveApp(outDir));
    servers.push(await serveApp(outDir, true, { 'Content-Security-Policy': "script-src 'self'" }));
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
    const off = await bootAndAsk(page, `${servers[0].url}?cpus=2&mem=64&storage=none&jit=0`);
    expect(off.output).toContain('42');
    expect(off.jit).toEqual([false, false]);
    await page.close();
  });

  it('under a CSP without unsafe-eval the vCPUs interpret, and the guest boots and runs commands', async () => {
    const page = await browser!.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    const result = await bootAndAsk(page, `${servers[1].url}?cpus=1&mem=64&storage=none`);
    expect(result.output).toContain('42');
    expect(result.jit).toEqual([false]);
    expect(errors).toEqual([]);
    await page.close();
  });
});
