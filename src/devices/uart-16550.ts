import type { AccessSize, IrqSink, MmioDevice } from './mmio.ts';
import { ByteRing } from '../common/byte-ring.ts';
import { SpinLock } from '../common/spin-lock.ts';
import { notifyWord } from '../common/shared-block.ts';

/**
 * 16550A register offsets (National Semiconductor PC16550D datasheet, "Register Description"; reg-shift 0, so
 * register n is at byte offset n). DLAB is LCR bit 7.
 */
/** Read: receiver buffer (RBR); write: transmitter holding (THR); with DLAB: divisor latch low (DLL). */
export const UART_RBR = 0;
/** Interrupt enable (IER); with DLAB: divisor latch high (DLM). */
export const UART_IER = 1;
/** Read: interrupt identification (IIR); write: FIFO control (FCR). */
export const UART_IIR = 2;
/** Line control (LCR). */
export const UART_LCR = 3;
/** Modem control (MCR). */
export const UART_MCR = 4;
/** Line status (LSR), read-only. */
export const UART_LSR = 5;
/** Modem status (MSR), read-only. */
export const UART_MSR = 6;
/** Scratch (SCR). */
export const UART_SCR = 7;
/** Bytes of address space the UART decodes (registers at 0..7, the rest reads 0). */
export const UART_SIZE = 0x100;

/** IER bits. */
const IER_ERBFI = 0x01; // received data available
const IER_ETBEI = 0x02; // transmitter holding register empty
const IER_MASK = 0x0f; // ELSI and EDSSI are stored but never fire (no line errors, no modem changes)
/** IIR values (bits 3:0) in priority order, and the FIFO-enabled bits 7:6. */
const IIR_NONE = 0x01;
const IIR_RX_DATA = 0x04;
const IIR_THRE = 0x02;
const IIR_FIFO_ENABLED = 0xc0;
/** FCR bits. */
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
/** LCR bits. */
const LCR_DLAB = 0x80;
/** MCR bits (DTR, RTS, OUT1, OUT2, LOOP). */
const MCR_MASK = 0x1f;
const MCR_LOOP = 0x10;
/** LSR bits. */
const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
/** MSR bits: CTS, DSR, DCD asserted by the (always present) host side when not in loopback. */
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

/**
 * Bytes of free TX ring space that count as an empty transmitter. Linux's 8250 driver loads a whole FIFO (16 bytes
 * on a 16550A) per THRE interrupt without rereading LSR, so THRE must promise room for that many.
 */
export const UART_TX_FIFO_DEPTH = 16;
/** Default ring capacities (bytes, powers of two). The TX ring absorbs boot-log bursts between I/O-thread drains. */
export const UART_DEFAULT_TX_CAPACITY = 16384;
export const UART_DEFAULT_RX_CAPACITY = 4096;

/** Ring capacities of one UART; every thread must use the same values. */
export interface UartRingSizes {
  readonly txCapacity: number;
  readonly rxCapacity: number;
}

const DEFAULT_RINGS: UartRingSizes = {
  txCapacity: UART_DEFAULT_TX_CAPACITY,
  rxCapacity: UART_DEFAULT_RX_CAPACITY,
};

/**
 * Shared-state layout of the UART's region (int32 word offsets from `base`):
 *   [0]  LOCK         spin lock over the register file
 *   [1]  IER          interrupt enable (4 bits)
 *   [2]  LCR          line control
 *   [3]  MCR          modem control (5 bits)
 *   [4]  SCR          scratch
 *   [5]  DLL, [6] DLM divisor latch
 *   [7]  FCR          FIFO enable (bit 0 only is kept)
 *   [8]  LSR_ERRORS   sticky LSR error bits (overrun in loopback), cleared by reading LSR
 *   [9]  THRE_PENDING the THRE interrupt is pending (set when the transmitter empties, cleared by IIR/THR)
 *   [10] TX_WAITING   a THR write left the transmitter not empty: the next txNotify with room re-arms THRE
 *   [11] HELD         a byte written while the TX ring was full (0x100 | byte), 0 when none
 *   [12] LOOP_RBR     the byte looped back in loopback mode (0x100 | byte), 0 when none
 *   [13] IRQ_LEVEL    the level last driven on the interrupt line
 *   [14] TX_EVENT     futex word bumped (and notified) when the TX ring goes from empty to non-empty
 *   [15] TX_DROPPED   bytes dropped because the guest ignored THRE (statistics)
 *   [16, 16 + T)      TX ring (ByteRing), then the RX ring
 * All-zero words are the reset state, so a freshly zeroed region needs no initialisation.
 */
