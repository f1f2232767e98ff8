import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import type { TabvisorConsole } from '../machine/vm-console.ts';

/**
 * One VM's console in an xterm.js terminal that fills its container: shows the guest's output (including what it
 * printed before the pane existed), sends keystrokes and pastes to the guest, and refits when the pane resizes.
 * The guest is told the terminal's size at once and after every change (`console.resize`), so `stty size`,
 * editors and pagers match the pane. A pane can be built before its VM exists and {@link attach}ed to the
 * console later: setting xterm up takes the page's thread for tens of milliseconds, which is better spent while
 * the VM is still being created.
 */
export class TerminalPane {
  private readonly terminal: Terminal;
  private readonly fitAddon = new FitAddon();
  private readonly disposers: (() => void)[] = [];
  private attached = false;
  private disposed = false;

  constructor(container: HTMLElement, console?: TabvisorConsole) {
    this.terminal = new Terminal({
      cursorBlink: true,
      fontSize: 13,
      scrollback: 5000,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace',
      theme: { background: '#101418' },
    });
    this.terminal.loadAddon(this.fitAddon);
    this.terminal.open(container);
    this.fit();
    const observer = new ResizeObserver(() => this.fit());
    observer.observe(container);
    this.disposers.push(() => observer.disconnect());
    if (console) this.attach(console);
  }

  /** Show `console` (what it printed so far, then its output) and type into it; once per pane. */
  attach(console: TabvisorConsole): void {
    if (this.attached) throw new Error('this terminal pane already shows a console');
    this.attached = true;
    const resized = this.terminal.onResize(({ cols, rows }) => console.resize(cols, rows));
    this.disposers.push(() => resized.dispose());
    console.resize(this.terminal.cols, this.terminal.rows);
    this.terminal.write(console.transcript());
    this.disposers.push(console.onOutput((bytes) => this.terminal.write(bytes)));
    this.disposers.push(console.onReset(() => this.terminal.reset()));
    const input = this.terminal.onData((data) => console.write(data));
    this.disposers.push(() => input.dispose());
  }

  /** Size the terminal to its container (only when the container is visible). */
  fit(): void {
    const element = this.terminal.element;
    if (element && element.offsetParent !== null) this.fitAddon.fit();
  }

  /** Give the terminal the keyboard focus. */
  focus(): void {
    this.terminal.focus();
  }

  /** Unsubscribe from the console and free the terminal. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const dispose of this.disposers.splice(0)) dispose();
    this.terminal.dispose();
  }
}
