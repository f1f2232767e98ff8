/**
 * The page's one hypervisor for every embedded VM (all `<tabvisor-vm>` elements and `createVM` calls share it):
 * with cross-origin isolation, the page VMM with one worker per vCPU over one shared host RAM; without it, one
 * worker per VM with every vCPU time-sliced inside ({@link WorkerHypervisor}). Both show the same
 * {@link TabvisorApi}.
 */
import type {
  GuestBoot,
  HostRamStats,
  TabvisorApi,
  TabvisorVm,
  VmConfig,
  Hypervisor,
} from '../machine/hypervisor.ts';
import type { TabvisorNetwork } from '../machine/networks.ts';
import { DEFAULT_CPUS, DEFAULT_MEMORY_MIB, HOST_FRAME_BYTES } from '../machine/vm-limits.ts';
import {
  guestImages,
  pageGuestBase,
  resolveGuest,
  snapshotKey,
  storeSnapshot,
  type EmbedVmConfig,
} from './guest.ts';
import { WorkerHypervisor } from './worker-hypervisor.ts';
import { prepareBrowserThreads } from '../machine/browser-threads.ts';

/** How the page runs VMs: `parallel` (a worker per vCPU, shared memory) or `single-worker` (no isolation). */
export type EmbedMode = 'parallel' | 'single-worker';

