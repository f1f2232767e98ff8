import { createHash } from 'node:crypto';
import { existsSync, readdirSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { buildSync } from 'esbuild';
import type { HartThreadInit, HartThreadMessage } from '../machine/hart-thread.ts';
import type { HartThreadHandle, ThreadFactory } from '../machine/vm.ts';

const srcDir = fileURLToPath(new URL('../', import.meta.url));
/** The layers a vCPU worker runs (hart.worker.ts and everything it imports). */
const WORKER_LAYERS = ['common', 'mem', 'cpu', 'devices', 'machine'];
/** Fallback entry: loads TypeScript through tsx in the worker (slower to start, no bundle needed). */
const tsxBootstrap = new URL('./hart-worker-bootstrap.mjs', import.meta.url);

let workerEntry: URL | undefined;

/** A fingerprint of the worker's sources (paths, sizes, modification times), so a stale bundle is never used. */
function sourceFingerprint(): string {
  const hash = createHash('sha256');
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts')) {
        const stat = statSync(path);
        hash.update(`${path}\0${stat.size}\0${stat.mtimeMs}\n`);
      }
    }
  };
  for (const layer of WORKER_LAYERS) walk(join(srcDir, layer));
  return hash.digest('hex').slice(0, 16);
}

/**
 * The module each vCPU worker runs. The worker is bundled into one plain JavaScript file on first use (and
 * reused while the sources are unchanged), because a worker that loads TypeScript through tsx's module hooks
 * takes about 175 ms to start against about 70 ms for the bundle. Falls back to tsx if bundling fails.
 */
function hartWorkerEntry(): URL {
  if (workerEntry) return workerEntry;
  try {
    const out = join(tmpdir(), `tabvisor-hart-worker-${sourceFingerprint()}.mjs`);
    if (!existsSync(out)) {
      const partial = `${out}.${process.pid}.tmp`;
      buildSync({
        entryPoints: [join(srcDir, 'machine', 'hart.worker.ts')],
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        outfile: partial,
        logLevel: 'silent',
      });
      renameSync(partial, out);
    }
    workerEntry = pathToFileURL(out);
  } catch {
    workerEntry = tsxBootstrap;
  }
  return workerEntry;
}

/** vCPU threads as Node worker_threads Workers on shared memory. */
export const nodeThreads: ThreadFactory = {
  shared: true,
  spawn(
    init: HartThreadInit,
    onMessage: (message: HartThreadMessage) => void,
    onError: (error: Error) => void,
  ): HartThreadHandle {
    const worker = new Worker(hartWorkerEntry(), { workerData: { init }, name: `vcpu-${init.hartId}` });
    worker.on('message', onMessage);
    worker.on('error', onError);
    // A worker blocked in Atomics.wait must not keep the process alive after the VM is done with it.
    worker.unref();
    return { terminate: () => worker.terminate() };
  },
};
