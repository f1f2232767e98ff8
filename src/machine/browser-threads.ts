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
 * vCPU threads as browser module Web Workers on shared memory, one factory per VM boot. Each worker runs
 * `hart.worker.ts` and receives its {@link HartThreadInit} as the first message. Uses only Worker and
 * postMessage, so it also runs in a worker or in any runtime with module Workers.
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
    const worker = new Worker(new URL('./hart.worker.ts', import.meta.url), { type: 'module', name });
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