/** Host RAM reserved for embedded VMs, in MiB (committed by the OS only when touched). */
const EMBED_HOST_RAM_MIB = 1024;
/** How often a cold-booted VM in snapshot `auto` mode checks for its first shell prompt. */
const PROMPT_POLL_MS = 100;
/** How long it may take to get there before no snapshot is saved. */
const PROMPT_WAIT_MS = 120_000;
/** A shell prompt at the end of the output (busybox ends a prompt redrawn after a resize with ESC [ J). */
const PROMPT_AT_END = /[#$] (?:\x1b\[J)?$/;

let shared:
  { readonly api: TabvisorApi; readonly mode: EmbedMode; readonly dispose: () => Promise<void> } | undefined;

/** Which mode this page runs VMs in. */
export function embedMode(): EmbedMode {
  return globalThis.crossOriginIsolated === true ? 'parallel' : 'single-worker';
}

/** The page's shared hypervisor (created on first use); {@link embedMode} says how it runs VMs. */
export function hypervisor(): TabvisorApi {
  if (!shared) {
    const mode = embedMode();
    if (mode === 'parallel') {
      const hv = new ParallelHypervisor(
        (guest) =>
          import('./parallel-hypervisor.ts').then((m) =>
            m.createParallelHypervisor(EMBED_HOST_RAM_MIB, guest),
          ),
        (config) =>
          resolveGuest(
            config as EmbedVmConfig,
            config.cpus ?? DEFAULT_CPUS,
            config.memoryMiB ?? DEFAULT_MEMORY_MIB,
          ),
        prepareBrowserThreads,
      );
      shared = { api: hv, mode, dispose: () => hv.dispose() };
    } else {
      const hv = new WorkerHypervisor({
        // Each VM's worker reads its boot snapshot and manifest itself, as soon as it loads: on the page that
        // waits for a thread busy with the terminals (ARCHITECTURE.md, "Snapshot start").
        plan: (config) => ({ base: pageGuestBase(), images: guestImages(config as EmbedVmConfig) }),
      });
      shared = { api: hv, mode, dispose: () => hv.dispose() };
    }
  }
  return shared.api;
}

/**
 * @internal The parallel-mode API while its VMM (`parallel-hypervisor.ts`, a chunk of its own) loads, and
 * after. Loading starts at once; until it is done the page has no VMs (every VM comes from `createVM`, which
 * waits for it), its host RAM is all free, and listeners wait to be attached. A load that fails fails the
 * `createVM` calls waiting for it with a message that names the chunk, and the next `createVM` tries again.
 */
export class ParallelHypervisor implements TabvisorApi {
  #hv: Hypervisor | undefined;
  #loading: Promise<Hypervisor> | undefined;
  /** Listeners added before the VMM was there, with their unsubscribe from it once attached. */
  readonly #waiting = new Set<{ readonly listener: () => void; off?: () => void }>();
  /** Guests being resolved for `createVM` calls, by their config object, until the VMM asks for them. */
  readonly #early = new WeakMap<VmConfig, Promise<GuestBoot>>();

  /**
   * `load` loads the VMM, which gets its guests from the function passed to it; `guest` resolves a config's
   * guest (manifest, images or boot snapshot); `prepareThreads` starts vCPU workers ahead of need (the VMM
   * must not start them again).
   */
  constructor(
    private readonly load: (guest: (config: VmConfig) => Promise<GuestBoot>) => Promise<Hypervisor>,
    private readonly guest: (config: VmConfig) => Promise<GuestBoot>,
    private readonly prepareThreads?: (count: number) => void,
  ) {
    // Fetch the chunk now, beside whatever the page does next; a failure is reported by createVM.
    this.#ensure().catch(() => undefined);
  }

  /** The guest of `config`: the one `createVM` started resolving, else a new resolution. */
  #guestOf = (config: VmConfig): Promise<GuestBoot> => {
    const early = this.#early.get(config);
    this.#early.delete(config);
    return early ?? this.guest(config);
  };

  #ensure(): Promise<Hypervisor> {
    this.#loading ??= this.load(this.#guestOf).then(
      (hv) => {
        this.#hv = hv;
        for (const entry of this.#waiting) entry.off = hv.onChange(entry.listener);
        return hv;
      },
      (error: unknown) => {
        this.#loading = undefined;
        const reason = error instanceof Error ? error.message : String(error);
        throw new Error(
          `tabvisor could not load its VM monitor (the parallel-hypervisor chunk next to the module): ${reason}`,
          { cause: error },
        );
      },
    );
    return this.#loading;
  }

  get vms(): readonly TabvisorVm[] {
    return this.#hv?.vms ?? [];
  }

  async createVM(config: VmConfig = {}): Promise<TabvisorVm> {
    // The guest's manifest and boot snapshot are read, and its vCPU workers load, while the VMM chunk loads,
    // not after. (If the VM is then refused, say for its size, nothing waits for them; spare workers expire.)
    this.prepareThreads?.(config.cpus ?? DEFAULT_CPUS);
    const early = this.guest(config);
    early.catch(() => undefined);
    this.#early.set(config, early);
    return (await this.#ensure()).createVM(config);
  }

  vm(idOrName: string): TabvisorVm | undefined {
    return this.#hv?.vm(idOrName);
  }

  hostRam(): HostRamStats {
    if (this.#hv) return this.#hv.hostRam();
    const frames = (EMBED_HOST_RAM_MIB << 20) / HOST_FRAME_BYTES;
    return { totalFrames: frames, freeFrames: frames, committedFrames: 0, frameBytes: HOST_FRAME_BYTES };
  }

  onChange(listener: () => void): () => void {
    if (this.#hv) return this.#hv.onChange(listener);
    const entry: { readonly listener: () => void; off?: () => void } = { listener };
    this.#waiting.add(entry);
    return () => {
      this.#waiting.delete(entry);
      entry.off?.();
    };
  }

  networks(): string[] {
    return this.#hv?.networks() ?? [];
  }

  network(name: string): TabvisorNetwork | undefined {
    return this.#hv?.network(name);
  }

  async dispose(): Promise<void> {
    const hv = this.#hv ?? (await this.#loading?.catch(() => undefined));
    await hv?.dispose();
  }
}

/**
 * Create a VM on the page's shared hypervisor (`import { createVM } from 'tabvisor'`). Takes everything
 * `window.tabvisor.createVM` takes, plus the guest image and boot snapshot ({@link EmbedVmConfig}). In snapshot
 * `auto` mode (the default), a VM that booted cold saves a boot snapshot at its first shell prompt, so the next
 * VM with the same image and shape (in this browser) starts from it.
 */
export async function createVM(config: EmbedVmConfig = {}): Promise<TabvisorVm> {
  const vm = await hypervisor().createVM(config);
  // Embedded VMs have no disks, so every cold boot can leave a snapshot (NICs included: a VM restored from it
  // takes its own MAC and DHCP lease, see Vm.fromSnapshot).
  if ((config.snapshot ?? 'auto') === 'auto' && vm.stats().bootedFrom === 'cold') {
    saves.set(vm, saveBootSnapshot(vm, config));
  }
  return vm;
}

/** Boot snapshots being saved, per VM (true once stored). */
const saves = new WeakMap<TabvisorVm, Promise<boolean>>();

/**
 * Resolves when the VM's boot snapshot (snapshot `auto` mode, cold boot) has been saved (true) or will not be
 * (false); at once for other VMs. Wait for it before typing, so the snapshot holds an idle shell.
 */
export function bootSnapshotSaved(vm: TabvisorVm): Promise<boolean> {
  return saves.get(vm) ?? Promise.resolve(false);
}

/** Wait for the VM's first shell prompt (without consuming console matches) and save a boot snapshot. */
async function saveBootSnapshot(vm: TabvisorVm, config: EmbedVmConfig): Promise<boolean> {
  const deadline = performance.now() + PROMPT_WAIT_MS;
  while (performance.now() < deadline) {
    if (vm.state === 'deleted' || vm.state === 'stopped' || vm.state === 'crashed') return false;
    const text = vm.console.transcript();
    if (vm.state === 'running' && PROMPT_AT_END.test(text)) {
      try {
        const bytes = await vm.snapshot();
        // Keep it only if nothing happened meanwhile (the snapshot must be at an idle prompt).
        if (vm.console.transcript() !== text) return false;
        await storeSnapshot(config, snapshotKey(config, vm.cpus, vm.memoryMiB, config.bootargs ?? ''), bytes);
        return true;
      } catch {
        // No snapshot this time: the next VM boots cold again.
        return false;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, PROMPT_POLL_MS));
  }
  return false;
}

/** Delete every embedded VM and forget the shared hypervisor (tests, page teardown). */
export async function disposeHypervisor(): Promise<void> {
  const current = shared;
  shared = undefined;
  await current?.dispose();
}
