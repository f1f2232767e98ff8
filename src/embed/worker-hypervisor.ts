/**
 * The page side of single-worker mode (no cross-origin isolation): a {@link TabvisorApi} whose VMs each live in one
 * dedicated worker ({@link VmHostApi}). The console's transcript and `waitFor` live here, fed by batched output
 * events, so scripts see the same API as in parallel mode.
 */
import { expose, releaseProxy, transfer, wrap, type Remote } from 'comlink';
import { UserError } from '../common/errors.ts';
import {
  DEFAULT_CPUS,
  DEFAULT_MEMORY_MIB,
  HOST_FRAME_BYTES,
  MAX_HOST_RAM_MIB,
  checkVmConfig,
} from '../machine/vm-limits.ts';
import type {
  BootImages,
  HostRamStats,
  RunOptions,
  RunResult,
  TabvisorApi,
  TabvisorVm,
  VmConfig,
  VmState,
  VmStats,
} from '../machine/hypervisor.ts';
import { runCommand } from '../machine/run-command.ts';
import { VmConsole } from '../machine/vm-console.ts';
import type { GuestBase } from './guest.ts';
import type { VmHostApi, VmHostEvent } from './vm-host.ts';
import { hostWorkerName } from './vm-host-plan.ts';

/** Options of a {@link WorkerHypervisor}. */
export interface WorkerHypervisorOptions {
  /**
   * What each VM's worker needs to read its guest itself and create its VM as soon as it loads (see
   * vm-host.worker.ts): where the config's URLs resolve, and the images (served from the page when the VM boots
   * cold). The config must be JSON-safe (it goes in the worker's name).
   */
  readonly plan: (config: VmConfig) => {
    readonly base: GuestBase;
    readonly images: () => Promise<BootImages>;
  };
  /** Memory all VMs of the page may use together, in MiB (each VM has its own ArrayBuffer). */
  readonly budgetMiB?: number;
  readonly defaults?: { readonly cpus?: number; readonly memoryMiB?: number };
}

/** VMs in one worker each, all vCPUs time-sliced there over an ordinary ArrayBuffer. */
export class WorkerHypervisor implements TabvisorApi {
  private readonly list: RemoteVm[] = [];
  private readonly listeners = new Set<() => void>();
  private nextId = 1;
  private readonly budgetMiB: number;

  constructor(private readonly options: WorkerHypervisorOptions) {
    this.budgetMiB = options.budgetMiB ?? 1024;
  }

  get vms(): readonly TabvisorVm[] {
    return [...this.list];
  }

  vm(idOrName: string): TabvisorVm | undefined {
    return this.list.find((vm) => vm.id === idOrName || vm.name === idOrName);
  }

  hostRam(): HostRamStats {
    const used = this.list.reduce((n, vm) => n + vm.memoryMiB, 0);
    const frames = (mib: number): number => (mib * (1 << 20)) / HOST_FRAME_BYTES;
    return {
      totalFrames: frames(this.budgetMiB),
      freeFrames: frames(this.budgetMiB - used),
      frameBytes: HOST_FRAME_BYTES,
    };
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async createVM(config: VmConfig = {}): Promise<TabvisorVm> {
    const id = String(this.nextId++);
    const shape = {
      name: config.name ?? `vm-${id}`,
      cpus: config.cpus ?? this.options.defaults?.cpus ?? DEFAULT_CPUS,
      memoryMiB: config.memoryMiB ?? this.options.defaults?.memoryMiB ?? DEFAULT_MEMORY_MIB,
    };
    const freeMiB =
      Math.min(MAX_HOST_RAM_MIB, this.budgetMiB) - this.list.reduce((n, vm) => n + vm.memoryMiB, 0);
    const problem = checkVmConfig(
      shape,
      freeMiB,
      this.list.map((vm) => vm.name),
    );
    if (problem !== undefined) throw new UserError(problem);
    const full = { ...config, ...shape };
    const plan = this.options.plan(config);
    // The worker reads the guest (the boot snapshot, say) and creates the VM itself, from its name.
    const worker = new Worker(new URL('./vm-host.worker.ts', import.meta.url), {
      type: 'module',
      name: hostWorkerName(`${shape.name}/vcpus`, { id, config: full, base: plan.base }),
    });
    const vm = new RemoteVm(this, id, shape.name, shape.cpus, shape.memoryMiB, worker);
    this.list.push(vm);
    // Images stay on the page until the VM boots cold and asks for them (a snapshot start never does).
    const port = this.serveImages(vm, plan.images);
    try {
      // Only a size the page gave: otherwise a VM restored from a boot snapshot keeps the snapshot's.
      const size = vm.console.sizeGiven ? vm.console.size() : undefined;
      // The host says when its VM is there without waiting for this message, which may reach it only after the
      // page's thread was free (see vm-host.worker.ts); the reply settles it too.
      const creating = vm.host.create(transfer({ images: port }, [port]), size);
      await Promise.race([vm.planned, vm.loadFailed, creating]);
    } catch (error) {
      vm.dispose();
      this.remove(vm);
      throw error;
    }
    this.notify();
    return vm;
  }

  /**
   * A port on which the page serves `images` to `vm`'s worker (one comlink call when it boots cold), for the
   * message that moves it there.
   */
  private serveImages(vm: RemoteVm, images: () => Promise<BootImages>): MessagePort {
    const channel = new MessageChannel();
    expose(images, channel.port1);
    vm.imagePort = channel.port1;
    return channel.port2;
  }

  /** Delete every VM (terminating their workers). */
  async dispose(): Promise<void> {
    await Promise.all(this.list.map((vm) => vm.delete()));
    this.listeners.clear();
  }

  /** @internal */
  remove(vm: RemoteVm): void {
    const at = this.list.indexOf(vm);
    if (at >= 0) this.list.splice(at, 1);
    this.notify();
  }

  /** @internal */
  notify(): void {
    for (const listener of this.listeners) listener();
  }
}

/** A VM in its own worker, as the page API shows it. */
class RemoteVm implements TabvisorVm {
  state: VmState = 'created';
  reason: string | undefined;
  readonly console: VmConsole;
  readonly host: Remote<VmHostApi>;
  private latest: VmStats;
  private runs: Promise<unknown> = Promise.resolve();
  private disposed = false;
  /** @internal The page's end of the port that serves the images to the worker (closed on dispose). */
  imagePort: MessagePort | undefined;
  /** @internal Settles when the VM's host says it was created, or could not be. */
  readonly planned: Promise<void>;
  /** @internal Rejects when the worker fails (its code did not load, say); never resolves. */
  readonly loadFailed: Promise<never>;
  private settlePlanned!: (error?: Error) => void;
  private failLoad!: (error: Error) => void;

