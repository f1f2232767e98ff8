/**
 * The single-worker VM host's entry: a small module that starts listening at once and then loads the host
 * ({@link serveVmHost}, a chunk of its own), handing it the messages that arrived meanwhile. When the worker's
 * name carries a plan (vm-host-plan.ts), it also starts reading the VM's guest (boot snapshot and manifest)
 * here, while the host's chunk loads, and the host creates and starts the VM without waiting for the page.
 *
 * Why: Chromium holds back messages posted to a module worker until the page's thread has seen that worker's
 * top-level script finish, so a host that takes 100-300 ms to load (its chunk compiled while the page sets up
 * its terminals) got the page's `create` only after the page's longest task then (measured on the example page:
 * 70-100 ms after the host was ready), and a guest read on the page waited for the page's thread too. This
 * module finishes in a few ms; messages posted after that reach the worker directly, and wait here for the
 * host. A host chunk that cannot load is thrown out of the worker (an `error` event on the page's Worker).
 */
import type { Endpoint } from 'comlink';
import { resolveGuest } from './guest.ts';
import { hostPlanOf } from './vm-host-plan.ts';

type Listener = (event: MessageEvent) => void;

const scope = globalThis as unknown as Endpoint & {
  readonly name: string;
  addEventListener(type: 'message', listener: Listener): void;
  removeEventListener(type: 'message', listener: Listener): void;
};

const early: MessageEvent[] = [];
const hold: Listener = (event) => early.push(event);
scope.addEventListener('message', hold);

const plan = hostPlanOf(scope.name);
const guest = plan
  ? resolveGuest(plan.config, plan.config.cpus, plan.config.memoryMiB, plan.base)
  : undefined;
guest?.catch(() => undefined); // the host reports it, as the VM's creation failing

void import('./vm-host.ts').then(
  ({ serveVmHost }) => {
    scope.removeEventListener('message', hold);
    serveVmHost(scope, early, plan && guest ? { plan, guest } : undefined);
  },
  (error: unknown) => {
    setTimeout(() => {
      throw error;
    });
  },
);
