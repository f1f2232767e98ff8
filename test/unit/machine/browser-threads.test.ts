import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { HartThreadInit } from '../../../src/machine/hart-thread.ts';

/** A stand-in for the browser's Worker: records what happens to it, fires events on demand. */
class FakeWorker {
  static made: FakeWorker[] = [];
  readonly listeners = new Map<string, Set<(event: unknown) => void>>();
  readonly posted: unknown[] = [];
  terminated = false;
  constructor(
    readonly url: URL,
    readonly options: { type: string; name: string },
  ) {
    FakeWorker.made.push(this);
  }
  addEventListener(type: string, listener: (event: unknown) => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)?.add(listener);
  }
  removeEventListener(type: string, listener: (event: unknown) => void): void {
    this.listeners.get(type)?.delete(listener);
  }
  postMessage(message: unknown): void {
    this.posted.push(message);
  }
  terminate(): void {
    this.terminated = true;
  }
  fail(message: string): void {
    const event = { message, preventDefault: () => undefined };
    for (const listener of this.listeners.get('error') ?? []) listener(event);
  }
}

const init = (hartId: number) => ({ hartId }) as unknown as HartThreadInit;

describe('vCPU workers started ahead of need (BrowserThreads spares)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.stubGlobal('Worker', FakeWorker);
    vi.resetModules(); // a fresh module: no spares left over from another test
    FakeWorker.made = [];
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it('spawn adopts a prepared worker (module already loading) instead of starting one; spares are bounded', async () => {
    const { BrowserThreads, MAX_SPARE_WORKERS, prepareBrowserThreads, spareBrowserThreads } =
      await import('../../../src/machine/browser-threads.ts');
    prepareBrowserThreads(2);
    expect(FakeWorker.made.map((w) => w.options)).toEqual([
      { type: 'module', name: 'vcpu (spare)' },
      { type: 'module', name: 'vcpu (spare)' },
    ]);
    expect(FakeWorker.made[0].url.pathname).toMatch(/hart\.worker\.ts$/);
    const threads = new BrowserThreads('a/');
    threads.spawn(
      init(0),
      () => undefined,
      () => undefined,
    );
    threads.spawn(
      init(1),
      () => undefined,
      () => undefined,
    );
    expect(FakeWorker.made).toHaveLength(2); // both adopted
    expect(FakeWorker.made.map((w) => w.posted)).toEqual([[init(0)], [init(1)]]);
    expect(spareBrowserThreads()).toBe(0);
    threads.spawn(
      init(2),
      () => undefined,
      () => undefined,
    );
    expect(FakeWorker.made[2].options.name).toBe('a/vcpu-2'); // none left: a new, named worker
    prepareBrowserThreads(1000);
    expect(spareBrowserThreads()).toBe(MAX_SPARE_WORKERS);
  });

  it('a spare nobody adopts is terminated after its lifetime', async () => {
    const { SPARE_WORKER_LIFETIME_MS, prepareBrowserThreads, spareBrowserThreads } =
      await import('../../../src/machine/browser-threads.ts');
    prepareBrowserThreads(1);
    vi.advanceTimersByTime(SPARE_WORKER_LIFETIME_MS - 1);
    expect(FakeWorker.made[0].terminated).toBe(false);
    vi.advanceTimersByTime(1);
    expect(FakeWorker.made[0].terminated).toBe(true);
    expect(spareBrowserThreads()).toBe(0);
  });

  it('a spare that failed to load before adoption is replaced; a failure after adoption reaches the VM', async () => {
    const { BrowserThreads, prepareBrowserThreads } = await import('../../../src/machine/browser-threads.ts');
    prepareBrowserThreads(1);
    FakeWorker.made[0].fail('module script failed');
    const errors: string[] = [];
    new BrowserThreads('b/').spawn(
      init(0),
      () => undefined,
      (error) => errors.push(error.message),
    );
    expect(FakeWorker.made[0].terminated).toBe(true);
    expect(FakeWorker.made).toHaveLength(2);
    expect(FakeWorker.made[1].posted).toEqual([init(0)]);
    expect(errors).toEqual([]); // the failed spare's error was not the new VM's
    FakeWorker.made[1].fail('boom');
    expect(errors).toEqual(['boom']);
  });
});
