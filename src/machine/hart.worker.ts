/**
 * The vCPU worker: a thin shell around {@link runHartThread}. The same module runs as a browser Web Worker (the
 * init arrives as the first message) and as a Node worker_threads Worker (the init arrives as workerData).
 */
import { prepareHartCode } from '../cpu/hart.ts';
import { runHartThread, type HartThreadInit, type HartThreadMessage } from './hart-thread.ts';

interface Port {
  postMessage(message: HartThreadMessage): void;
}

function start(init: HartThreadInit, port: Port): void {
  runHartThread(init, (message) => port.postMessage(message));
}

const scope = globalThis as unknown as {
  WorkerGlobalScope?: unknown;
  addEventListener?: (
    type: 'message',
    listener: (event: { data: HartThreadInit }) => void,
    options: { once: boolean },
  ) => void;
  postMessage?: (message: HartThreadMessage) => void;
};

if (scope.WorkerGlobalScope !== undefined && scope.addEventListener && scope.postMessage) {
  // A browser vCPU worker may wait a while for its VM (a spare started ahead of need): compile the
  // WebAssembly tier meanwhile (browser vCPU threads always run over shared memory). A VM that comes first
  // waits for that compile rather than doing it again.
  const compiled = prepareHartCode(true);
  const post = scope.postMessage.bind(globalThis);
  scope.addEventListener(
    'message',
    (event) => void compiled.then(() => start(event.data, { postMessage: post })),
    { once: true },
  );
} else {
  // Node: the specifier is computed so browser bundlers leave it alone.
  const specifier = ['node', 'worker_threads'].join(':');
  const threads = (await import(/* @vite-ignore */ specifier)) as {
    workerData: { init: HartThreadInit };
    parentPort: Port;
  };
  start(threads.workerData.init, threads.parentPort);
}
