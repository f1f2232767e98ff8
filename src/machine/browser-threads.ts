import type { HartThreadInit, HartThreadMessage } from './hart-thread.ts';
import type { HartThreadHandle, ThreadFactory } from './vm.ts';

/** A {@link ThreadFactory} whose threads can be killed from outside, to prove a VM survives losing one. */
export interface KillableThreadFactory extends ThreadFactory {
  /**
   * Terminate vCPU `hartId`'s thread as if it died, and report that to the VM as a crash.
   * Returns false when no such thread is alive.
   */
  kill(hartId: number): boolean;
}

interface LiveWorker {
  readonly worker: Worker;
  readonly onError: (error: Error) => void;
}

/**
 * A vCPU worker started ahead of need ({@link prepareBrowserThreads}): its module loads and compiles while the
 * VM's images or snapshot are still being read, and the first VM to spawn a thread adopts it.
 */
interface SpareWorker {
  readonly worker: Worker;
  /** Why it failed to load, if it did before anyone adopted it. */
  failure: string | undefined;
  readonly stopListening: () => void;
  readonly expiry: ReturnType<typeof setTimeout>;
}

/** A spare nobody adopted within this time is terminated (its VM failed to be created, say). */
export const SPARE_WORKER_LIFETIME_MS = 10_000;
/** At most this many spares wait at once (one page rarely starts more vCPUs at a time). */
export const MAX_SPARE_WORKERS = 16;

const spares: SpareWorker[] = [];

/** A new vCPU worker (one place, in the form bundlers recognise as a worker entry). */
function startHartWorker(name: string): Worker {
  return new Worker(new URL('./hart.worker.ts', import.meta.url), { type: 'module', name });
}

/**
 * Start `count` vCPU workers now, for VMs about to be created on this page: each {@link BrowserThreads.spawn}
 * adopts one instead of starting a worker then, so the worker's module load (tens of ms) overlaps reading the
 * VM's images or boot snapshot. Spares show in devtools as `vcpu (spare)` until adopted; unadopted ones are
 * terminated after {@link SPARE_WORKER_LIFETIME_MS}.
 */
export function prepareBrowserThreads(count: number): void {
  const room = Math.max(0, Math.min(count, MAX_SPARE_WORKERS - spares.length));
  for (let i = 0; i < room; i++) {
    const worker = startHartWorker('vcpu (spare)');
    const onError = (event: ErrorEvent): void => {
      event.preventDefault();
      spare.failure = event.message || 'its worker failed to load';
    };
    worker.addEventListener('error', onError);
    const spare: SpareWorker = {
      worker,
      failure: undefined,
      stopListening: () => worker.removeEventListener('error', onError),
      expiry: setTimeout(() => {
        const at = spares.indexOf(spare);
        if (at >= 0) spares.splice(at, 1);
        worker.terminate();
      }, SPARE_WORKER_LIFETIME_MS),
    };
    spares.push(spare);
  }
}

/** Spare vCPU workers waiting to be adopted (for tests). */
export function spareBrowserThreads(): number {
  return spares.length;
}

/** A spare worker that loaded (or is loading) fine, or a new worker named `name`. */
function adoptOrStart(name: string): Worker {
  for (let spare = spares.shift(); spare; spare = spares.shift()) {
    clearTimeout(spare.expiry);
    spare.stopListening();
    if (spare.failure === undefined) return spare.worker;
    // It failed to load before anyone listened: start afresh, so the failure is reported to the VM if it recurs.
    spare.worker.terminate();
  }
  return startHartWorker(name);
}

/**
 * vCPU threads as browser module Web Workers on shared memory, one factory per VM boot. Each worker runs
 * `hart.worker.ts` and receives its {@link HartThreadInit} as the first message (a worker started ahead by
 * {@link prepareBrowserThreads} is adopted first). Uses only Worker and postMessage, so it also runs in a worker
 * or in any runtime with module Workers.
 */
export class BrowserThreads implements KillableThreadFactory {
  readonly shared = true;
  private readonly live = new Map<number, LiveWorker>();

  /** `label` prefixes the worker names (`<label>vcpu-N`), so devtools show which VM a thread belongs to. */
  constructor(private readonly label = '') {}

  /** Start one vCPU worker. */
  spawn(
    init: HartThreadInit,
    onMessage: (message: HartThreadMessage) => void,
    onError: (error: Error) => void,
  ): HartThreadHandle {
    const name = `${this.label}vcpu-${init.hartId}`;
    const worker = adoptOrStart(name);
    const hartId = init.hartId;
    worker.addEventListener('message', (event: MessageEvent<HartThreadMessage>) => onMessage(event.data));
    worker.addEventListener('error', (event: ErrorEvent) => {
      // Handled here: the VM goes to `crashed` with this reason instead of an uncaught error on the page.
      event.preventDefault();
      this.live.delete(hartId);
      onError(new Error(event.message || 'its worker failed to load or threw'));
    });
    worker.addEventListener('messageerror', () =>
      onError(new Error('its worker sent an unreadable message')),
    );
    this.live.set(hartId, { worker, onError });
    worker.postMessage(init);
    return {
      terminate: () => {
        worker.terminate();
        this.live.delete(hartId);
      },
    };
  }

  /** Terminate vCPU `hartId`'s worker and report it to the VM as a crash (fault injection for tests). */
  kill(hartId: number): boolean {
    const entry = this.live.get(hartId);
    if (!entry) return false;
    this.live.delete(hartId);
    entry.worker.terminate();
    entry.onError(new Error('its worker was terminated'));
    return true;
  }

  /** Workers started by this factory and not yet terminated. */
  get liveWorkers(): number {
    return this.live.size;
  }
}
