import { HART_WAKE, hartWord, sleepLocally } from '../common/shared-block.ts';
import { prepareHartCode, type Hart } from '../cpu/hart.ts';
import { Board } from './board.ts';
import type { HartThreadInit, HartThreadMessage } from './hart-thread.ts';
import { stepHart, wakeHart } from './hart-runner.ts';
import { hartStateArea } from './hart-state-codec.ts';
import type { HartThreadHandle, ThreadFactory } from './vm.ts';

/** Longest stretch of guest execution before the event loop gets a turn (console, timers, UI). */
const RUN_BEFORE_YIELD_MS = 8;
/** Longest sleep while every vCPU idles: input and other wake-ups are noticed within this. */
const IDLE_POLL_MS = 4;

interface Entry {
  readonly hart: Hart;
  readonly block: Int32Array;
  readonly stateArea: Float64Array;
  readonly wakeIndex: number;
  readonly onMessage: (message: HartThreadMessage) => void;
  readonly onError: (error: Error) => void;
  /** Asleep until the wake word differs from wakeSeen or the clock passes sleepUntil. */
  asleep: boolean;
  wakeSeen: number;
  sleepUntil: number;
  done: boolean;
}

/** Yield to the host event loop with a macrotask that is not clamped like nested setTimeout(0) in browsers. */
function yieldToEventLoop(): Promise<void> {
  const scope = globalThis as { setImmediate?: (callback: () => void) => void };
  if (scope.setImmediate) return new Promise((resolve) => scope.setImmediate!(resolve));
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/**
 * All vCPUs of a VM on the calling thread, time-sliced round-robin: the mode for pages that are not
 * cross-origin isolated, where there is no SharedArrayBuffer to share between workers. The guest sees the same
 * harts and devices; they just do not run in parallel. Idle harts cost nothing: when every hart sleeps (WFI,
 * stopped), the scheduler sleeps until the earliest timer deadline or a wake-up (input, an interrupt raised on
 * this thread: {@link sleepLocally}), checking every few ms.
 */
export class CooperativeThreads implements ThreadFactory {
  readonly shared: boolean;
  private readonly entries: Entry[] = [];
  private looping = false;

  /** `shared`: whether the VM's memory is a SharedArrayBuffer (false where the page is not isolated). */
  constructor(shared = false) {
    this.shared = shared;
    // Its harts are built when the VM starts: for a VM restored from a snapshot, after its pages were read.
    void prepareHartCode(shared);
  }

  spawn(
    init: HartThreadInit,
    onMessage: (message: HartThreadMessage) => void,
    onError: (error: Error) => void,
  ): HartThreadHandle {
    const board = new Board(init.board);
    const entry: Entry = {
      hart: board.createHart(init.hartId),
      block: board.block,
      stateArea: hartStateArea(board.block, init.board.layout.hartStates, init.hartId),
      wakeIndex: hartWord(init.hartId, HART_WAKE),
      onMessage,
      onError,
      asleep: false,
      wakeSeen: 0,
      sleepUntil: 0,
      done: false,
    };
    this.entries.push(entry);
    if (!this.looping) void this.loop();
    return {
      terminate: () => {
        entry.done = true;
      },
    };
  }

  /** Number of vCPUs being scheduled. */
  get size(): number {
    return this.entries.filter((e) => !e.done).length;
  }

  private async loop(): Promise<void> {
    this.looping = true;
    let sliceStart = performance.now();
    while (this.entries.length > 0) {
      let ran = false;
      let earliest = Infinity;
      for (const entry of this.entries) {
        if (entry.done) continue;
        const now = performance.now();
        if (entry.asleep) {
          if (Atomics.load(entry.block, entry.wakeIndex) === entry.wakeSeen && now < entry.sleepUntil) {
            earliest = Math.min(earliest, entry.sleepUntil);
            continue;
          }
          entry.asleep = false;
          wakeHart(entry.hart, entry.block);
        }
        try {
          const step = stepHart(entry.hart, entry.block, entry.stateArea, (message) =>
            entry.onMessage({ type: 'fatal', hartId: entry.hart.hartId, message }),
          );
          if (step.kind === 'exit') {
            entry.done = true;
            entry.onMessage({ type: 'exit', hartId: entry.hart.hartId });
          } else if (step.kind === 'sleep') {
            entry.asleep = true;
            entry.wakeSeen = step.wakeSeen;
            entry.sleepUntil = now + step.ms;
            earliest = Math.min(earliest, entry.sleepUntil);
          } else {
            ran = true;
          }
        } catch (error) {
          entry.done = true;
          entry.onError(error instanceof Error ? error : new Error(String(error)));
        }
      }
      for (let i = this.entries.length - 1; i >= 0; i--) if (this.entries[i].done) this.entries.splice(i, 1);
      const now = performance.now();
      if (!ran) {
        const ms = Math.max(0, Math.min(IDLE_POLL_MS, earliest - now));
        await sleepLocally(ms);
        sliceStart = performance.now();
      } else if (now - sliceStart >= RUN_BEFORE_YIELD_MS) {
        await yieldToEventLoop();
        sliceStart = performance.now();
      }
    }
    this.looping = false;
  }
}
