/** The single-worker VM host: a thin shell that exposes {@link createVmHost} to the page with comlink. */
import { expose } from 'comlink';
import { createVmHost } from './vm-host.ts';

const scope = globalThis as unknown as {
  postMessage(message: unknown, transfer?: Transferable[]): void;
};

expose(createVmHost((event, transfer) => scope.postMessage(event, transfer ?? [])));
