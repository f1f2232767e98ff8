import {
  DEFAULT_CONSOLE_COLS,
  DEFAULT_CONSOLE_ROWS,
  checkConsoleSize,
  type ConsoleSize,
} from '../devices/virtio-console.ts';

export type { ConsoleSize };

/** The page API's view of a VM's console (the guest's /dev/console: its virtio console, or the UART). */
export interface TabvisorConsole {
  /** Type `text` into the guest's console (UTF-8). Ignored while the VM has no running machine. */
  write(text: string): void;
  /**
   * Tell the guest its terminal is `cols` x `rows` characters (`stty size`; the foreground program gets
   * SIGWINCH). Whole numbers from 1 to 65535, else it throws a UserError. Kept across reboots and applied at
   * every boot; default 80 x 24 (a machine restored from a boot snapshot keeps the snapshot's until one is given).
   */
  resize(cols: number, rows: number): void;
  /** The size last given to {@link resize} (80 x 24 until then). */
  size(): ConsoleSize;
  /** Everything the guest printed since it last booted (the oldest text is dropped past 1 Mi characters). */
  transcript(): string;
  /**
   * Resolve when the guest prints `pattern`, searching the output that came after the previous match (as
   * `expect` does), so `write('nproc\n')` then `waitFor('# ')` waits for the next prompt, not an old one.
   * Resolves with the text from there up to the end of the match. Rejects after `timeoutMs` (default 30 s),
   * or when the VM stops, crashes or is reset, with the end of the transcript in the message.
   */
  waitFor(pattern: string | RegExp, timeoutMs?: number): Promise<string>;
  /** Receive the guest's output bytes as they arrive (what a terminal shows). Returns a function that unsubscribes. */
  onOutput(listener: (bytes: Uint8Array) => void): () => void;
  /** Be told when the transcript starts afresh (a new boot), e.g. to clear a terminal. Returns unsubscribe. */
  onReset(listener: () => void): () => void;
}

/** Transcript characters kept; older text is dropped so a long-running guest cannot fill the page's memory. */
const MAX_TRANSCRIPT_CHARS = 1 << 20;
/** How much of the transcript's end a waitFor error quotes. */
const ERROR_TAIL_CHARS = 400;

interface Waiter {
  readonly find: (text: string) => { readonly end: number } | undefined;
  readonly resolve: (text: string) => void;
  readonly reject: (error: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** A finder for `pattern` in a string: the end index of the first match, if any. */
function finder(pattern: string | RegExp): (text: string) => { readonly end: number } | undefined {
  if (typeof pattern === 'string') {
    return (text) => {
      const at = text.indexOf(pattern);
      return at < 0 ? undefined : { end: at + pattern.length };
    };
  }
  // A private copy without g/y, so the caller's lastIndex neither matters nor changes.
  const regexp = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ''));
  return (text) => {
    const match = regexp.exec(text);
    return match ? { end: match.index + match[0].length } : undefined;
  };
}

/**
 * A VM's console on the VMM side: keeps the transcript, answers {@link waitFor}, hands raw bytes to terminals,
 * and sends typed text to whichever machine currently runs (through `send`). One per VM; it outlives reboots.
 */
export class VmConsole implements TabvisorConsole {
  private text = '';
  /** Index in `text` where the next waitFor starts searching. */
  private cursor = 0;
  private decoder = new TextDecoder();
  private readonly encoder = new TextEncoder();
  private readonly waiters = new Set<Waiter>();
  private readonly byteListeners = new Set<(bytes: Uint8Array) => void>();
  private readonly resetListeners = new Set<() => void>();
  private cols = DEFAULT_CONSOLE_COLS;
  private rows = DEFAULT_CONSOLE_ROWS;
  /** Whether anyone gave a size (until then a restored snapshot keeps the size it was taken with). */
  private sized = false;

