import { describe, expect, it } from 'vitest';
import { SharedLayout, createControlBlock } from '../../../src/common/shared-block.ts';
import { Uart16550 } from '../../../src/devices/uart-16550.ts';
import { VirtioMmioTransport } from '../../../src/devices/virtio-mmio.ts';
import {
  VIRTIO_CONSOLE_RX_QUEUE,
  VIRTIO_CONSOLE_TX_QUEUE,
  VirtioConsoleDevice,
  VirtioConsoleHost,
} from '../../../src/devices/virtio-console.ts';
import { ConsoleStream } from '../../../src/machine/console-stream.ts';
import { RecordingIrq, TestGuestRam, VirtioTestDriver } from '../../helpers/virtio-driver.ts';

/**
 * A UART and a virtio console over one control block, as on a board, driven the way the guest drives them: the
 * boot console prints through the SBI console (UART ring), hvc1 through the virtio console's transmit queue.
 */
function setup(followPort: boolean) {
  const layout = new SharedLayout(1);
  const uartBase = layout.alloc(Uart16550.words());
  const transportWords = VirtioMmioTransport.words(2);
  const consoleBase = layout.alloc(VirtioConsoleDevice.regionWords(transportWords));
  const block = createControlBlock(layout.words, true);
  const irq = new RecordingIrq();
  const uart = new Uart16550(block, uartBase, irq, 10);
  const ram = new TestGuestRam(1 << 20);
  const transport = new VirtioMmioTransport(
    block,
    consoleBase,
    new VirtioConsoleDevice(block, consoleBase + transportWords, ram.memory, {
      fallbackPosition: () => uart.txPosition,
    }),
    irq,
    9,
  );
  const host = new VirtioConsoleHost(transport, ram.memory);
  const shown: string[] = [];
  const stream = new ConsoleStream(uart, host, followPort, (bytes) =>
    shown.push(new TextDecoder().decode(bytes)),
  );
  const driver = new VirtioTestDriver(transport, ram);
  driver.initialize({ queueCount: 2 });
  const encoder = new TextEncoder();
  return {
    stream,
    host,
    driver,
    ram,
    text: () => shown.join(''),
    /** The boot console (earlycon through SBI putchar) prints on the UART. */
    boot: (text: string) => encoder.encode(text).forEach((byte) => uart.consolePut(byte)),
    /** hvc1 writes one buffer to the virtio console, as put_chars does. */
    hvc: (text: string) => {
      driver.queues[VIRTIO_CONSOLE_TX_QUEUE].add([{ bytes: encoder.encode(text) }]);
      driver.notify(VIRTIO_CONSOLE_TX_QUEUE);
    },
  };
}

describe('console stream (UART and virtio console as one /dev/console)', () => {
  it('shows the UART until the port speaks, then the port only: the boot console copies are dropped', () => {
    const s = setup(true);
    s.boot('early 1\r\n');
    s.stream.drain();
    expect(s.stream.inputHeld).toBe(true);
    s.boot('early 2\r\n');
    // Each kernel message goes to hvc1 first, then to the boot console (keep_bootcon).
    s.hvc('hvc 3\r\n');
    s.boot('hvc 3\r\n');
    s.hvc('hvc 4\r\n');
    s.boot('hvc 4\r\n');
    s.stream.drain();
    s.boot('hvc 5\r\n');
    s.stream.drain();
    expect(s.text()).toBe('early 1\r\nearly 2\r\nhvc 3\r\nhvc 4\r\n');
    expect(s.stream.inputToPort).toBe(true);
    expect(s.stream.inputHeld).toBe(false);
  });

  it('UART bytes that reach the ring only after the drain began still come before the port output', () => {
    const s = setup(true);
    const ring = (s.stream as unknown as { uart: Uart16550 }).uart.txRing;
    const drain = ring.drain.bind(ring);
    let raced = false;
    // The guest prints right after the VMM emptied the UART ring and before it looks at the port.
    ring.drain = () => {
      const bytes = drain();
      if (!raced) {
        raced = true;
        s.boot('late early line\r\n');
        s.hvc('first hvc line\r\n');
        s.boot('first hvc line\r\n');
      }
      return bytes;
    };
    s.boot('x');
    s.stream.drain();
    s.stream.drain();
    expect(s.text()).toBe('xlate early line\r\nfirst hvc line\r\n');
  });

  it('a port that took over before a drain is held back until the UART bytes before it were shown', () => {
    const s = setup(true);
    s.boot('before');
    const device = s.host.device;
    // The VMM reads "not following", then the port takes over: its bytes wait for the next drain.
    const follows = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(device), 'streamFollows')!;
    let first = true;
    Object.defineProperty(device, 'streamFollows', {
      get(this: VirtioConsoleDevice) {
        const value = follows.get!.call(this) as boolean;
        if (first) {
          first = false;
          s.boot(' more');
          s.hvc('port');
        }
        return value;
      },
    });
    s.stream.drain();
    expect(s.text()).toBe('before');
    s.stream.drain();
    expect(s.text()).toBe('before moreport');
  });

  it('after the driver resets the port (power-off), the stream is the UART again from the reset on', () => {
    const s = setup(true);
    s.hvc('Requesting system poweroff\r\n');
    s.boot('a copy of an earlier kernel message\r\n');
    s.stream.drain();
    s.driver.reset(); // virtio_dev_shutdown
    s.boot('reboot: Power down\r\n');
    s.stream.drain();
    expect(s.text()).toBe('Requesting system poweroff\r\nreboot: Power down\r\n');
    expect(s.stream.inputToPort).toBe(false);
  });

  it('output the port returned before its reset is shown before the UART bytes after the reset', () => {
    const s = setup(true);
    s.hvc('switch\r\n');
    s.stream.drain();
    s.hvc('last port line\r\n');
    s.boot('copy\r\n');
    s.driver.reset();
    s.boot('first UART line after\r\n');
    s.stream.drain();
    expect(s.text()).toBe('switch\r\nlast port line\r\nfirst UART line after\r\n');
  });

  it('with a ttyS0 console the stream is the UART, input goes there, and the port is shown too', () => {
    const s = setup(false);
    s.boot('uart\r\n');
    s.hvc('port\r\n');
    s.stream.drain();
    s.boot('uart again\r\n');
    s.stream.drain();
    expect(s.text()).toBe('uart\r\nport\r\nuart again\r\n');
    expect(s.stream.inputToPort).toBe(false);
    expect(s.stream.inputHeld).toBe(false);
  });

  it('input goes to the port once the stream follows it', () => {
    const s = setup(true);
    const gpa = s.ram.alloc(64);
    s.driver.queues[VIRTIO_CONSOLE_RX_QUEUE].add([{ gpa, length: 64, writable: true }]);
    s.hvc('$ ');
    s.stream.drain();
    expect(s.stream.inputToPort).toBe(true);
    expect(s.host.receive(new TextEncoder().encode('ls\n'))).toBe(3);
    expect(new TextDecoder().decode(s.ram.get(gpa, 3))).toBe('ls\n');
  });
});
