import { UserError } from '../common/errors.ts';
import {
  HART_START_ADDR,
  HART_START_OPAQUE,
  HART_STATE,
  HART_STATE_START_PENDING,
  HART_STATE_STOPPED,
  POWER_FAIL,
  POWER_NONE,
  POWER_OFF,
  POWER_REBOOT,
  RUN_STOP,
  VM_EVENT,
  VM_POWER,
  VM_POWER_CODE,
  VM_RUN_CONTROL,
  hartWord,
} from '../common/shared-block.ts';
import { AddressSpace, RAM_BASE } from '../mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../mem/host-ram.ts';
import { Board, MAX_HARTS, createBoardState, type BoardInit } from './board.ts';
import type { HartThreadInit, HartThreadMessage } from './hart-thread.ts';
import { loadLinux, type LinuxBootImages } from './linux-boot.ts';

/** A running vCPU thread, as the VMM holds it. */
export interface HartThreadHandle {
  terminate(): void | Promise<unknown>;
}

/** How the VMM starts vCPU threads: Node worker_threads, browser Web Workers, or in-process for tests. */
export interface ThreadFactory {
  /** True when threads share memory (SharedArrayBuffer); false means the VM must not use threads. */
  readonly shared: boolean;
  spawn(
    init: HartThreadInit,
    onMessage: (message: HartThreadMessage) => void,
    onError: (error: Error) => void,
  ): HartThreadHandle;
}

/** A VM's shape and what it boots. */
export interface VmSpec extends LinuxBootImages {
  readonly cpus: number;
  readonly memoryMiB: number;
}

/** How a VM ended. */
export type PowerEvent =
  | { readonly kind: 'poweroff'; readonly code: number }
  | { readonly kind: 'reboot'; readonly code: number }
  | { readonly kind: 'failure'; readonly code: number; readonly message: string };

/** The smallest and largest guest memory we accept, in MiB. */
export const MIN_MEMORY_MIB = 16;
export const MAX_MEMORY_MIB = 2048;

/** Check a VM shape; throws a UserError that names the limit. */
export function validateVmShape(cpus: number, memoryMiB: number): void {
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_HARTS) {
    throw new UserError(
      `a VM needs between 1 and ${MAX_HARTS} vCPUs, not ${cpus}; use --cpus 1..${MAX_HARTS}`,
    );
  }
  if (!Number.isInteger(memoryMiB) || memoryMiB < MIN_MEMORY_MIB || memoryMiB > MAX_MEMORY_MIB) {
    throw new UserError(
      `guest memory must be a whole number of MiB from ${MIN_MEMORY_MIB} to ${MAX_MEMORY_MIB}, not ${memoryMiB}; use --mem ${MIN_MEMORY_MIB}..${MAX_MEMORY_MIB}`,
    );
  }
}

/**
 * A virtual machine: its frames of host RAM, its control block, one thread per vCPU, and the host side of its
 * devices (console). Create with {@link Vm.create}, then {@link Vm.start}.
 */
export class Vm {
  readonly board: Board;
  private readonly threads: HartThreadHandle[] = [];
  private readonly outputListeners = new Set<(bytes: Uint8Array) => void>();
  private readonly pendingInput: number[] = [];
  private pumping = false;
  private power: PowerEvent | undefined;
  private failureMessage = '';
  private readonly powerWaiters: ((event: PowerEvent) => void)[] = [];
  private readonly frames: Int32Array;
  /** Keeps the host's event loop alive while the VM runs (a pending Atomics.waitAsync does not, in Node). */
  private keepAlive: ReturnType<typeof setInterval> | undefined;

  private constructor(
    private readonly hostRam: HostRam,
    frames: Int32Array,
    private readonly boardInit: BoardInit,
    private readonly factory: ThreadFactory,
  ) {
    this.frames = frames;
    this.board = new Board(boardInit);
  }

  /** Reserve memory, build the board and load the kernel. Nothing runs until {@link start}. */
  static create(spec: VmSpec, factory: ThreadFactory, hostRam?: HostRam): Vm {
    validateVmShape(spec.cpus, spec.memoryMiB);
    const ramSize = spec.memoryMiB << 20;
    const ram = hostRam ?? new HostRam(ramSize, factory.shared);
    const frames = ram.allocate(ramSize / FRAME_SIZE);
    try {
      const memory = new AddressSpace({
        ram: ram.buffer,
        table: AddressSpace.tableFor(frames, factory.shared),
        ramBase: RAM_BASE,
        ramSize,
      });
      const plan = loadLinux(memory, spec.cpus, spec);
      const { block, layout } = createBoardState(spec.cpus, factory.shared);
      // Hart 0 enters the kernel like any HSM start: a0 = hartid, a1 = device tree.
      block[hartWord(0, HART_START_ADDR)] = plan.entry;
      block[hartWord(0, HART_START_OPAQUE)] = plan.dtbGpa;
      block[hartWord(0, HART_STATE)] = HART_STATE_START_PENDING;
      for (let h = 1; h < spec.cpus; h++) block[hartWord(h, HART_STATE)] = HART_STATE_STOPPED;
      const init: BoardInit = { hartCount: spec.cpus, block, memory: memory.init, layout, firmware: true };
      return new Vm(ram, frames, init, factory);
    } catch (error) {
      ram.free(frames);
      throw error;
    }
  }

