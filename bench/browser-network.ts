/**
 * Network figures in Chromium: two VMs (1 vCPU, 64 MiB each) on one network, in one page and in two tabs of
 * the same browser (BroadcastChannel uplink). Ping RTT as the guest reports it; TCP throughput of an `nc`
 * stream as 10 MiB of frames delivered to the receiver's switch port, timed in the page.
 */
import type { Page } from 'playwright-core';
import { launchChromium, withServedApp } from '../test/helpers/browser.ts';

const STREAM_BYTES = 10 << 20;
const ADDRESS =
  "for i in $(seq 1 60); do ip -4 addr show eth0 | grep -q 'inet ' && break; sleep 0.5; done; " +
  "ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'";

async function createVm(page: Page, name: string, network: string): Promise<void> {
  await page.evaluate(
    async ([vmName, net]) => {
      const vm = await window.tabvisor?.createVM({
        name: vmName,
        cpus: 1,
        memoryMiB: 64,
        nics: [{ network: net }],
      });
      await vm?.console.waitFor('# ', 90_000);
    },
    [name, network] as const,
  );
}

function ask(page: Page, name: string, tag: string, command: string): Promise<string> {
  return page.evaluate(
    async ([vmName, tagName, text]) => {
      const vm = window.tabvisor?.vm(vmName);
      if (!vm) throw new Error(`no VM ${vmName}`);
      vm.console.write(`echo ${tagName.slice(0, 1)}''${tagName.slice(1)}=$(${text})-END\n`);
      const out = await vm.console.waitFor(new RegExp(`${tagName}=([^\\r\\n]*)-END`), 120_000);
      return new RegExp(`${tagName}=([^\\r\\n]*)-END`).exec(out)?.[1] ?? '';
    },
    [name, tag, command] as const,
  );
}

/** Bytes the switch of `network` in `page` delivered to port `port` so far. */
function delivered(page: Page, network: string, port: string): Promise<number> {
  return page.evaluate(
    ([net, name]) =>
      window.tabvisor
        ?.network?.(net)
        ?.ports()
        .find((p) => p.name === name)?.counters.txBytes ?? 0,
    [network, port] as const,
  );
}

async function measurePair(
  sender: Page,
  receiver: Page,
  network: string,
  runs: number,
): Promise<{ rttMs: number[]; tcpMBps: number[] }> {
  await Promise.all([
    createVm(sender, `${network}-tx`, network),
    createVm(receiver, `${network}-rx`, network),
  ]);
  const tx = `${network}-tx`;
  const rx = `${network}-rx`;
  await ask(sender, tx, 'ADDR', ADDRESS);
  const target = await ask(receiver, rx, 'ADDR', ADDRESS);
  await ask(sender, tx, 'WARM', `ping -c 2 ${target} >/dev/null; echo warm`);
  const rttMs: number[] = [];
  const tcpMBps: number[] = [];
  for (let i = 0; i < runs; i++) {
    const rtt = await ask(
      sender,
      tx,
      'RTT',
      `ping -c 10 -i 0.2 ${target} | sed -n 's|.*= [0-9.]*/\\([0-9.]*\\)/.*|\\1|p'`,
    );
    rttMs.push(Number(rtt));
    const port = 6000 + i;
    await receiver.evaluate(
      ([name, p]) => window.tabvisor?.vm(name)?.console.write(`nc -l -p ${p} > /dev/null\n`),
      [rx, port] as const,
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = await delivered(receiver, network, `${rx}/eth0`);
    const start = performance.now();
    await sender.evaluate(
      ([name, ip, p, count]) =>
        window.tabvisor
          ?.vm(name)
          ?.console.write(`dd if=/dev/zero bs=65536 count=${count} 2>/dev/null | nc ${ip} ${p}\n`),
      [tx, target, port, (STREAM_BYTES >> 16) + 4] as const,
    );
    const deadline = Date.now() + 180_000;
    while ((await delivered(receiver, network, `${rx}/eth0`)) - before < STREAM_BYTES) {
      if (Date.now() > deadline) throw new Error(`the nc stream on ${network} did not finish`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    tcpMBps.push(STREAM_BYTES / 1e6 / ((performance.now() - start) / 1000));
    for (const [page, name] of [
      [sender, tx],
      [receiver, rx],
    ] as const) {
      await page.evaluate((vmName) => window.tabvisor?.vm(vmName)?.console.write('\x03'), name);
      await ask(page, name, 'IDLE', 'echo idle');
    }
  }
  return { rttMs, tcpMBps };
}

/** RTT and TCP figures in one page and across two tabs. */
export async function browserNetworkFigures(runs: number): Promise<{
  onePage: { rttMs: number[]; tcpMBps: number[] };
  twoTabs: { rttMs: number[]; tcpMBps: number[] };
}> {
  return withServedApp(async (base) => {
    const browser = await launchChromium();
    try {
      const first = await browser.context.newPage();
      const second = await browser.context.newPage();
      for (const page of [first, second]) {
        await page.goto(`${base}?autostart=0`);
        await page.waitForFunction(() => window.tabvisor !== undefined);
      }
      const onePage = await measurePair(first, first, 'bench-page', runs);
      const twoTabs = await measurePair(first, second, 'bench-tabs', runs);
      return { onePage, twoTabs };
    } finally {
      await browser.close();
    }
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await browserNetworkFigures(Number(process.env.BENCH_RUNS ?? 3))));
}
