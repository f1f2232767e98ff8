import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'vite';
import { ROOT } from './browser.ts';

/** JS download size of the library build, gzip-compressed, in bytes. */
export interface LibrarySize {
  /** `tabvisor.js`, what a page imports. */
  readonly entryGzipBytes: number;
  /** The entry plus all its worker chunks (`assets/*.js`): more than any one page downloads. */
  readonly totalGzipBytes: number;
  /**
   * What a cross-origin-isolated page downloads: the entry, the page VMM chunk (`parallel-hypervisor`), the
   * vCPU worker (one per vCPU, one download) and the network relay (with a NIC), plus any chunk of neither mode
   * alone (shared code, the terminal).
   */
  readonly parallelGzipBytes: number;
  /** What a page without isolation downloads: the entry and the single-worker VM host (and shared chunks). */
  readonly singleWorkerGzipBytes: number;
}

/** Build the library (vite.lib.config.ts, as `npm run build:lib` does) into `outDir`; returns its JS size. */
export async function buildLibrary(outDir: string): Promise<LibrarySize> {
  await build({
    root: ROOT,
    configFile: join(ROOT, 'vite.lib.config.ts'),
    logLevel: 'warn',
    build: { outDir, emptyOutDir: true },
  });
  const gz = (file: string): number => gzipSync(readFileSync(file), { level: 9 }).length;
  const entryGzipBytes = gz(join(outDir, 'tabvisor.js'));
  const chunks = readdirSync(join(outDir, 'assets'))
    .filter((f) => f.endsWith('.js'))
    .map((name) => ({ name, bytes: gz(join(outDir, 'assets', name)) }));
  const sum = (test: (name: string) => boolean): number =>
    chunks.filter((c) => test(c.name)).reduce((n, c) => n + c.bytes, 0);
  // (The network relay's SharedWorker runs only beside a page VMM: a VM-host worker has no SharedWorker.)
  const parallel = (name: string): boolean =>
    name.startsWith('hart.worker') ||
    name.startsWith('parallel-hypervisor') ||
    name.startsWith('net-hub.worker');
  // The VM-host worker is a small entry (vm-host.worker) that loads the host itself (vm-host).
  const host = (name: string): boolean => name.startsWith('vm-host.worker') || name.startsWith('vm-host-');
  for (const [test, what] of [
    [(name: string) => name.startsWith('hart.worker'), 'vCPU worker'],
    [(name: string) => name.startsWith('parallel-hypervisor'), 'page VMM'],
    [host, 'VM-host worker'],
  ] as const) {
    if (sum(test) === 0)
      throw new Error(`the library build has no ${what} chunk: ${chunks.map((c) => c.name).join(', ')}`);
  }
  const shared = sum((name) => !parallel(name) && !host(name));
  return {
    entryGzipBytes,
    totalGzipBytes: entryGzipBytes + sum(() => true),
    parallelGzipBytes: entryGzipBytes + sum(parallel) + shared,
    singleWorkerGzipBytes: entryGzipBytes + sum(host) + shared,
  };
}