const LOCK = 0;
const IER = 1;
const LCR = 2;
const MCR = 3;
const SCR = 4;
const DLL = 5;
const DLM = 6;
const FCR = 7;
const LSR_ERRORS = 8;
const THRE_PENDING = 9;
const TX_WAITING = 10;
const HELD = 11;
const LOOP_RBR = 12;
const IRQ_LEVEL = 13;
const TX_EVENT = 14;
const TX_DROPPED = 15;
const REGISTER_WORDS = 16;
const BYTE_PRESENT = 0x100;

/**
 * A 16550A UART (reg-shift 0, byte registers; wider accesses use the low byte) whose transmitter is a byte ring
 * to the host's I/O thread and whose receiver is a byte ring from it.
 *
 * Transmit: a THR write goes straight into the TX ring. LSR.THRE and TEMT are 1 exactly when the ring has room
 * for a whole FIFO ({@link UART_TX_FIFO_DEPTH} bytes), which is natural back-pressure: a driver that waits for
 * THRE never loses a byte. A byte written while the ring is completely full is held in one extra slot and moved
 * into the ring by {@link Uart16550.txNotify}; only a guest that ignores THRE further loses bytes (counted).
 *
 * Receive: LSR.DR is 1 while the RX ring is non-empty; reading RBR pops. In loopback mode (MCR bit 4) THR
 * bytes go to a one-byte loopback receiver instead of the console, and MSR reflects MCR (DTR->DSR, RTS->CTS,
 * OUT1->RI, OUT2->DCD), which is what Linux's 8250 autoconfig probes.
 *
 * Interrupts (IIR, highest priority first): receiver line status never fires; received data available while
 * ERBFI and DR; THR empty while ETBEI and the THRE-pending flag, which is set when the transmitter empties (a THR
 * write that leaves room, a txNotify after back-pressure, or ETBEI newly enabled while THRE) and cleared by
 * reading IIR when it is the reported source or by writing THR; modem status never fires.
 *
 * Host side: the I/O thread drains {@link Uart16550.txRing} (waiting on {@link Uart16550.txEventIndex}) and then
 * calls {@link Uart16550.txNotify}; it pushes input into {@link Uart16550.rxRing} and then calls
 * {@link Uart16550.rxNotify}. The SBI legacy console uses {@link Uart16550.consolePut} and
 * {@link Uart16550.consoleGet}.
 */
export class Uart16550 implements MmioDevice {
  readonly size = UART_SIZE;
  /** Console output: produced by the guest (under the lock), consumed by the I/O thread. */
  readonly txRing: ByteRing;
  /** Console input: produced by the I/O thread, consumed by the guest (under the lock). */
  readonly rxRing: ByteRing;
  /** Control-block index of the TX event futex word (for Atomics.wait / waitAsync on the I/O thread). */
  readonly txEventIndex: number;
  private readonly lock: SpinLock;

  /** Control-block words a UART with rings of `rings` sizes needs. */
  static words(rings: UartRingSizes = DEFAULT_RINGS): number {
    return REGISTER_WORDS + ByteRing.words(rings.txCapacity) + ByteRing.words(rings.rxCapacity);
  }

  constructor(
    private readonly block: Int32Array,
    private readonly base: number,
    private readonly irqSink: IrqSink,
    private readonly irq: number,
    rings: UartRingSizes = DEFAULT_RINGS,
  ) {
    this.lock = new SpinLock(block, base + LOCK);
    const txBase = base + REGISTER_WORDS;
    this.txRing = new ByteRing(block, txBase, rings.txCapacity);
    this.rxRing = new ByteRing(block, txBase + ByteRing.words(rings.txCapacity), rings.rxCapacity);
    this.txEventIndex = base + TX_EVENT;
  }

  read(mmioOffset: number, _size: AccessSize): number {
    if (mmioOffset < 0 || mmioOffset > UART_SCR) return 0; // [8, UART_SIZE) decodes but holds nothing
    this.lock.acquire();
    try {
      const value = this.readRegister(mmioOffset);
      this.updateIrq();
      return value;
    } finally {
      this.lock.release();
    }
  }

  write(mmioOffset: number, _size: AccessSize, value: number): boolean {
    if (mmioOffset < 0 || mmioOffset > UART_SCR) return true;
    this.lock.acquire();
    try {
      this.writeRegister(mmioOffset, value & 0xff);
      this.updateIrq();
      return true;
    } finally {
      this.lock.release();
    }
  }

