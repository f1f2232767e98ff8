import {
  HART_INSTRET_HI,
  HART_INSTRET_LO,
  HART_JIT,
  HART_JIT_TRANSLATES,
  HART_JIT_WASM,
  HART_START_ADDR,
  HART_START_OPAQUE,
  HART_STATE,
  HART_STATE_CRASHED,
  HART_SNAPSHOT,
  HART_STATE_PAUSED,
  HART_STATE_RESTORE_PENDING,
  HART_STATE_RUNNING,
  HART_STATE_START_PENDING,
  HART_STATE_STOPPED,
  HART_STATE_WFI,
  HART_WAKE,
  POWER_FAIL,
  RUN_CONTINUE,
  SNAPSHOT_SAVE,
  SNAPSHOT_SAVED,
  RUN_PAUSE,
  RUN_STOP,
  VM_EVENT,
  VM_POWER,
  VM_POWER_CODE,
  VM_RUN_CONTROL,
  hartWord,
  notifyWord,
} from '../common/shared-block.ts';
import { decodeHartState, encodeHartState } from './hart-state-codec.ts';
import { MIP_MTIP, MIP_STIP } from '../cpu/csr.ts';
import { STOP_FATAL, STOP_HALT, STOP_PAUSE_LOOP, STOP_WFI, type Hart } from '../cpu/hart.ts';

/** Instructions per slice: interrupts, timer and control requests are looked at between slices. */
export const SLICE_INSNS = 20_000;
/** How long a hart caught spinning in a pause loop gives its host core away. */
const PAUSE_LOOP_YIELD_MS = 0.05;
/** Longest single sleep, so a sleeping hart still notices requests that forgot to wake it. */
const MAX_SLEEP_MS = 200;

/** Publish the hart's retired-instruction count and whether it translates code, for statistics. */
function publishStats(block: Int32Array, hart: Hart): void {
  const instret = hart.instret;
  block[hartWord(hart.hartId, HART_INSTRET_LO)] = (instret % 0x1_0000_0000) | 0;
  block[hartWord(hart.hartId, HART_INSTRET_HI)] = Math.floor(instret / 0x1_0000_0000) | 0;
  block[hartWord(hart.hartId, HART_JIT)] =
    (hart.jitEnabled ? HART_JIT_TRANSLATES : 0) | (hart.wasmEnabled ? HART_JIT_WASM : 0);
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
  notifyWord(block, VM_EVENT);
}

/** What a hart's runner should do after one {@link stepHart}. */
export type HartStep =
  /** Run the next step at once. */
  | { readonly kind: 'run' }
  /** Sleep until the hart's wake word differs from `wakeSeen` or `ms` pass (WFI, stopped, paused, pause loop). */
  | { readonly kind: 'sleep'; readonly wakeSeen: number; readonly ms: number }
  /** The VM stopped (or the hart failed): leave. */
  | { readonly kind: 'exit' };

const RUN: HartStep = { kind: 'run' };
const EXIT: HartStep = { kind: 'exit' };

/**
 * One step in the life of a hart: honour run control (pause, stop) and HSM state, run one slice, and say whether
 * and how long to sleep: WFI until an interrupt line or the timer deadline, stopped or paused until woken. Never
 * blocks, so the same step serves a hart on its own thread and several harts time-sliced on one thread.
 * `onFatal` receives the message when the guest breaks the machine (a trap into the emulated firmware).
 */
