/**
 * Browser figures for `npm run bench`: the built app served by `vite preview` in Debian's Chromium (the same
 * set-up as test/e2e).
 */
import { launchChromium, measureParallelism, withServedApp } from '../test/helpers/browser.ts';

/** One page load per run: seconds from navigation start to the default VM's shell prompt. */
export async function browserFigures(
  runs: number,
): Promise<{ promptSeconds: number[]; parallelSpeedup: number[]; warmParallelSpeedup: number[] }> {
  return withServedApp(async (base) => {
    const browser = await launchChromium();
    const promptSeconds: number[] = [];
    const parallelSpeedup: number[] = [];
    const warmParallelSpeedup: number[] = [];
    try {
      for (let run = 0; run < runs; run++) {
        const page = await browser.context.newPage();
        await page.goto(`${base}?cpus=2&mem=128`);
        await page.waitForFunction(() => (window.tabvisor?.vms.length ?? 0) > 0, null, { timeout: 60_000 });
        const promptMs = await page.evaluate(async () => {
          await window.tabvisor?.vms[0].console.waitFor('# ', 60_000);
          return performance.now();
        });
        promptSeconds.push(promptMs / 1000);
        // The first pair of runs includes each vCPU's warm-up (the block translator translates the loop once per
        // vCPU: the sequential run does it once, the parallel run once more on the other vCPU); the second pair
        // runs on warm vCPUs.
        const first = await measureParallelism(page, 'vm-1', 15_000);
        parallelSpeedup.push(first.sequentialMs / first.parallelMs);
        const warm = await measureParallelism(page, 'vm-1', 15_000);
        warmParallelSpeedup.push(warm.sequentialMs / warm.parallelMs);
        await page.close();
      }
    } finally {
      await browser.close();
    }
    return { promptSeconds, parallelSpeedup, warmParallelSpeedup };
  });
}
