/**
 * The single-worker VM host's entry: a small module that starts listening at once and then loads the host
 * ({@link serveVmHost}, a chunk of its own), handing it the messages that arrived meanwhile.
 *
 * Why not the host itself: Chromium holds back messages posted to a module worker until the page's thread has
 * seen that worker's top-level script finish, so a host that takes 100-300 ms to load (its chunk compiled while
 * the page sets up its terminals) would get the page's `create` only after the page's longest task then
 * (measured on the example page: 70-100 ms after the host was ready). This module finishes in a few ms, while
 * the page is usually still free; messages posted after that reach the worker directly, and wait here for the
 * host. A host chunk that cannot load is thrown out of the worker (an `error` event on the page's Worker).
 */
import type { Endpoint } from 'comlink';

type Listener = (event: MessageEvent) => void;

const scope = globalThis as unknown as Endpoint & {
  addEventListener(type: 'message', listener: Listener): void;
  removeEventListener(type: 'message', listener: Listener): void;
};

const early: MessageEvent[] = [];
const hold: Listener = (event) => early.push(event);
scope.addEventListener('message', hold);

void import('./vm-host.ts').then(
  ({ serveVmHost }) => {
    scope.removeEventListener('message', hold);
    serveVmHost(scope, early);
  },
  (error: unknown) => {
    setTimeout(() => {
      throw error;
    });
  },
);