export function stepHart(
  hart: Hart,
  block: Int32Array,
  stateArea: Float64Array,
  onFatal: (message: string) => void,
): HartStep {
  const id = hart.hartId;
  const stateIndex = hartWord(id, HART_STATE);
  const wakeIndex = hartWord(id, HART_WAKE);
  const control = Atomics.load(block, VM_RUN_CONTROL);
  if (control === RUN_STOP) return EXIT;
  const wakeSeen = Atomics.load(block, wakeIndex);
  const state = Atomics.load(block, stateIndex);
  if (control === RUN_PAUSE) {
    if (state === HART_STATE_RUNNING || state === HART_STATE_WFI)
      Atomics.store(block, stateIndex, HART_STATE_PAUSED);
    const snapshotIndex = hartWord(id, HART_SNAPSHOT);
    if (Atomics.load(block, snapshotIndex) === SNAPSHOT_SAVE) {
      encodeHartState(hart.saveState(), stateArea);
      Atomics.store(block, snapshotIndex, SNAPSHOT_SAVED);
      Atomics.add(block, VM_EVENT, 1);
      notifyWord(block, VM_EVENT);
    }
    return { kind: 'sleep', wakeSeen, ms: MAX_SLEEP_MS };
  }
  if (state === HART_STATE_RESTORE_PENDING) {
    hart.restoreState(decodeHartState(stateArea));
    Atomics.store(block, stateIndex, HART_STATE_RUNNING);
    return RUN;
  }
  if (state === HART_STATE_PAUSED) {
    Atomics.compareExchange(block, stateIndex, HART_STATE_PAUSED, HART_STATE_RUNNING);
    return RUN;
  }
  if (state === HART_STATE_STOPPED) return { kind: 'sleep', wakeSeen, ms: MAX_SLEEP_MS };
  if (state === HART_STATE_START_PENDING) {
    hart.enterSupervisor(block[hartWord(id, HART_START_ADDR)], block[hartWord(id, HART_START_OPAQUE)]);
    Atomics.store(block, stateIndex, HART_STATE_RUNNING);
  }
  hart.run(SLICE_INSNS);
  publishStats(block, hart);
  switch (hart.stopReason) {
    case STOP_WFI: {
      const seen = Atomics.load(block, wakeIndex);
      if (hart.interruptPending() || Atomics.load(block, VM_RUN_CONTROL) !== RUN_CONTINUE) return RUN;
      const ms = Math.min(MAX_SLEEP_MS, sleepBudgetMs(hart));
      if (ms <= 0) return RUN;
      Atomics.store(block, stateIndex, HART_STATE_WFI);
      return { kind: 'sleep', wakeSeen: seen, ms };
    }
    case STOP_PAUSE_LOOP:
      // Spinning on a lock: give the host core away briefly so a descheduled lock holder can run.
      return { kind: 'sleep', wakeSeen: Atomics.load(block, wakeIndex), ms: PAUSE_LOOP_YIELD_MS };
    case STOP_HALT:
      // HSM hart_stop or system reset: wait for a start request (the state word says which).
      Atomics.compareExchange(block, stateIndex, HART_STATE_RUNNING, HART_STATE_STOPPED);
      return RUN;
    case STOP_FATAL:
      reportFatal(block, id, hart.fatalMessage, onFatal);
      return EXIT;
    default:
      return RUN;
  }
}

/** After a sleep: a hart that slept in WFI is running again. */
export function wakeHart(hart: Hart, block: Int32Array): void {
  Atomics.compareExchange(block, hartWord(hart.hartId, HART_STATE), HART_STATE_WFI, HART_STATE_RUNNING);
}

/**
 * The life of one hart on its own thread: {@link stepHart} in a loop, sleeping with Atomics.wait (never a spin)
 * when it says so, until the VM stops.
 */
export function runHartOnThread(
  hart: Hart,
  block: Int32Array,
  stateArea: Float64Array,
  onFatal: (message: string) => void,
): void {
  const wakeIndex = hartWord(hart.hartId, HART_WAKE);
  for (;;) {
    const step = stepHart(hart, block, stateArea, onFatal);
    if (step.kind === 'exit') return;
    if (step.kind === 'sleep') {
      Atomics.wait(block, wakeIndex, step.wakeSeen, step.ms);
      wakeHart(hart, block);
    }
  }
}

/**
 * Milliseconds until this hart's timer can wake it (a large number when it cannot). A deadline only wakes WFI
 * when the timer interrupt is enabled in mie: Linux masks STIE when it needs no timer event and may leave a past
 * deadline behind, and a hart that slept 0 ms for it would spin in its idle loop instead of sleeping.
 */
function sleepBudgetMs(hart: Hart): number {
  const deadline = hart.timecmp();
  if (deadline === Infinity || (hart.mie & (MIP_STIP | MIP_MTIP)) === 0) return MAX_SLEEP_MS;
  return hart.msUntilTicks(deadline);
}