  /** I/O thread: call after pushing bytes into {@link rxRing}; raises the interrupt if the guest wants it. */
  rxNotify(): void {
    this.lock.acquire();
    try {
      this.updateIrq();
    } finally {
      this.lock.release();
    }
  }

  /**
   * I/O thread: call after draining {@link txRing}. Moves a held byte into the ring and, if a writer was waiting
   * for room and there now is, makes the THR-empty interrupt pending again.
   */
  txNotify(): void {
    this.lock.acquire();
    try {
      this.flushHeld();
      if (this.block[this.base + TX_WAITING] !== 0 && this.transmitterEmpty()) {
        this.block[this.base + TX_WAITING] = 0;
        this.block[this.base + THRE_PENDING] = 1;
      }
      this.updateIrq();
    } finally {
      this.lock.release();
    }
  }

  /** True when the guest enabled the received-data interrupt (its console is open and wants input). */
  rxEnabled(): boolean {
    return (Atomics.load(this.block, this.base + IER) & IER_ERBFI) !== 0;
  }

  /**
   * The TX ring position ({@link ByteRing.writePosition}) the guest's next output byte will have: every byte it
   * wrote so far, including a held one, has a lower position. Read without the lock (a snapshot of a moment).
   */
  get txPosition(): number {
    const held = Atomics.load(this.block, this.base + HELD) !== 0 ? 1 : 0;
    return (this.txRing.writePosition + held) & 0x7fff_ffff;
  }

  /** Bytes the guest wrote while ignoring THRE that could not be kept (statistics). */
  get txDropped(): number {
    return Atomics.load(this.block, this.base + TX_DROPPED);
  }

  /** SBI console output: append `byte` to the TX ring; false when the ring is full (nothing written). */
  consolePut(byte: number): boolean {
    this.lock.acquire();
    try {
      this.flushHeld();
      if (this.block[this.base + HELD] !== 0) return false; // keep byte order behind the held byte
      const ok = this.pushTx(byte & 0xff);
      this.updateIrq();
      return ok;
    } finally {
      this.lock.release();
    }
  }

  /** SBI console input: the next received byte, or -1 when none. */
  consoleGet(): number {
    this.lock.acquire();
    try {
      const byte = this.rxRing.shift();
      this.updateIrq();
      return byte;
    } finally {
      this.lock.release();
    }
  }

  private readRegister(register: number): number {
    const b = this.block;
    const base = this.base;
    const dlab = (b[base + LCR] & LCR_DLAB) !== 0;
    switch (register) {
      case UART_RBR:
        if (dlab) return b[base + DLL];
        return this.popRx();
      case UART_IER:
        return dlab ? b[base + DLM] : b[base + IER];
      case UART_IIR: {
        const id = this.identify();
        if (id === IIR_THRE) b[base + THRE_PENDING] = 0;
        return id | ((b[base + FCR] & FCR_ENABLE) !== 0 ? IIR_FIFO_ENABLED : 0);
      }
      case UART_LCR:
        return b[base + LCR];
      case UART_MCR:
        return b[base + MCR];
      case UART_LSR: {
        const value = this.lineStatus();
        b[base + LSR_ERRORS] = 0;
        return value;
      }
      case UART_MSR:
        return this.modemStatus();
      default:
        return b[base + SCR];
    }
  }

  private writeRegister(register: number, value: number): void {
    const b = this.block;
    const base = this.base;
    const dlab = (b[base + LCR] & LCR_DLAB) !== 0;
    switch (register) {
      case UART_RBR:
        if (dlab) b[base + DLL] = value;
        else this.transmit(value);
        return;
      case UART_IER: {
        if (dlab) {
          b[base + DLM] = value;
          return;
        }
        const before = b[base + IER];
        const after = value & IER_MASK;
        b[base + IER] = after;
        const newlyEnabled = (after & IER_ETBEI) !== 0 && (before & IER_ETBEI) === 0;
        if (newlyEnabled && this.transmitterEmpty()) b[base + THRE_PENDING] = 1;
        return;
      }
      case UART_IIR:
        b[base + FCR] = value & FCR_ENABLE;
        if ((value & FCR_CLEAR_RX) !== 0) {
          while (this.rxRing.shift() >= 0) {
            // discard: the guest asked for an empty receive FIFO
          }
          b[base + LOOP_RBR] = 0;
        }
        // Clearing the transmit FIFO is a no-op: bytes in the ring are already on the wire.
        return;
      case UART_LCR:
        b[base + LCR] = value;
        return;
      case UART_MCR:
        b[base + MCR] = value & MCR_MASK;
        return;
      case UART_LSR:
      case UART_MSR:
        return; // read-only
      default:
        b[base + SCR] = value;
    }
  }

