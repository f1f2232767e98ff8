/**
 * One VM hosted in a dedicated worker, for pages that are not cross-origin isolated: the worker runs a whole
 * {@link Hypervisor} with host RAM on an ordinary ArrayBuffer and every vCPU time-sliced on its own thread
 * ({@link CooperativeThreads}), plus the console pump. The page drives it through {@link VmHostApi} (comlink) and
 * receives {@link VmHostEvent}s on the same port: console output batched every {@link OUTPUT_FLUSH_MS}, transcript
 * resets and status. This module also runs in-process (tests).
 */
import { expose, releaseProxy, wrap, type Endpoint } from 'comlink';
import { CooperativeThreads } from '../machine/cooperative-threads.ts';
import { pageNetworkEnvironment } from '../machine/networks.ts';
import type { HostPlan } from './vm-host-plan.ts';
import { DEFAULT_MEMORY_MIB } from '../machine/vm-limits.ts';
import {
  Hypervisor,
  MIN_MEMORY_MIB,
  type BootImages,
  type ConsoleSize,
  type GuestBoot,
  type TabvisorVm,
  type VmConfig,
  type VmState,
  type VmStats,
} from '../machine/hypervisor.ts';

/**
 * Console output is sent to the page at most this often (one message per batch, never one per byte). Output after
 * a quiet spell goes at once: an echo of a keystroke, a command's answer.
 */
export const OUTPUT_FLUSH_MS = 8;

/** A message from the VM host to the page (posted alongside comlink's replies, which carry an `id`). */
export type VmHostEvent =
  | { readonly tabvisor: 'output'; readonly bytes: Uint8Array }
  | { readonly tabvisor: 'reset' }
  /** A planned VM was created (and started, unless its plan said not to), or could not be; posted once. */
  | { readonly tabvisor: 'created'; readonly identity: VmIdentity }
  | { readonly tabvisor: 'failed'; readonly name: string; readonly message: string }
  | {
      readonly tabvisor: 'status';
      readonly state: VmState;
      readonly reason: string | undefined;
      readonly stats: VmStats;
    };

/**
 * What `create` brings the host for its VM: the images, for when it boots cold (the rest of the guest the host
 * read itself): their bytes, or (so that a VM started from its boot snapshot never fetches them) a port on which
 * the page answers one comlink call, `() => Promise<BootImages>`. The host releases the port when the VM is
 * deleted.
 */
export interface HostedImages {
  readonly images: BootImages | MessagePort;
}

/**
 * The VM a host creates as soon as it is built, without waiting for the page's `create` (which still comes,
 * with the images for a cold boot): its plan (from the worker's name) and its guest, being read since the
 * worker's entry ran.
 */
export interface PlannedVm {
  readonly plan: HostPlan;
  readonly guest: Promise<GuestBoot>;
}

/** What `create` resolves with. */
export interface VmIdentity {
  readonly name: string;
  readonly cpus: number;
  readonly memoryMiB: number;
}

/** The VM host's control API (comlink, version 1). */
export interface VmHostApi {
  /**
   * Bring the planned VM its images (used only if it boots cold) and its console `size` (the page's terminal).
   * The host creates and, unless its plan says `start: false`, starts the VM without waiting for this, and posts
   * `created` or `failed` itself. Resolves with its identity once it is there; rejects, leaving no VM, when it
   * cannot be created or started, or the host has no plan.
   */
  create(guest: HostedImages, size?: ConsoleSize): Promise<VmIdentity>;
  start(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  stop(): Promise<void>;
  reset(): Promise<void>;
  delete(): Promise<void>;
  write(bytes: Uint8Array): void;
  /** The page's terminal changed size (see TabvisorConsole.resize); before `create`, the size is kept for it. */
  resize(cols: number, rows: number): void;
  snapshot(): Promise<Uint8Array>;
}

/**
 * Console output on its way to the page: one message per batch, at most one per {@link OUTPUT_FLUSH_MS}; output
 * after a quiet spell goes at the end of the current turn (a microtask), so an echo is not held back a whole
 * interval. `now` is the clock (tests).
 */
export class OutputBatcher {
  private pending: Uint8Array[] = [];
  private scheduled = false;
  private lastSentAt = -Infinity;

