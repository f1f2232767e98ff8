/**
 * Disk figures for `npm run bench`: sequential write and read throughput in the guest, `dd` on a raw scratch
 * disk (/dev/vdb, a 40 MiB image attached through the page's "Attach image…" input) with O_DIRECT, the write
 * flushed (`conv=fsync`), for disks in OPFS and in IndexedDB. The figure is dd's own (guest clock). Reported only,
 * never asserted.
 */
import type { Page } from 'playwright-core';
import { launchChromium, withServedApp } from '../test/helpers/browser.ts';

/** Bytes written and read per run (the scratch disk is 40 MiB: playwright hands a file input at most 50 MB). */
const DD_MIB = 32;
const SCRATCH_BYTES = 40 << 20;

/** Run `command` in VM vm-1 and return dd's throughput in MB/s (10^6 bytes per second). */
async function ddMBps(page: Page, command: string): Promise<number> {
  const output = await page.evaluate(async (text) => {
    const vm = window.tabvisor?.vm('vm-1');
    if (!vm) throw new Error('no VM vm-1');
    vm.console.write(`${text}; echo DD-DONE-$((40+2))\n`);
    return vm.console.waitFor('DD-DONE-42', 120_000);
  }, command);
  const match = /(\d+) bytes .* copied, ([\d.]+) seconds/.exec(output);
  if (!match) throw new Error(`no dd figure in: ${output.slice(-300)}`);
  return Number(match[1]) / Number(match[2]) / 1e6;
}

/** MB/s written (flushed) and read on the raw device, per storage kind. */
export async function browserDiskFigures(): Promise<Record<string, { writeMBps: number; readMBps: number }>> {
  return withServedApp(async (base) => {
    const figures: Record<string, { writeMBps: number; readMBps: number }> = {};
    for (const kind of ['opfs', 'indexeddb']) {
      const browser = await launchChromium(); // a fresh profile: fresh disks
      try {
        const page = await browser.context.newPage();
        await page.goto(`${base}?cpus=1&mem=128&storage=${kind}`);
        await page.waitForFunction(() => (window.tabvisor?.vms.length ?? 0) > 0, null, { timeout: 60_000 });
        await page.evaluate(() => window.tabvisor?.vm('vm-1')?.stop());
        await page.locator('input[data-disk-action="attach-file"]').setInputFiles({
          name: 'scratch.img',
          mimeType: 'application/octet-stream',
          buffer: Buffer.alloc(SCRATCH_BYTES),
        });
        await page.waitForFunction(() =>
          document.querySelector('.disk-message')?.textContent?.includes('attached'),
        );
        await page.evaluate(() => window.tabvisor?.vm('vm-1')?.start());
        await page.evaluate(() => window.tabvisor?.vm('vm-1')?.console.waitFor('# ', 60_000));
        const writeMBps = await ddMBps(
          page,
          `dd if=/dev/zero of=/dev/vdb bs=1048576 count=${DD_MIB} oflag=direct conv=fsync`,
        );
        const readMBps = await ddMBps(
          page,
          `dd if=/dev/vdb of=/dev/null bs=1048576 count=${DD_MIB} iflag=direct`,
        );
        figures[kind] = { writeMBps, readMBps };
      } finally {
        await browser.close();
      }
    }
    return figures;
  });
}
