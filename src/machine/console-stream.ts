import type { Uart16550 } from '../devices/uart-16550.ts';
import type { VirtioConsoleHost } from '../devices/virtio-console.ts';

const NO_BYTES = new Uint8Array(0);

/** How many ring positions lie from `from` up to `limit` (0 when `limit` is not ahead; positions wrap at 2^31). */
function bytesBefore(limit: number, from: number): number {
  const distance = (limit - from) & 0x7fff_ffff;
  return distance >= 0x4000_0000 ? 0 : distance;
}

/** `b` after `a`, as one array. */
function join(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * A VM's console stream: one byte stream out of its two consoles, the guest's /dev/console.
 * - The UART, where the kernel's boot console (`earlycon=sbi`) prints and where a `console=ttyS0` guest runs its
 *   shell.
 * - The virtio console (hvc1; hvc0 is the SBI console), when the command line's last `console=` names an hvc
 *   device (`followPort`), as the default image's does: the one with a window size.
 *
 * With `followPort`, the stream shows the UART until the virtio console transmits for the first time (the kernel
 * registered it as its console), then the virtio console alone, and input goes there ({@link inputToPort}).
 * Both devices are written on the harts into rings, so the switch is made exact with ring positions: the hart
 * that switches records the UART's output position; UART bytes before it are shown (first, even if they reach the
 * ring late), the later ones are dropped (they are the boot console's copies of every kernel message,
 * `keep_bootcon`). When the driver resets the device (Linux does before power-off and reboot), the reset records
 * the UART's position again and the stream goes back to the UART from exactly there, after the port's last
 * output, so the kernel's last messages are shown. The switch state lives in the device's control-block words,
 * so snapshots keep it. Without `followPort` (a ttyS0 console) the stream is the UART, input goes there, and
 * whatever the guest writes to the virtio console is shown too.
 */
export class ConsoleStream {
  constructor(
    private readonly uart: Uart16550,
    private readonly port: VirtioConsoleHost,
    private readonly followPort: boolean,
    private readonly emit: (bytes: Uint8Array) => void,
  ) {
    port.device.preferred = followPort;
  }

  /** True when input belongs to the virtio console (the stream follows it). */
  get inputToPort(): boolean {
    return this.port.device.streamFollows;
  }

  /** True when input must wait: the guest's console is the virtio console, which has not taken over yet. */
  get inputHeld(): boolean {
    return this.followPort && !this.port.device.streamFollows;
  }

  /** Take both consoles' output and emit what the stream shows, in order. Call whenever either may have some. */
  drain(): void {
    const device = this.port.device;
    const from = this.uart.txRing.readPosition;
    let bytes = this.takeUart();
    // Read after the drain: a switch or reset marked now came after every byte just taken.
    const follows = device.streamFollows;
    if (follows && bytesBefore(device.streamAt, from + bytes.length) > 0) {
      // The port took over after UART bytes that were not in the ring yet at the drain; they are now, and they
      // come before the port's output.
      bytes = join(bytes, this.takeUart());
    }
    const shown = follows ? Math.min(bytes.length, bytesBefore(device.streamAt, from)) : bytes.length;
    if (shown > 0) this.emit(bytes.subarray(0, shown));
    const leftAt = follows ? device.takeLeftAt() : undefined;
    // Not following yet but about to: the port's first bytes wait for the next drain, after the UART's last.
    if (follows || !this.followPort) {
      const output = this.port.takeOutput();
      if (output.length > 0) this.emit(output);
    }
    if (leftAt !== undefined) {
      // Back to the UART from the first byte written after the reset (later ones reach the ring later).
      const skip = Math.max(shown, Math.min(bytes.length, bytesBefore(leftAt, from)));
      if (skip < bytes.length) this.emit(bytes.subarray(skip));
    }
  }

  private takeUart(): Uint8Array {
    if (this.uart.txRing.size === 0) return NO_BYTES;
    const bytes = this.uart.txRing.drain();
    this.uart.txNotify();
    return bytes;
  }
}