  /** Start one thread per vCPU and the console pump. */
  start(): void {
    for (let hartId = 0; hartId < this.boardInit.hartCount; hartId++) {
      this.threads.push(
        this.factory.spawn(
          { board: this.boardInit, hartId },
          (message) => {
            if (message.type === 'fatal') this.fail(message.message);
          },
          (error) => this.fail(`vCPU ${hartId} crashed: ${error.message}`),
        ),
      );
    }
    this.keepAlive = setInterval(() => {}, 1 << 30);
    void this.pump();
  }

  /** Receive everything the guest prints on its console. Returns a function that unsubscribes. */
  onOutput(listener: (bytes: Uint8Array) => void): () => void {
    this.outputListeners.add(listener);
    return () => this.outputListeners.delete(listener);
  }

  /**
   * Type into the guest's console. Input is held until the guest has opened the console (enabled the UART's
   * receive interrupt) and is fed as the guest reads it: nothing is dropped.
   */
  write(bytes: Uint8Array): void {
    for (const byte of bytes) this.pendingInput.push(byte);
    this.feedInput();
  }

  /** Resolves when the guest powers off, reboots or fails. */
  whenPoweredOff(): Promise<PowerEvent> {
    if (this.power) return Promise.resolve(this.power);
    return new Promise((resolve) => this.powerWaiters.push(resolve));
  }

  /** Stop every vCPU and release the VM's memory. */
  async stop(): Promise<void> {
    Atomics.store(this.board.block, VM_RUN_CONTROL, RUN_STOP);
    for (let h = 0; h < this.boardInit.hartCount; h++) this.board.lines.wake(h);
    await Promise.all(this.threads.map((t) => t.terminate()));
    this.threads.length = 0;
    this.pumping = false;
    if (this.frames.length > 0) this.hostRam.free(this.frames.slice());
    this.settle({ kind: 'poweroff', code: 0 });
  }

  private fail(message: string): void {
    this.failureMessage ||= message;
    Atomics.store(this.board.block, VM_POWER, POWER_FAIL);
    Atomics.store(this.board.block, VM_RUN_CONTROL, RUN_STOP);
    Atomics.add(this.board.block, VM_EVENT, 1);
  }

  private settle(event: PowerEvent): void {
    if (this.power) return;
    this.power = event;
    clearInterval(this.keepAlive);
    for (const waiter of this.powerWaiters.splice(0)) waiter(event);
  }

  private feedInput(): void {
    const uart = this.board.uart;
    if (this.pendingInput.length === 0 || !uart.rxEnabled()) return;
    // Feed only into an empty receive ring: the guest has read what it was given.
    if (uart.rxRing.size !== 0) return;
    const chunk = this.pendingInput.splice(0, 64);
    const written = uart.rxRing.pushMany(Uint8Array.from(chunk));
    if (written < chunk.length) this.pendingInput.unshift(...chunk.slice(written));
    uart.rxNotify();
  }

  private drainOutput(): void {
    const uart = this.board.uart;
    if (uart.txRing.size === 0) return;
    const bytes = uart.txRing.drain();
    uart.txNotify();
    for (const listener of this.outputListeners) listener(bytes);
  }

  /** The I/O loop: console output and input, and power events from the guest. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const block = this.board.block;
    const txEvent = this.board.uart.txEventIndex;
    while (this.pumping) {
      this.drainOutput();
      this.feedInput();
      const power = Atomics.load(block, VM_POWER);
      if (power !== POWER_NONE) {
        this.drainOutput();
        const code = Atomics.load(block, VM_POWER_CODE);
        await this.haltThreads();
        if (power === POWER_OFF) this.settle({ kind: 'poweroff', code });
        else if (power === POWER_REBOOT) this.settle({ kind: 'reboot', code });
        else
          this.settle({
            kind: 'failure',
            code,
            message: this.failureMessage || 'the guest reported a failure',
          });
        break;
      }
      const seen = Atomics.load(block, txEvent);
      if (this.board.uart.txRing.size === 0) {
        const wait = Atomics.waitAsync(block, txEvent, seen, this.pendingInput.length > 0 ? 2 : 20);
        if (wait.async) await wait.value;
      } else {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
  }

  private async haltThreads(): Promise<void> {
    Atomics.store(this.board.block, VM_RUN_CONTROL, RUN_STOP);
    for (let h = 0; h < this.boardInit.hartCount; h++) this.board.lines.wake(h);
    await Promise.all(this.threads.map((t) => t.terminate()));
    this.threads.length = 0;
    this.pumping = false;
  }
}