  constructor(
    private readonly send: (bytes: Uint8Array<ArrayBuffer>) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Send `bytes` (kept, not copied) with the next batch. */
  push(bytes: Uint8Array): void {
    this.pending.push(bytes);
    if (this.scheduled) return;
    this.scheduled = true;
    const wait = this.lastSentAt + OUTPUT_FLUSH_MS - this.now();
    if (wait <= 0) queueMicrotask(() => this.flush());
    else setTimeout(() => this.flush(), wait);
  }

  /** Send what is pending now, as one message. */
  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    this.lastSentAt = this.now();
    const total = this.pending.reduce((n, b) => n + b.length, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const chunk of this.pending) {
      bytes.set(chunk, at);
      at += chunk.length;
    }
    this.pending = [];
    this.send(bytes);
  }
}

/**
 * Build the host; `post` sends events to the page. With `planned`, the host creates (and unless the plan says
 * `start: false`, starts) that VM at once, and `create` waits for it; without, it has no VM to create.
 */
export function createVmHost(
  post: (event: VmHostEvent, transfer?: Transferable[]) => void,
  planned?: PlannedVm,
): VmHostApi {
  let hv: Hypervisor | undefined;
  let vm: TabvisorVm | undefined;
  let consoleSize: ConsoleSize | undefined;
  let releaseImages: (() => void) | undefined;
  let deleted = false;
  const output = new OutputBatcher((bytes) => post({ tabvisor: 'output', bytes }, [bytes.buffer]));
  const need = (): TabvisorVm => {
    if (!vm) throw new Error('the VM host has no VM yet; call create first');
    return vm;
  };
  /** The images as the page sent them: bytes, or a loader over the port that serves them. */
  const imagesOf = (images: BootImages | MessagePort): GuestBoot['images'] => {
    if ('kernel' in images) return images;
    const load = wrap<() => BootImages>(images);
    releaseImages = () => load[releaseProxy]();
    return () => load();
  };
  const build = async (id: string, config: VmConfig, boot: GuestBoot): Promise<VmIdentity> => {
    const memoryMiB = config.memoryMiB ?? DEFAULT_MEMORY_MIB;
    hv = new Hypervisor({
      hostRamMiB: Math.max(memoryMiB, MIN_MEMORY_MIB),
      sharedMemory: false,
      // NICs join the page's networks through the same BroadcastChannel uplink other tabs use.
      network: pageNetworkEnvironment(),
      threads: () => new CooperativeThreads(false),
      images: async () => boot,
    });
    hv.onChange(() => {
      if (!vm) return;
      output.flush();
      post({ tabvisor: 'status', state: vm.state, reason: vm.reason, stats: { ...vm.stats(), id } });
    });
    const created = await hv.createVM({ ...config, start: false });
    if (deleted) {
      await created.delete().catch(() => undefined);
      await hv.dispose();
      throw new Error('the VM was deleted while it was being created');
    }
    vm = created;
    if (consoleSize) created.console.resize(consoleSize.cols, consoleSize.rows);
    // What the console shows already (a VM restored from a boot snapshot shows the snapshot's prompt) goes
    // first: the page's transcript must start with it, as this one does.
    const shown = created.console.transcript();
    if (shown !== '') output.push(new TextEncoder().encode(shown));
    created.console.onOutput((bytes) => output.push(bytes.slice()));
    created.console.onReset(() => {
      output.flush();
      post({ tabvisor: 'reset' });
    });
    if (config.start !== false) {
      try {
        await created.start();
      } catch (error) {
        vm = undefined;
        await created.delete().catch(() => undefined);
        throw error;
      }
    }
    return { name: created.name, cpus: created.cpus, memoryMiB: created.memoryMiB };
  };
  // A planned VM's cold boot waits for the images the page sends with `create`.
  let imagesArrived!: (images: GuestBoot['images']) => void;
  const pageImages = new Promise<GuestBoot['images']>((resolve) => (imagesArrived = resolve));
  const early = planned?.guest.then((guest) =>
    build(planned.plan.id, planned.plan.config, {
      ...guest,
      images: async () => {
        const images = await pageImages;
        return typeof images === 'function' ? images() : images;
      },
    }),
  );
  // Told to the page at once: its `create` may reach this worker only much later (see vm-host.worker.ts).
  early?.then(
    (identity) => post({ tabvisor: 'created', identity }),
    (error: unknown) =>
      post({
        tabvisor: 'failed',
        name: error instanceof Error ? error.name : 'Error',
        message: error instanceof Error ? error.message : String(error),
      }),
  );
  return {
    async create(guest, size) {
      consoleSize ??= size;
      if (!early) throw new Error("the VM host has no plan: its worker's name did not carry one");
      imagesArrived(imagesOf(guest.images));
      const identity = await early;
      if (size) vm?.console.resize(size.cols, size.rows);
      return identity;
    },
    start: () => need().start(),
    pause: () => need().pause(),
    resume: () => need().resume(),
    stop: () => need().stop(),
    reset: () => need().reset(),
    async delete() {
      deleted = true;
      await vm?.delete();
      await hv?.dispose();
      releaseImages?.();
      releaseImages = undefined;
      output.flush();
    },
    write(bytes) {
      need().console.write(new TextDecoder().decode(bytes));
    },
    resize(cols, rows) {
      consoleSize = { cols, rows };
      vm?.console.resize(cols, rows);
    },
    snapshot: () => need().snapshot(),
  };
}

/**
 * Serve {@link createVmHost} (with its `planned` VM) on `endpoint` (the worker's scope) with comlink, answering
 * `early` first: the messages that arrived before this module was loaded (vm-host.worker.ts holds them), in
 * their order.
 */
export function serveVmHost(endpoint: Endpoint, early: MessageEvent[], planned?: PlannedVm): void {
  const replaying: Endpoint = {
    postMessage: (message: unknown, transfer?: Transferable[]) => endpoint.postMessage(message, transfer),
    addEventListener: (type, listener, options) => {
      endpoint.addEventListener(type, listener, options);
      for (const event of early.splice(0)) {
        if (typeof listener === 'function') listener(event);
        else listener.handleEvent(event);
      }
    },
    removeEventListener: (type, listener, options) => endpoint.removeEventListener(type, listener, options),
    start: () => endpoint.start?.(),
  };
  expose(
    createVmHost((event, transfer) => endpoint.postMessage(event, transfer ?? []), planned),
    replaying,
  );
}
