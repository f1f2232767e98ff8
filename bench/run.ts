/**
 * `npm run bench`: speed and size figures, printed as a table and written to bench/results/latest.json.
 * Each figure is the median of several runs. Nothing here asserts a time; targets are listed for reading.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { CHROMIUM } from '../test/helpers/browser.ts';
import { browserFigures } from './browser-guest.ts';
import { browserDiskFigures } from './browser-disk.ts';
import { coldBootFigures } from './browser-cold-boot.ts';
import { embedFigures, librarySize, networkCloneFigures } from './embed.ts';
import { NodeGuest } from './node-guest.ts';
import { nodeNetworkFigures } from './network.ts';
import { browserNetworkFigures } from './browser-network.ts';

interface Figure {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly target?: string;
  readonly runs: number[];
}

const PROMPT = ':/root# ';
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Seconds from VM creation to the shell prompt. */
async function bootToPrompt(cpus: number): Promise<number> {
  const start = performance.now();
  const guest = await NodeGuest.start(cpus);
  await guest.waitFor(PROMPT);
  const seconds = (performance.now() - start) / 1000;
  await guest.powerOff();
  return seconds;
}

/** Guest MIPS on a CPU-bound workload (md5sum over 4 MB from /dev/zero) on one vCPU. */
async function cpuBoundMips(): Promise<number> {
  const guest = await NodeGuest.start(1);
  await guest.waitFor(PROMPT);
  guest.consume();
  const before = guest.instret();
  const start = performance.now();
  guest.type('dd if=/dev/zero bs=1024 count=4000 2>/dev/null | md5sum; echo BENCH-DONE');
  await guest.waitFor('BENCH-DONE\r\n');
  const mips = (guest.instret() - before) / ((performance.now() - start) * 1000);
  await guest.powerOff();
  return mips;
}

async function measure(
  name: string,
  unit: string,
  target: string | undefined,
  run: () => Promise<number>,
): Promise<Figure> {
  const runs: number[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await run());
  return { name, value: median(runs), unit, target, runs };
}

const figures: Figure[] = [
  await measure('node: boot to shell prompt, 1 vCPU', 's', '<= 2.0', () => bootToPrompt(1)),
  await measure('node: boot to shell prompt, 2 vCPUs', 's', undefined, () => bootToPrompt(2)),
  await measure('node: guest MIPS, CPU-bound (md5sum), 1 vCPU', 'MIPS', '>= 100', cpuBoundMips),
];

const nodeNet = await nodeNetworkFigures(RUNS);
figures.push(
  {
    name: 'node: ping RTT between two VMs on one switch (avg of 10)',
    value: median(nodeNet.rttMs),
    unit: 'ms',
    target: '< 2 (one page)',
    runs: nodeNet.rttMs,
  },
  {
    name: "node: the receiving guest's part of the RTT (request in, reply out; avg of 10)",
    value: median(nodeNet.turnaroundMs),
    unit: 'ms',
    target: undefined,
    runs: nodeNet.turnaroundMs,
  },
  {
    name: 'node: VM-to-VM TCP throughput (nc, 10 MiB), 1 vCPU each',
    value: median(nodeNet.tcpMBps),
    unit: 'MB/s',
    target: '>= 20 (one page)',
    runs: nodeNet.tcpMBps,
  },
);

