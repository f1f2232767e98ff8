import { Worker } from 'node:worker_threads';
import type { HartThreadInit, HartThreadMessage } from '../machine/hart-thread.ts';
import type { HartThreadHandle, ThreadFactory } from '../machine/vm.ts';

const bootstrap = new URL('./hart-worker-bootstrap.mjs', import.meta.url);

/** vCPU threads as Node worker_threads Workers on shared memory. */
export const nodeThreads: ThreadFactory = {
  shared: true,
  spawn(
    init: HartThreadInit,
    onMessage: (message: HartThreadMessage) => void,
    onError: (error: Error) => void,
  ): HartThreadHandle {
    const worker = new Worker(bootstrap, { workerData: { init }, name: `vcpu-${init.hartId}` });
    worker.on('message', onMessage);
    worker.on('error', onError);
    // A worker blocked in Atomics.wait must not keep the process alive after the VM is done with it.
    worker.unref();
    return { terminate: () => worker.terminate() };
  },
};