  constructor(
    private readonly owner: WorkerHypervisor,
    readonly id: string,
    readonly name: string,
    readonly cpus: number,
    readonly memoryMiB: number,
    private readonly worker: Worker,
  ) {
    this.host = wrap<VmHostApi>(worker);
    this.planned = new Promise<void>((resolve, reject) => {
      this.settlePlanned = (error) => (error ? reject(error) : resolve());
    });
    this.loadFailed = new Promise<never>((_, reject) => (this.failLoad = reject));
    this.planned.catch(() => undefined);
    this.loadFailed.catch(() => undefined);
    this.console = new VmConsole(
      (bytes) => {
        if (!this.disposed) void this.host.write(bytes);
      },
      ({ cols, rows }) => {
        if (!this.disposed) void this.host.resize(cols, rows);
      },
    );
    this.latest = {
      id,
      name,
      state: 'created',
      reason: undefined,
      cpus,
      memoryMiB,
      hostFrames: 0,
      frameBytes: HOST_FRAME_BYTES,
      threads: 0,
      uptimeMs: 0,
      bootedFrom: 'cold',
      vcpus: Array.from({ length: cpus }, (_, hartId) => ({
        hartId,
        state: 'stopped',
        instructions: 0,
        ips: 0,
        jit: false,
        wasm: false,
      })),
    };
    worker.addEventListener('message', (event: MessageEvent<VmHostEvent | { id?: unknown }>) => {
      const data = event.data as Partial<VmHostEvent> | undefined;
      if (!data || typeof data !== 'object' || !('tabvisor' in data)) return;
      this.onEvent(data as VmHostEvent);
    });
    worker.addEventListener('error', (event: ErrorEvent) => {
      event.preventDefault();
      this.setState('crashed', `its worker failed: ${event.message || 'it did not load'}`);
      this.failLoad(new Error(`VM ${name}'s worker failed: ${event.message || 'its code did not load'}`));
      this.console.failWaiters(this.reason ?? 'crashed');
    });
  }

  private onEvent(event: VmHostEvent): void {
    if (event.tabvisor === 'output') this.console.push(event.bytes);
    else if (event.tabvisor === 'reset') this.console.reset('the VM booted again');
    else if (event.tabvisor === 'created') this.settlePlanned();
    else if (event.tabvisor === 'failed') {
      const error = event.name === 'UserError' ? new UserError(event.message) : new Error(event.message);
      this.settlePlanned(error);
    } else {
      this.latest = { ...event.stats, id: this.id, name: this.name };
      if (event.state !== this.state) {
        if (event.state !== 'running' && event.state !== 'paused')
          this.console.failWaiters(event.reason ?? event.state);
        this.setState(event.state === 'deleted' ? this.state : event.state, event.reason);
      } else {
        this.owner.notify();
      }
    }
  }

  private setState(state: VmState, reason?: string): void {
    this.state = state;
    this.reason = reason;
    this.owner.notify();
  }

  start(): Promise<void> {
    return this.call(() => this.host.start());
  }

  pause(): Promise<void> {
    return this.call(() => this.host.pause());
  }

  resume(): Promise<void> {
    return this.call(() => this.host.resume());
  }

  stop(): Promise<void> {
    return this.call(() => this.host.stop());
  }

  reset(): Promise<void> {
    return this.call(() => this.host.reset());
  }

  async delete(): Promise<void> {
    if (this.disposed) return;
    await this.host.delete().catch(() => undefined);
    this.dispose();
    this.console.dispose('the VM was deleted');
    this.setState('deleted');
    this.owner.remove(this);
  }

  stats(): VmStats {
    return {
      ...this.latest,
      state: this.state,
      reason: this.reason,
      threads: this.state === 'running' || this.state === 'paused' ? 1 : 0,
    };
  }

  killVcpu(): boolean {
    return false;
  }

  run(command: string, options?: RunOptions): Promise<RunResult> {
    const run = this.runs.then(() => runCommand(this.console, command, options));
    this.runs = run.catch(() => undefined);
    return run;
  }

  snapshot(): Promise<Uint8Array> {
    return this.call(() => this.host.snapshot());
  }

  /** Terminate the worker and drop the comlink proxy. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.host[releaseProxy]();
    this.imagePort?.close();
    this.worker.terminate();
  }

  private async call<T>(operation: () => Promise<T>): Promise<T> {
    if (this.disposed) throw new UserError(`VM ${this.name} was deleted`);
    return operation();
  }
}
