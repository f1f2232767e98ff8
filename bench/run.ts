/**
 * `npm run bench`: speed and size figures, printed as a table and written to bench/results/latest.json.
 * Each figure is the median of several runs. Nothing here asserts a time; targets are listed for reading.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { CHROMIUM } from '../test/helpers/browser.ts';
import { browserFigures } from './browser-guest.ts';
import { NodeGuest } from './node-guest.ts';

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
      name: 'chromium: 2 CPU-bound processes on 2 vCPUs, sequential / parallel time',
      value: median(browser.parallelSpeedup),
      unit: 'x',
      target: '>= 1.7',
      runs: browser.parallelSpeedup,
    },
  );
} else {
  console.log(`(no ${CHROMIUM}: browser figures skipped)`);
}

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
