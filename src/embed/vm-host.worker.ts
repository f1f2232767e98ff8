/** The single-worker VM host: a thin shell that exposes {@link createVmHost} to the page with comlink. */
import { expose } from 'comlink';
import { createVmHost } from './vm-host.ts';

// Without cross-origin isolation there is no SharedArrayBuffer global, and the VMM's `buffer instanceof
// SharedArrayBuffer` checks (which only decide whether Atomics.notify/waitAsync are worth calling) would throw.
// A class nothing is an instance of makes every such check answer "not shared", which is the truth here.
const scope = globalThis as unknown as {
  SharedArrayBuffer?: unknown;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};
if (typeof scope.SharedArrayBuffer === 'undefined') {
  scope.SharedArrayBuffer = class SharedMemoryUnavailable {};
}

expose(createVmHost((event, transfer) => scope.postMessage(event, transfer ?? [])));
