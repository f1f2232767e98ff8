/**
 * Embedding figures for `npm run bench`: the example docs page (examples/index.html, two `<tabvisor-vm>`) in
 * Chromium, from navigation start until both VMs have run a first command, for a cold boot and for a start from
 * the boot snapshots the cold boot saved, with and without cross-origin isolation; a VM with a NIC started from
 * a snapshot (shell, then its own DHCP address); and the library's JS size.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { launchChromium, withServedApp } from '../test/helpers/browser.ts';
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
  return withServedApp(async (isolated, plain) => {
    const figures: EmbedFigures = {
      parallelCold: [],
      parallelSnapshot: [],
      singleCold: [],
      singleSnapshot: [],
    };
    for (let run = 0; run < runs; run++) {
      for (const [url, cold, warm] of [
        [isolated, figures.parallelCold, figures.parallelSnapshot],
        [plain, figures.singleCold, figures.singleSnapshot],
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
    return figures;
  });
}

/** Seconds from adding a `<tabvisor-vm network=...>` started from a boot snapshot to its usable shell and to its own DHCP address. */
export interface NetworkCloneFigures {
  readonly shell: number[];
  readonly address: number[];
}

/**
 * `runs` times (fresh browser profile each), on the isolated example page with its VMs removed: a VM with a NIC
 * boots cold and saves its boot snapshot; then a second one starts from it and is timed until it runs `true`, and
 * until eth0 has an address for its own MAC (the guest re-probes the card, then asks DHCP).
 */
export async function networkCloneFigures(runs: number): Promise<NetworkCloneFigures> {
  return withServedApp(async (isolated) => {
    const figures: NetworkCloneFigures = { shell: [], address: [] };
    for (let run = 0; run < runs; run++) {
      const browser = await launchChromium();
      try {
        const page = await browser.context.newPage();
        await page.goto(`${isolated}examples/`);
        // No named functions inside evaluate: tsx would wrap them in a helper the page lacks.
        const times = await page.evaluate(async () => {
          for (const el of document.querySelectorAll('tabvisor-vm')) el.remove();
          const [seed, clone] = ['seed', 'clone'].map((id) => {
            const el = document.createElement('tabvisor-vm');
            el.id = id;
            el.setAttribute('cpus', '1');
            el.setAttribute('memory', '64');
            el.setAttribute('network', 'bench-clones');
            return el;
          });
          document.body.append(seed);
          const seedMac = (
            await seed.run('cat /sys/class/net/eth0/address', { timeoutMs: 120_000 })
          ).output.trim();
          seed.remove();
          const started = performance.now();
          document.body.append(clone);
          await clone.run('true', { timeoutMs: 120_000 });
          const shell = performance.now();
          if (clone.dataset.snapshot !== 'restored')
            throw new Error('the clone did not start from the snapshot');
          await clone.run(
            `until m=$(cat /sys/class/net/eth0/address 2>/dev/null) && [ "$m" != ${seedMac} ] && ` +
              "ip -4 addr show eth0 | grep -q 'inet '; do sleep 0.05; done",
            { timeoutMs: 120_000 },
          );
          const address = performance.now();
          clone.remove();
          return { shell: (shell - started) / 1000, address: (address - started) / 1000 };
        });
        figures.shell.push(times.shell);
        figures.address.push(times.address);
        await page.close();
      } finally {
        await browser.close();
      }
    }
    return figures;
  });
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
