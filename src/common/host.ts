/**
 * The few host facilities the pure core uses, reached through globalThis so cpu/, mem/ and devices/ build
 * without DOM or Node types. Every JavaScript host we support (browsers, workers, Node 20+) provides them.
 */
interface HostPerformance {
  now(): number;
  readonly timeOrigin: number;
}

const perf = (globalThis as unknown as { performance: HostPerformance }).performance;

/**
 * A variable of the host's process environment (Node, including its worker threads), or undefined where there
 * is none (browsers).
 */
export function hostEnvironment(name: string): string | undefined {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.[name];
}

/**
 * An on/off switch of the host's environment: `0`, `false` or `off` is false, `1`, `true` or `on` is true;
 * undefined when unset (or set to anything else), so the caller's default applies.
 */
export function hostSwitch(name: string): boolean | undefined {
  const setting = hostEnvironment(name);
  if (setting === '0' || setting === 'false' || setting === 'off') return false;
  if (setting === '1' || setting === 'true' || setting === 'on') return true;
  return undefined;
}

/** Milliseconds since the Unix epoch with sub-millisecond precision, comparable across workers of one process. */
export function wallClockMs(): number {
  return perf.timeOrigin + perf.now();
}

interface HostTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const timers = globalThis as unknown as HostTimers;

/** Call `callback` after `ms` (the host's setTimeout); returns a function that cancels it. */
export function afterMs(ms: number, callback: () => void): () => void {
  const handle = timers.setTimeout(callback, ms);
  return () => timers.clearTimeout(handle);
}
