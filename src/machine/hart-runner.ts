import {
  HART_INSTRET_HI,
  HART_INSTRET_LO,
  HART_START_ADDR,
  HART_START_OPAQUE,
  HART_STATE,
  HART_STATE_CRASHED,
  HART_STATE_PAUSED,
  HART_STATE_RUNNING,
  HART_STATE_START_PENDING,
  HART_STATE_STOPPED,
  HART_STATE_WFI,
  HART_WAKE,
  POWER_FAIL,
  RUN_PAUSE,
  RUN_STOP,
  VM_EVENT,
  VM_POWER,
  VM_POWER_CODE,
  VM_RUN_CONTROL,
  hartWord,
} from '../common/shared-block.ts';
import { STOP_FATAL, STOP_HALT, STOP_PAUSE_LOOP, STOP_WFI, type Hart } from '../cpu/hart.ts';

/** Instructions per slice: interrupts, timer and control requests are looked at between slices. */
export const SLICE_INSNS = 20_000;
/** How long a hart caught spinning in a pause loop gives its host core away. */
const PAUSE_LOOP_YIELD_MS = 0.05;
/** Longest single sleep, so a sleeping hart still notices requests that forgot to wake it. */
const MAX_SLEEP_MS = 200;

/** Publish the hart's retired-instruction count for statistics. */
function publishInstret(block: Int32Array, hartId: number, instret: number): void {
  block[hartWord(hartId, HART_INSTRET_LO)] = (instret % 0x1_0000_0000) | 0;
  block[hartWord(hartId, HART_INSTRET_HI)] = Math.floor(instret / 0x1_0000_0000) | 0;
}

/** Report a fatal guest error: the VM powers off with POWER_FAIL. */
export function reportFatal(
  block: Int32Array,
  hartId: number,
  message: string,
  record: (m: string) => void,
): void {
  record(message);
  Atomics.store(block, hartWord(hartId, HART_STATE), HART_STATE_CRASHED);
  Atomics.store(block, VM_POWER_CODE, 1);
  Atomics.store(block, VM_POWER, POWER_FAIL);
  Atomics.store(block, VM_RUN_CONTROL, RUN_STOP);
  Atomics.add(block, VM_EVENT, 1);
  if (block.buffer instanceof SharedArrayBuffer) Atomics.notify(block, VM_EVENT);
}

/**
 * The life of one hart on its own thread: run slices, sleep in WFI until an interrupt line or the timer deadline
 * (Atomics.wait, never a spin), wait while stopped (HSM) or paused, and leave when the VM stops.
 * `onFatal` receives the message when the guest breaks the machine (a trap into the emulated firmware).
 */
export function runHartOnThread(hart: Hart, block: Int32Array, onFatal: (message: string) => void): void {
  const id = hart.hartId;
  const stateIndex = hartWord(id, HART_STATE);
  const wakeIndex = hartWord(id, HART_WAKE);
  for (;;) {
    const control = Atomics.load(block, VM_RUN_CONTROL);
    if (control === RUN_STOP) break;
    const state = Atomics.load(block, stateIndex);
    if (control === RUN_PAUSE) {
      const seen = Atomics.load(block, wakeIndex);
      if (state !== HART_STATE_STOPPED) Atomics.store(block, stateIndex, HART_STATE_PAUSED);
      Atomics.wait(block, wakeIndex, seen, MAX_SLEEP_MS);
      if (state !== HART_STATE_STOPPED) Atomics.compareExchange(block, stateIndex, HART_STATE_PAUSED, state);
      continue;
    }
    if (state === HART_STATE_STOPPED || state === HART_STATE_PAUSED) {
      const seen = Atomics.load(block, wakeIndex);
      if (Atomics.load(block, stateIndex) === HART_STATE_STOPPED)
        Atomics.wait(block, wakeIndex, seen, MAX_SLEEP_MS);
      if (state === HART_STATE_PAUSED)
        Atomics.compareExchange(block, stateIndex, HART_STATE_PAUSED, HART_STATE_RUNNING);
      continue;
    }
    if (state === HART_STATE_START_PENDING) {
      hart.enterSupervisor(block[hartWord(id, HART_START_ADDR)], block[hartWord(id, HART_START_OPAQUE)]);
      Atomics.store(block, stateIndex, HART_STATE_RUNNING);
    }
    hart.run(SLICE_INSNS);
    publishInstret(block, id, hart.instret);
    const reason = hart.stopReason;
    if (reason === STOP_WFI) {
      const seen = Atomics.load(block, wakeIndex);
      Atomics.store(block, stateIndex, HART_STATE_WFI);
      if (!hart.interruptPending() && Atomics.load(block, VM_RUN_CONTROL) === 0) {
        const ms = Math.min(MAX_SLEEP_MS, sleepBudgetMs(hart));
        if (ms > 0) Atomics.wait(block, wakeIndex, seen, ms);
      }
      Atomics.compareExchange(block, stateIndex, HART_STATE_WFI, HART_STATE_RUNNING);
    } else if (reason === STOP_PAUSE_LOOP) {
      // Spinning on a lock: give the host core away briefly so a descheduled lock holder can run.
      Atomics.wait(block, wakeIndex, Atomics.load(block, wakeIndex), PAUSE_LOOP_YIELD_MS);
    } else if (reason === STOP_HALT) {
      // HSM hart_stop or system reset: wait for a start request (the state word says which).
      Atomics.compareExchange(block, stateIndex, HART_STATE_RUNNING, HART_STATE_STOPPED);
    } else if (reason === STOP_FATAL) {
      reportFatal(block, id, hart.fatalMessage, onFatal);
      break;
    }
  }
}

/** Milliseconds until this hart's timer deadline (a large number when none is set). */
function sleepBudgetMs(hart: Hart): number {
  const deadline = hart.timecmp();
  if (deadline === Infinity) return MAX_SLEEP_MS;
  return hart.msUntilTicks(deadline);
}