  /** `send` types bytes into the current machine; `applySize` passes a new terminal size on to it. */
  constructor(
    private readonly send: (bytes: Uint8Array) => void,
    private readonly applySize: (size: ConsoleSize) => void = () => undefined,
  ) {}

  /** Type text into the guest's console. */
  write(text: string): void {
    this.send(this.encoder.encode(text));
  }

  /** Set the guest's terminal size (see {@link TabvisorConsole.resize}). */
  resize(cols: number, rows: number): void {
    checkConsoleSize(cols, rows);
    this.sized = true;
    if (cols === this.cols && rows === this.rows) return;
    this.cols = cols;
    this.rows = rows;
    this.applySize({ cols, rows });
  }

  /** The terminal size the guest is told. */
  size(): ConsoleSize {
    return { cols: this.cols, rows: this.rows };
  }

  /** Whether a size was given ({@link resize}); until then machines keep theirs (80 x 24, or a snapshot's). */
  get sizeGiven(): boolean {
    return this.sized;
  }

  /**
   * @internal A machine restored from a snapshot has the size it was taken with. Returns the size to give it, or
   * undefined when nobody set one yet: then the console takes the machine's (no needless SIGWINCH in the guest).
   */
  sizeForRestored(machineSize: ConsoleSize): ConsoleSize | undefined {
    if (this.sized) return this.size();
    this.cols = machineSize.cols;
    this.rows = machineSize.rows;
    return undefined;
  }

  /** Everything the guest printed since it last booted. */
  transcript(): string {
    return this.text;
  }

  /** Wait for the guest to print `pattern` (see {@link TabvisorConsole.waitFor}). */
  waitFor(pattern: string | RegExp, timeoutMs = 30_000): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const find = finder(pattern);
      const waiter: Waiter = {
        find,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(this.error(`the guest did not print ${String(pattern)} within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
      this.check();
    });
  }

  /** Receive the guest's output bytes as they arrive (for a terminal). Returns a function that unsubscribes. */
  onOutput(listener: (bytes: Uint8Array) => void): () => void {
    this.byteListeners.add(listener);
    return () => this.byteListeners.delete(listener);
  }

  /** Be told when the transcript is cleared for a fresh boot (a terminal clears its screen). Returns unsubscribe. */
  onReset(listener: () => void): () => void {
    this.resetListeners.add(listener);
    return () => this.resetListeners.delete(listener);
  }

  /** Append output from the guest. Called by the VMM's console pump. */
  push(bytes: Uint8Array): void {
    for (const listener of this.byteListeners) listener(bytes);
    this.text += this.decoder.decode(bytes, { stream: true });
    if (this.text.length > MAX_TRANSCRIPT_CHARS) {
      const drop = this.text.length - MAX_TRANSCRIPT_CHARS / 2;
      this.text = this.text.slice(drop);
      this.cursor = Math.max(0, this.cursor - drop);
    }
    this.check();
  }

  /** Start a new transcript (a fresh boot): pending waits are rejected with `reason`. */
  reset(reason: string): void {
    this.failWaiters(reason);
    this.text = '';
    this.cursor = 0;
    this.decoder = new TextDecoder();
    for (const listener of this.resetListeners) listener();
  }

  /** Reject every pending waitFor with `reason` (the VM stopped or crashed). */
  failWaiters(reason: string): void {
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(this.error(reason));
    }
    this.waiters.clear();
  }

  /** Drop every listener and pending wait. */
  dispose(reason: string): void {
    this.failWaiters(reason);
    this.byteListeners.clear();
    this.resetListeners.clear();
  }

  private check(): void {
    for (const waiter of this.waiters) {
      const from = this.cursor;
      const found = waiter.find(this.text.slice(from));
      if (!found) continue;
      this.cursor = from + found.end;
      this.waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.resolve(this.text.slice(from, this.cursor));
    }
  }

  private error(reason: string): Error {
    const tail = this.text.slice(-ERROR_TAIL_CHARS);
    return new Error(`${reason}; the console's last output:\n${tail}`);
  }
}