if (existsSync(CHROMIUM)) {
  const browser = await browserFigures(RUNS);
  figures.push(
    {
      name: 'chromium: page load to shell prompt, 2 vCPUs',
      value: median(browser.promptSeconds),
      unit: 's',
      target: '<= 3.0',
      runs: browser.promptSeconds,
    },
    {
      name: 'chromium: 2 CPU-bound processes on 2 vCPUs, sequential / parallel time (first run)',
      value: median(browser.parallelSpeedup),
      unit: 'x',
      target: '>= 1.7',
      runs: browser.parallelSpeedup,
    },
    {
      name: 'chromium: the same, run again on warm vCPUs',
      value: median(browser.warmParallelSpeedup),
      unit: 'x',
      target: '>= 1.7',
      runs: browser.warmParallelSpeedup,
    },
  );
  // Two 1-vCPU VMs on one network: in one page, and in two tabs joined by the BroadcastChannel uplink.
  const net = await browserNetworkFigures(RUNS);
  for (const [where, figure, rttTarget, tcpTarget] of [
    ['one page', net.onePage, '< 2', '>= 20'],
    ['two tabs', net.twoTabs, undefined, '>= 10'],
  ] as const) {
    figures.push(
      {
        name: `chromium net (${where}): ping RTT`,
        value: median(figure.rttMs),
        unit: 'ms',
        target: rttTarget,
        runs: figure.rttMs,
      },
      {
        name: `chromium net (${where}): TCP nc 10 MiB`,
        value: median(figure.tcpMBps),
        unit: 'MB/s',
        target: tcpTarget,
        runs: figure.tcpMBps,
      },
    );
  }
  // The example docs page (two <tabvisor-vm>): navigation start until both VMs ran a first command.
  const embed = await embedFigures(RUNS);
  const embedRows: [string, number[], string | undefined][] = [
    ['cold boot, parallel (isolated)', embed.parallelCold, undefined],
    ['snapshot start, parallel (isolated)', embed.parallelSnapshot, '< 0.5'],
    ['cold boot, single worker (no COOP/COEP)', embed.singleCold, undefined],
    ['snapshot start, single worker (no COOP/COEP)', embed.singleSnapshot, '< 0.5'],
  ];
  for (const [what, runs, target] of embedRows) {
    figures.push({
      name: `chromium embed: page load to usable shell, ${what}`,
      value: median(runs),
      unit: 's',
      target,
      runs,
    });
  }
  // A VM with a NIC started from a boot snapshot: its shell, then its own MAC and DHCP lease.
  const clones = await networkCloneFigures(RUNS);
  figures.push(
    {
      name: 'chromium embed: VM with a NIC from a snapshot, element added to usable shell',
      value: median(clones.shell),
      unit: 's',
      runs: clones.shell,
    },
    {
      name: 'chromium embed: VM with a NIC from a snapshot, element added to its own DHCP address',
      value: median(clones.address),
      unit: 's',
      runs: clones.address,
    },
  );
  // Cold first boot in a fresh profile (root base image fetched by range as the guest reads it), then a
  // reload in the same profile (chunks from IndexedDB): bench/browser-cold-boot.ts.
  const cold = await coldBootFigures(RUNS);
  const coldRows: [string, number[], string][] = [
    [
      'cold first boot (fresh profile): page load to shell prompt, 2 vCPUs',
      cold.cold.map((l) => l.promptSeconds),
      's',
    ],
    ['cold first boot: bytes fetched (all)', cold.cold.map((l) => l.fetchedBytes / 1e6), 'MB'],
    ['cold first boot: root image bytes fetched', cold.cold.map((l) => l.rootBytes / 1e6), 'MB'],
    ['cold first boot: root image requests', cold.cold.map((l) => l.rootRequests), 'requests'],
    ['reload (same profile): page load to shell prompt', cold.reload.map((l) => l.promptSeconds), 's'],
    ['reload: root image bytes fetched', cold.reload.map((l) => l.rootBytes / 1e6), 'MB'],
  ];
  for (const [what, runs, unit] of coldRows) {
    figures.push({ name: `chromium ${what}`, value: median(runs), unit, runs });
  }
  // Guest dd on a raw scratch disk, O_DIRECT, the write flushed (bench/browser-disk.ts): report only.
  const disk = await browserDiskFigures();
  for (const [kind, { writeMBps, readMBps }] of Object.entries(disk)) {
    const opfs = kind === 'opfs';
    figures.push(
      {
        name: `chromium disk (${kind}): guest dd write to /dev/vdb, direct + fsync`,
        value: writeMBps,
        unit: 'MB/s',
        target: opfs ? '>= 50' : undefined,
        runs: [writeMBps],
      },
      {
        name: `chromium disk (${kind}): guest dd read from /dev/vdb, direct`,
        value: readMBps,
        unit: 'MB/s',
        target: opfs ? '>= 100' : undefined,
        runs: [readMBps],
      },
    );
  }
} else {
  console.log(`(no ${CHROMIUM}: browser figures skipped)`);
}

const lib = await librarySize();
figures.push(
  {
    name: 'library: tabvisor.js gzip',
    value: lib.entryGzipBytes / 1024,
    unit: 'KiB',
    target: '< 200 KB',
    runs: [lib.entryGzipBytes / 1024],
  },
  {
    name: 'library: JS an isolated page downloads (tabvisor.js + page VMM + vCPU worker + terminal) gzip',
    value: lib.parallelGzipBytes / 1024,
    unit: 'KiB',
    target: '< 200 KB',
    runs: [lib.parallelGzipBytes / 1024],
  },
  {
    name: 'library: JS a page without isolation downloads (tabvisor.js + VM host worker + terminal) gzip',
    value: lib.singleWorkerGzipBytes / 1024,
    unit: 'KiB',
    target: '< 200 KB',
    runs: [lib.singleWorkerGzipBytes / 1024],
  },
  {
    name: 'library: tabvisor.js + all worker chunks gzip',
    value: lib.totalGzipBytes / 1024,
    unit: 'KiB',
    runs: [lib.totalGzipBytes / 1024],
  },
);

const rows = figures.map((f) => [
  f.name,
  f.value.toFixed(2),
  f.unit,
  f.target ?? '',
  f.runs.map((r) => r.toFixed(2)).join(' '),
]);
const header = ['figure', 'median', 'unit', 'target', 'runs'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ');
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const row of rows) console.log(line(row));

const results = new URL('./results/', import.meta.url);
await mkdir(results, { recursive: true });
await writeFile(
  new URL('latest.json', results),
  JSON.stringify({ date: new Date().toISOString(), node: process.version, runs: RUNS, figures }, null, 2) +
    '\n',
);
console.log(`\nwritten to bench/results/latest.json`);
process.exit(0);
