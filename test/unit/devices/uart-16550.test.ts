import { describe, it, expect } from 'vitest';
import {
  UART_IER,
  UART_IIR,
  UART_LCR,
  UART_LSR,
  UART_MCR,
  UART_MSR,
  UART_RBR,
  UART_SCR,
  UART_SIZE,
  UART_TX_FIFO_DEPTH,
  Uart16550,
} from '../../../src/devices/uart-16550.ts';
import type { UartRingSizes } from '../../../src/devices/uart-16550.ts';
import type { IrqSink } from '../../../src/devices/mmio.ts';
import { SharedLayout, createControlBlock } from '../../../src/common/shared-block.ts';

const IIR_NONE = 0x01;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const FIFO_BITS = 0xc0;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const IER_RDI = 0x01;
const IER_THRI = 0x02;

/** Records every level the UART drives; `level` is the current one. */
class FakeIrq implements IrqSink {
  level = false;
  readonly calls: Array<[number, boolean]> = [];
  setLevel(irq: number, level: boolean): void {
    this.calls.push([irq, level]);
    this.level = level;
  }
}

function setup(rings?: UartRingSizes) {
  const layout = new SharedLayout(1);
  const base = layout.alloc(Uart16550.words(rings));
  const guard = layout.alloc(2);
  const block = createControlBlock(layout.words, true);
  block[guard] = 0x5a5a;
  const irq = new FakeIrq();
  const uart = new Uart16550(block, base, irq, 10, rings);
  const r = (reg: number) => uart.read(reg, 1);
  const w = (reg: number, value: number) => uart.write(reg, 1, value);
  return { block, guard, irq, uart, r, w };
}

/** What Linux's serial8250_do_startup does before it opens the port (for a 16550A with an IRQ). */
function linuxStartup(r: (reg: number) => number, w: (reg: number, value: number) => void) {
  w(UART_IIR, 0x01); // FCR: enable FIFOs
  w(UART_IIR, 0x07); // clear both FIFOs
  w(UART_IIR, 0x00);
  r(UART_LSR);
  r(UART_RBR);
  r(UART_IIR);
  r(UART_MSR);
  expect(r(UART_LSR)).not.toBe(0xff);
  w(UART_LCR, 0x03); // 8N1
  // THRE re-assertion test
  w(UART_IER, IER_THRI);
  const iir1 = r(UART_IIR);
  w(UART_IER, 0);
  w(UART_IER, IER_THRI);
  const iir = r(UART_IIR);
  w(UART_IER, 0);
  // Linux sets UART_BUG_THRE when (!(iir1 & NO_INT) && (iir & NO_INT)): we must re-assert.
  expect(iir1 & IIR_NONE).toBe(0);
  expect(iir & IIR_NONE).toBe(0);
  w(UART_MCR, 0x0b); // DTR | RTS | OUT2
  // TX enable test: Linux sets UART_BUG_TXEN when TEMT and IIR says no interrupt.
  w(UART_IER, IER_THRI);
  const lsr = r(UART_LSR);
  const iirTx = r(UART_IIR);
  w(UART_IER, 0);
  expect(lsr & LSR_TEMT).toBe(LSR_TEMT);
  expect(iirTx & IIR_NONE).toBe(0);
  w(UART_IIR, 0x01); // FIFOs on again
  w(UART_IER, IER_RDI); // receive interrupts on: the console is open
}

