/**
 * Embedding figures for `npm run bench`: the example docs page (examples/index.html, two `<tabvisor-vm>`) in
 * Chromium, from navigation start until both VMs have run a first command, for a cold boot and for a start from
 * the boot snapshots the cold boot saved, with and without cross-origin isolation; and the library's JS size.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { buildApp, launchChromium, serveApp } from '../test/helpers/browser.ts';
import { buildLibrary, type LibrarySize } from '../test/helpers/library.ts';

/** Seconds per run for each mode and start kind. */
export interface EmbedFigures {
  readonly parallelCold: number[];
  readonly parallelSnapshot: number[];
  readonly singleCold: number[];
  readonly singleSnapshot: number[];
}

/** Seconds from navigation start until every element of the example page ran `true`. */
async function usableShell(context: BrowserContext, url: string): Promise<number> {
  const page = await context.newPage();
  await page.goto(`${url}examples/`);
  const ms = await page.evaluate(async () => {
    const elements = [...document.querySelectorAll('tabvisor-vm')];
    await Promise.all(elements.map((el) => el.run('true', { timeoutMs: 120_000 })));
    return performance.now();
  });
  await page.close();
  return ms / 1000;
}

/** `runs` cold page loads (fresh browser profile each) and snapshot starts (same profile, next load). */
export async function embedFigures(runs: number): Promise<EmbedFigures> {
  const outDir = await buildApp();
  const isolated = await serveApp(outDir, true);
  const plain = await serveApp(outDir, false);
  const figures: EmbedFigures = {
    parallelCold: [],
    parallelSnapshot: [],
    singleCold: [],
    singleSnapshot: [],
  };
  try {
    for (let run = 0; run < runs; run++) {
      for (const [url, cold, warm] of [
        [isolated.url, figures.parallelCold, figures.parallelSnapshot],
        [plain.url, figures.singleCold, figures.singleSnapshot],
      ] as const) {
        const browser = await launchChromium();
        try {
          cold.push(await usableShell(browser.context, url));
          warm.push(await usableShell(browser.context, url));
        } finally {
          await browser.close();
        }
      }
    }
  } finally {
    await isolated.close();
    await plain.close();
    rmSync(outDir, { recursive: true, force: true });
  }
  return figures;
}

/** The library's JS gzip size (a fresh `build:lib` into a temporary folder). */
export async function librarySize(): Promise<LibrarySize> {
  const outDir = mkdtempSync(join(tmpdir(), 'tabvisor-lib-'));
  try {
    return await buildLibrary(outDir);
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}
