import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'vite';
import { ROOT } from './browser.ts';

/** JS download size of the library build, gzip-compressed, in bytes. */
export interface LibrarySize {
  /** `tabvisor.js`, what a page imports. */
  readonly entryGzipBytes: number;
  /** The entry plus its worker chunks (`assets/*.js`). */
  readonly totalGzipBytes: number;
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
  const workers = readdirSync(join(outDir, 'assets')).filter((f) => f.endsWith('.js'));
  return {
    entryGzipBytes,
    totalGzipBytes: entryGzipBytes + workers.reduce((n, f) => n + gz(join(outDir, 'assets', f)), 0),
  };
}