  /** A THR write: loopback receiver, the TX ring, or the held slot. */
  private transmit(byte: number): void {
    const b = this.block;
    const base = this.base;
    b[base + THRE_PENDING] = 0;
    if ((b[base + MCR] & MCR_LOOP) !== 0) {
      if (b[base + LOOP_RBR] !== 0) b[base + LSR_ERRORS] |= LSR_OE;
      b[base + LOOP_RBR] = BYTE_PRESENT | byte;
      b[base + THRE_PENDING] = 1; // the loopback transmitter empties at once
      return;
    }
    this.flushHeld();
    if (b[base + HELD] === 0 && this.pushTx(byte)) {
      // stored
    } else if (b[base + HELD] === 0) {
      b[base + HELD] = BYTE_PRESENT | byte;
    } else {
      b[base + TX_DROPPED]++;
    }
    const empty = this.transmitterEmpty();
    b[base + THRE_PENDING] = empty ? 1 : 0;
    b[base + TX_WAITING] = empty ? 0 : 1;
  }

  /** Push to the TX ring and signal the I/O thread when the ring stops being empty. Caller holds the lock. */
  private pushTx(byte: number): boolean {
    const wasEmpty = this.txRing.size === 0;
    if (!this.txRing.push(byte)) return false;
    if (wasEmpty) {
      Atomics.add(this.block, this.txEventIndex, 1);
      notifyWord(this.block, this.txEventIndex);
    }
    return true;
  }

  /** Move a held byte into the TX ring if it now fits. Caller holds the lock. */
  private flushHeld(): void {
    const held = this.block[this.base + HELD];
    if (held !== 0 && this.pushTx(held & 0xff)) this.block[this.base + HELD] = 0;
  }

  private popRx(): number {
    const b = this.block;
    const base = this.base;
    if ((b[base + MCR] & MCR_LOOP) !== 0) {
      const looped = b[base + LOOP_RBR];
      b[base + LOOP_RBR] = 0;
      return looped & 0xff;
    }
    const byte = this.rxRing.shift();
    return byte < 0 ? 0 : byte;
  }

  private dataReady(): boolean {
    if ((this.block[this.base + MCR] & MCR_LOOP) !== 0) return this.block[this.base + LOOP_RBR] !== 0;
    return this.rxRing.size > 0;
  }

  /** THRE (and TEMT): a whole FIFO's worth of room in the TX ring and nothing held. */
  private transmitterEmpty(): boolean {
    if ((this.block[this.base + MCR] & MCR_LOOP) !== 0) return true;
    return this.block[this.base + HELD] === 0 && this.txRing.free >= UART_TX_FIFO_DEPTH;
  }

  private lineStatus(): number {
    let value = this.block[this.base + LSR_ERRORS];
    if (this.dataReady()) value |= LSR_DR;
    if (this.transmitterEmpty()) value |= LSR_THRE | LSR_TEMT;
    return value;
  }

  private modemStatus(): number {
    const mcr = this.block[this.base + MCR];
    if ((mcr & MCR_LOOP) === 0) return MSR_CTS | MSR_DSR | MSR_DCD;
    let value = 0;
    if ((mcr & 0x01) !== 0) value |= MSR_DSR;
    if ((mcr & 0x02) !== 0) value |= MSR_CTS;
    if ((mcr & 0x04) !== 0) value |= MSR_RI;
    if ((mcr & 0x08) !== 0) value |= MSR_DCD;
    return value;
  }

  /** The highest-priority pending interrupt's IIR code (bits 3:0), IIR_NONE when none. */
  private identify(): number {
    const ier = this.block[this.base + IER];
    if ((ier & IER_ERBFI) !== 0 && this.dataReady()) return IIR_RX_DATA;
    if ((ier & IER_ETBEI) !== 0 && this.block[this.base + THRE_PENDING] !== 0) return IIR_THRE;
    return IIR_NONE;
  }

  /** Drive the interrupt line from the current state, calling the sink only on a change. Caller holds the lock. */
  private updateIrq(): void {
    const level = this.identify() !== IIR_NONE ? 1 : 0;
    if (this.block[this.base + IRQ_LEVEL] === level) return;
    this.block[this.base + IRQ_LEVEL] = level;
    this.irqSink.setLevel(this.irq, level === 1);
  }
}
