/**
 * Cold first boot for `npm run bench`: a fresh browser profile (nothing cached: no HTTP cache, no disks, no
 * cached base-image chunks) loads the app, whose default VM boots from its copy-on-write root disk; seconds from
 * navigation start to the shell prompt, and the bytes the page fetched (all of them, and those of the root
 * image). Then the same profile reloads the page: the root image should come from the browser's own storage.
 * Reported only, never asserted.
 */
import type { BrowserContext, Page, Request } from 'playwright-core';
import { launchChromium, withServedApp } from '../test/helpers/browser.ts';

/** One page load's figures. */
export interface BootLoad {
  readonly promptSeconds: number;
  /** Response body bytes of every request the page and its workers made. */
  readonly fetchedBytes: number;
  /** Response body bytes of the root image (the files whose name starts with `rootfs`). */
  readonly rootBytes: number;
  /** Requests for the root image. */
  readonly rootRequests: number;
}

/** Figures per run: the cold first load, and a reload in the same profile. */
export interface ColdBootFigures {
  readonly cold: BootLoad[];
  readonly reload: BootLoad[];
}

/** Count response bodies of `context` while `load` runs. */
async function counted(context: BrowserContext, load: () => Promise<number>): Promise<BootLoad> {
  let fetchedBytes = 0;
  let rootBytes = 0;
  let rootRequests = 0;
  const pending: Promise<void>[] = [];
  const onFinished = (request: Request): void => {
    pending.push(
      request.sizes().then(
        (sizes) => {
          const body = Math.max(0, sizes.responseBodySize); // -1 when it came from the HTTP cache
          fetchedBytes += body;
          if (/\/images\/rootfs/.test(request.url())) {
            rootBytes += body;
            rootRequests++;
          }
        },
        () => {},
      ),
    );
  };
  context.on('requestfinished', onFinished);
  try {
    const promptSeconds = await load();
    await Promise.all(pending);
    return { promptSeconds, fetchedBytes, rootBytes, rootRequests };
  } finally {
    context.off('requestfinished', onFinished);
  }
}

/** Seconds from navigation start of `page` (at `url`) to the first VM's shell prompt. */
async function toPrompt(page: Page, url: string): Promise<number> {
  await page.goto(url);
  await page.waitForFunction(() => (window.tabvisor?.vms.length ?? 0) > 0, null, { timeout: 90_000 });
  const ms = await page.evaluate(async () => {
    await window.tabvisor?.vms[0].console.waitFor('# ', 90_000);
    return performance.now();
  });
  return ms / 1000;
}

/** `runs` cold first loads (a fresh profile each) and one reload after each. */
export async function coldBootFigures(runs: number): Promise<ColdBootFigures> {
  return withServedApp(async (base) => {
    const figures: ColdBootFigures = { cold: [], reload: [] };
    const url = `${base}?cpus=2&mem=128`;
    for (let run = 0; run < runs; run++) {
      const browser = await launchChromium();
      try {
        const page = await browser.context.newPage();
        figures.cold.push(await counted(browser.context, () => toPrompt(page, url)));
        // Let the saved VM configuration and cached chunks settle, then load the page again.
        await page.evaluate(() => window.tabvisor?.vms[0].console.write('sync\n'));
        await page.waitForTimeout(500);
        figures.reload.push(await counted(browser.context, () => toPrompt(page, url)));
      } finally {
        await browser.close();
      }
    }
    return figures;
  });
}

/** `BENCH_RUNS=3 npx tsx bench/browser-cold-boot.ts`: just these figures. */
if (import.meta.url === `file://${process.argv[1]}`) {
  const figures = await coldBootFigures(Number(process.env.BENCH_RUNS ?? 3));
  console.log(JSON.stringify(figures, null, 2));
  process.exit(0);
}