describe('Uart16550', () => {
  it('resets to an idle transmitter, nothing received and no interrupt', () => {
    const { r, irq, uart } = setup();
    expect(uart.size).toBe(UART_SIZE);
    expect(r(UART_LSR)).toBe(LSR_THRE | LSR_TEMT);
    expect(r(UART_IIR)).toBe(IIR_NONE);
    expect(r(UART_IER)).toBe(0);
    expect(irq.calls).toEqual([]);
  });

  it('survives the register probing Linux 8250 startup does, with the THRE interrupt re-asserted', () => {
    const { r, w, irq, uart } = setup();
    linuxStartup(r, w);
    expect(irq.level).toBe(false);
    expect(uart.rxEnabled()).toBe(true);
    expect(r(UART_IIR)).toBe(IIR_NONE | FIFO_BITS);
  });

  it('IIR bits 7:6 follow FCR bit 0', () => {
    const { r, w } = setup();
    w(UART_IIR, 1);
    expect(r(UART_IIR) & FIFO_BITS).toBe(FIFO_BITS);
    w(UART_IIR, 0);
    expect(r(UART_IIR) & FIFO_BITS).toBe(0);
  });

  it('transmits through THR into the TX ring, driven by THRE interrupts as Linux does', () => {
    const { r, w, irq, uart } = setup();
    linuxStartup(r, w);
    w(UART_IER, IER_RDI | IER_THRI); // start_tx
    expect(irq.level).toBe(true);
    const text = 'hello, world from the guest kernel\n';
    let sent = 0;
    let interrupts = 0;
    while (irq.level) {
      interrupts++;
      const iir = r(UART_IIR);
      expect(iir & 0x0f).toBe(IIR_THRI);
      expect(irq.level).toBe(false); // reading IIR consumed the THRE interrupt
      // serial8250_tx_chars: a FIFO's worth without rereading LSR, then stop_tx when the buffer is empty
      for (let n = 0; n < UART_TX_FIFO_DEPTH && sent < text.length; n++) w(UART_RBR, text.charCodeAt(sent++));
      if (sent === text.length) w(UART_IER, IER_RDI);
    }
    expect(interrupts).toBe(3);
    expect(String.fromCharCode(...uart.txRing.drain())).toBe(text);
  });

  it('THRE and TEMT are 1 exactly while the ring has room for a FIFO load (back-pressure, nothing lost)', () => {
    const { r, w, irq, uart } = setup({ txCapacity: 64, rxCapacity: 16 });
    w(UART_IER, IER_THRI);
    r(UART_IIR);
    const out: number[] = [];
    let written = 0;
    // A polling writer (like the 8250 console) that waits for THRE before each byte.
    for (let i = 0; i < 1000; i++) {
      if ((r(UART_LSR) & LSR_THRE) === 0) {
        expect(r(UART_LSR) & LSR_TEMT).toBe(0);
        expect(uart.txRing.free).toBeLessThan(UART_TX_FIFO_DEPTH);
        expect(irq.level).toBe(false);
        out.push(...uart.txRing.drain());
        uart.txNotify();
        expect(irq.level).toBe(true); // room again: the THRE interrupt fires
        continue;
      }
      w(UART_RBR, written++ & 0xff);
    }
    out.push(...uart.txRing.drain());
    expect(out).toEqual(Array.from({ length: written }, (_, i) => i & 0xff));
    expect(uart.txDropped).toBe(0);
  });

  it('a byte written into a full ring is held and delivered by txNotify, in order', () => {
    const { w, uart } = setup({ txCapacity: 16, rxCapacity: 16 });
    for (let i = 0; i < 17; i++) w(UART_RBR, i);
    expect(uart.txRing.size).toBe(16);
    expect(uart.consolePut(99)).toBe(false); // behind the held byte
    expect(uart.txRing.drain()).toEqual(Uint8Array.from({ length: 16 }, (_, i) => i));
    uart.txNotify();
    expect(uart.txRing.drain()).toEqual(Uint8Array.of(16));
    expect(uart.txDropped).toBe(0);
  });

  it('signals the I/O thread through the TX event word when the ring stops being empty', () => {
    const { w, block, uart } = setup();
    const before = block[uart.txEventIndex];
    w(UART_RBR, 0x41);
    w(UART_RBR, 0x42);
    expect(block[uart.txEventIndex]).toBe(before + 1);
    uart.txRing.drain();
    uart.consolePut(0x43);
    expect(block[uart.txEventIndex]).toBe(before + 2);
  });

  it('receives from the RX ring: DR, received-data interrupt, RBR pops', () => {
    const { r, w, irq, uart } = setup();
    linuxStartup(r, w);
    uart.rxRing.pushMany(Uint8Array.of(0x61, 0x62));
    expect(irq.level).toBe(false);
    uart.rxNotify();
    expect(irq.level).toBe(true);
    expect(r(UART_IIR)).toBe(IIR_RDI | FIFO_BITS);
    expect(r(UART_IIR)).toBe(IIR_RDI | FIFO_BITS); // reading IIR does not clear received data
    expect(r(UART_LSR) & LSR_DR).toBe(LSR_DR);
    expect(r(UART_RBR)).toBe(0x61);
    expect(irq.level).toBe(true);
    expect(r(UART_RBR)).toBe(0x62);
    expect(irq.level).toBe(false);
    expect(r(UART_LSR) & LSR_DR).toBe(0);
    expect(r(UART_RBR)).toBe(0); // empty: reads 0, no underflow
  });

  it('received data outranks THR empty in IIR', () => {
    const { r, w, uart } = setup();
    w(UART_IER, IER_RDI | IER_THRI);
    uart.rxRing.push(0x31);
    uart.rxNotify();
    expect(r(UART_IIR) & 0x0f).toBe(IIR_RDI);
    r(UART_RBR);
    expect(r(UART_IIR) & 0x0f).toBe(IIR_THRI); // still pending: reading IIR for RDI did not clear it
    expect(r(UART_IIR) & 0x0f).toBe(IIR_NONE);
  });

  it('without ERBFI input raises no interrupt, and rxEnabled says so', () => {
    const { irq, uart } = setup();
    uart.rxRing.push(1);
    uart.rxNotify();
    expect(irq.level).toBe(false);
    expect(uart.rxEnabled()).toBe(false);
  });

  it('FCR bit 1 empties the receiver', () => {
    const { r, w, uart } = setup();
    uart.rxRing.pushMany(Uint8Array.of(1, 2, 3));
    w(UART_IIR, 0x03);
    expect(r(UART_LSR) & LSR_DR).toBe(0);
    expect(uart.rxRing.size).toBe(0);
  });

  it('DLAB switches offsets 0 and 1 to the divisor latch without transmitting', () => {
    const { r, w, uart } = setup();
    w(UART_IER, IER_RDI);
    w(UART_LCR, 0x83);
    w(UART_RBR, 0x0c);
    w(UART_IER, 0x00);
    expect(r(UART_RBR)).toBe(0x0c);
    expect(r(UART_IER)).toBe(0x00);
    w(UART_LCR, 0x03);
    expect(r(UART_IER)).toBe(IER_RDI);
    expect(r(UART_LCR)).toBe(0x03);
    expect(uart.txRing.size).toBe(0);
  });

  it('IER keeps 4 bits and the scratch register keeps 8 (8250 autoconfig probes both)', () => {
    const { r, w } = setup();
    w(UART_IER, 0xff);
    expect(r(UART_IER)).toBe(0x0f);
    w(UART_IER, 0);
    expect(r(UART_IER)).toBe(0);
    w(UART_SCR, 0xa5);
    expect(r(UART_SCR)).toBe(0xa5);
  });

  it('loopback: MSR mirrors MCR as autoconfig expects and THR bytes come back on RBR, not the console', () => {
    const { r, w, uart } = setup();
    expect(r(UART_MSR) & 0xf0).toBe(0xb0); // DCD, DSR, CTS from the host side
    w(UART_MCR, 0x10 | 0x0a);
    expect(r(UART_MSR) & 0xf0).toBe(0x90);
    w(UART_MCR, 0x10 | 0x05);
    expect(r(UART_MSR) & 0xf0).toBe(0x60);
    w(UART_RBR, 0x55);
    expect(r(UART_LSR) & LSR_DR).toBe(LSR_DR);
    expect(r(UART_RBR)).toBe(0x55);
    expect(r(UART_LSR) & LSR_DR).toBe(0);
    expect(uart.txRing.size).toBe(0);
    w(UART_MCR, 0x0b);
    w(UART_RBR, 0x56);
    expect(uart.txRing.drain()).toEqual(Uint8Array.of(0x56));
  });

  it('console helpers: consolePut fails only when the ring is full, consoleGet returns -1 when empty', () => {
    const { uart } = setup({ txCapacity: 16, rxCapacity: 16 });
    for (let i = 0; i < 16; i++) expect(uart.consolePut(0x30 + i)).toBe(true);
    expect(uart.consolePut(0x40)).toBe(false);
    expect(uart.txRing.size).toBe(16);
    expect(uart.consoleGet()).toBe(-1);
    uart.rxRing.push(0x7a);
    expect(uart.consoleGet()).toBe(0x7a);
    expect(uart.consoleGet()).toBe(-1);
  });

  it('accepts 4-byte accesses using the low byte', () => {
    const { uart } = setup();
    uart.write(UART_SCR, 4, 0x1234_5678);
    expect(uart.read(UART_SCR, 4)).toBe(0x78);
    uart.write(UART_RBR, 4, 0xffff_ff41);
    expect(uart.txRing.drain()).toEqual(Uint8Array.of(0x41));
  });

  describe('hostile guest', () => {
    it('offsets past the registers read 0 and writes there change nothing', () => {
      const { uart, block, guard } = setup();
      const before = block.slice();
      for (const offset of [8, 9, 0x80, 0xff, -1, 0x100, 0x7fff_ffff]) {
        expect(uart.write(offset, 1, 0xff)).toBe(true);
        expect(uart.write(offset, 4, -1)).toBe(true);
        expect(uart.read(offset, 1)).toBe(0);
      }
      expect(block).toEqual(before);
      expect(block[guard]).toBe(0x5a5a);
    });

    it('writes to LSR and MSR are ignored', () => {
      const { r, w } = setup();
      w(UART_LSR, 0);
      w(UART_MSR, 0);
      expect(r(UART_LSR)).toBe(LSR_THRE | LSR_TEMT);
      expect(r(UART_MSR)).toBe(0xb0);
    });

    it('a guest ignoring THRE loses only what cannot be held, counted, and never overruns the ring', () => {
      const { w, uart, block, guard } = setup({ txCapacity: 16, rxCapacity: 16 });
      for (let i = 0; i < 1000; i++) w(UART_RBR, i & 0xff);
      expect(uart.txRing.size).toBe(16);
      expect(uart.txDropped).toBe(1000 - 17);
      expect(block[guard]).toBe(0x5a5a);
    });

    it('the loopback receiver overwrites on overrun and reports OE once', () => {
      const { r, w } = setup();
      w(UART_MCR, 0x10);
      w(UART_RBR, 1);
      w(UART_RBR, 2);
      expect(r(UART_LSR) & 0x02).toBe(0x02);
      expect(r(UART_LSR) & 0x02).toBe(0);
      expect(r(UART_RBR)).toBe(2);
    });
  });
});
