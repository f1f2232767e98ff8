/**
 * The VMM of the page: one host RAM for every VM, VMs with a lifecycle (created, running, paused, stopped,
 * crashed, deleted), a console each, and live figures. It uses no DOM: the page (src/ui) wires it to terminals
 * and buttons, tests drive it through `window.tabvisor`, and it runs in Node as well with Node's threads.
 */
import { UserError } from '../common/errors.ts';
import type { BlockBackend } from '../devices/block-backend.ts';
import { FRAME_SIZE, HostRam } from '../mem/host-ram.ts';
import type { LinuxBootImages } from './linux-boot.ts';
import { runCommand, type RunOptions, type RunResult } from './run-command.ts';
import { MAX_SCREEN_CHARS, decodeSnapshot, decodeSnapshotBlob, encodeSnapshot } from './snapshot.ts';
import { VmConsole, type ConsoleSize, type TabvisorConsole } from './vm-console.ts';
import {
  MAX_NICS,
  NetworkHub,
  resolveNic,
  type NetworkEnvironment,
  type NicConfig,
  type ResolvedNic,
  type TabvisorNetwork,
} from './networks.ts';
import {
  Vm,
  validateVmShape,
  type PowerEvent,
  type ThreadFactory,
  type VcpuRunState,
  type VmNic,
} from './vm.ts';
import {
  MAX_HARTS,
  MAX_HOST_RAM_MIB,
  MAX_MEMORY_MIB,
  MAX_NAME_LENGTH,
  MIN_MEMORY_MIB,
  checkVmConfig,
  DEFAULT_CPUS,
  DEFAULT_MEMORY_MIB,
} from './vm-limits.ts';

export { MAX_HARTS, MAX_HOST_RAM_MIB, MAX_MEMORY_MIB, MAX_NAME_LENGTH, MIN_MEMORY_MIB, checkVmConfig };
export type { ConsoleSize, RunOptions, RunResult, TabvisorConsole, VcpuRunState };
export type { NicConfig, ResolvedNic, TabvisorNetwork };

/** The kernel and initramfs a cold boot loads into guest RAM. */
export type BootImages = Omit<LinuxBootImages, 'bootargs'>;

/**
 * What a VM boots: its kernel command line, the images of a cold boot, and optionally a boot snapshot
 * (encodeSnapshot bytes) to start from instead. `images` is the bytes, or a loader that is called only when a
 * machine boots cold, so a VM that starts from its snapshot never fetches or unpacks a kernel.
 */
export interface GuestBoot {
  readonly bootargs: string;
  readonly images: BootImages | (() => Promise<BootImages>);
  /**
   * A boot snapshot file to start from: its bytes, or a Blob (as stored in IndexedDB), whose pages the vCPU
   * threads read and copy themselves when threads share memory (see Vm.fromSnapshot).
   */
  readonly snapshot?: Uint8Array | Blob;
}

/** How often per-vCPU instructions per second are sampled. */
export const STATS_INTERVAL_MS = 1000;

/**
 * Where a VM is in its life:
 * - `created`: memory reserved and the kernel loaded, not started (`createVM({ start: false })`);
 * - `running`, `paused`: its vCPU threads exist;
 * - `stopped`: stopped by `stop()` or powered off by the guest; its memory went back to host RAM;
 * - `crashed`: a vCPU thread threw or died, or the guest broke the machine; `reason` says which;
 * - `deleted`: gone from `tabvisor.vms`.
 */
export type VmState = 'created' | 'running' | 'paused' | 'stopped' | 'crashed' | 'deleted';

/** What `createVM` takes. Every field is optional. */
export interface VmConfig {
  /** Shown in the VM list; default `vm-<id>`. Up to 40 characters, unique. */
  readonly name?: string;
  /** vCPUs, 1 to 8 (default 2). */
  readonly cpus?: number;
  /** Guest RAM in MiB, 16 to 2048 and no more than the host RAM still free (default 128). */
  readonly memoryMiB?: number;
  /** Kernel command line; default from the image manifest. */
  readonly bootargs?: string;
  /** Start at once (default true). */
  readonly start?: boolean;
  /** NICs (virtio-net, eth0 first), each a port of its network's switch; default none. At most 4. */
  readonly nics?: readonly NicConfig[];
}

/** A VM's disks as the page's storage opened them for it (see {@link HypervisorOptions.disks}). */
export interface VmDiskSet {
  /** Attached at every boot in this order as /dev/vda, /dev/vdb, ... (read at each boot: it may grow). */
  readonly backends: readonly BlockBackend[];
  /** Boot from the first disk (`root=/dev/vda rw`, no initramfs). */
  readonly rootOnFirstDisk: boolean;
  /** A disk problem worth telling a person about (guest protocol error, full quota, I/O error). */
  onProblem?(message: string): void;
  /** The VM is gone: flush and close the disks; `erase` (the VM was deleted) also deletes their storage. */
  close(erase: boolean): Promise<void>;
}

/** One vCPU's live figures. */
export interface VcpuStats {
  readonly hartId: number;
  readonly state: VcpuRunState;
  /** Instructions retired since the VM booted. */
  readonly instructions: number;
  /** Instructions per second over the last sampling interval. */
  readonly ips: number;
  /** Whether the vCPU translates hot guest code to JavaScript (README "The block translator"). */
  readonly jit: boolean;
  /** Whether the vCPU runs the common path in WebAssembly (README "The WebAssembly tier"). */
  readonly wasm: boolean;
}

/** A VM's live figures. */
export interface VmStats {
  readonly id: string;
  readonly name: string;
  readonly state: VmState;
  readonly reason: string | undefined;
  readonly cpus: number;
  readonly memoryMiB: number;
  /** Host RAM frames the VM holds now (memoryMiB * 256 while it has a machine, 0 once stopped). */
  readonly hostFrames: number;
  readonly frameBytes: number;
  /** Live vCPU threads (workers). */
  readonly threads: number;
  /** Milliseconds since the current machine booted (0 without one). */
  readonly uptimeMs: number;
  /** How the current machine started: booted cold, or restored from a boot snapshot. */
  readonly bootedFrom: 'cold' | 'snapshot';
  readonly vcpus: readonly VcpuStats[];
}

/** One VM as the page API shows it. */
export interface TabvisorVm {
  readonly id: string;
  readonly name: string;
  readonly state: VmState;
  /** Why the VM crashed or stopped, in words. */
  readonly reason: string | undefined;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly console: TabvisorConsole;
  /**
   * The VM's NICs with their defaults filled in; NIC n is switch port `<vm name>/eth<n>`. Optional so that a
   * VMM without networking (a worker-hosted one) still implements the API.
   */
  readonly nics?: readonly ResolvedNic[];
  /** Start a created VM, or boot a stopped or crashed one afresh. */
  start(): Promise<void>;
  /** Park every vCPU and freeze the guest clock. */
  pause(): Promise<void>;
  /** Run on after `pause()`. */
  resume(): Promise<void>;
  /** Stop every vCPU and give the VM's memory back to host RAM. */
  stop(): Promise<void>;
  /** Stop, then boot afresh with the same configuration (a new transcript). */
  reset(): Promise<void>;
  /** Stop and remove the VM. */
  delete(): Promise<void>;
  stats(): VmStats;
  /** Fault injection for tests: kill vCPU `hartId`'s thread as if it died. False when there is none. */
  killVcpu(hartId: number): boolean;
  /**
   * Type `command` at the guest's shell, wait for it to finish and resolve with its output and exit status
   * (see {@link runCommand}). Runs on one VM queue up one after another.
   */
  run(command: string, options?: RunOptions): Promise<RunResult>;
  /** Save the running or paused VM's full state as a snapshot file (encodeSnapshot); the VM runs on. */
  snapshot(): Promise<Uint8Array>;
}

/** Host RAM figures. */
export interface HostRamStats {
  /** Frames host RAM may grow to (the configured maximum). */
  readonly totalFrames: number;
  /** Frames neither in use nor beyond the maximum. */
  readonly freeFrames: number;
  /** Frames the host has committed so far (host RAM grows on demand). */
  readonly committedFrames?: number;
  readonly frameBytes: number;
}

/** `window.tabvisor`: the page's VMs. The page's own UI uses exactly this API. */
export interface TabvisorApi {
  readonly vms: readonly TabvisorVm[];
  createVM(config?: VmConfig): Promise<TabvisorVm>;
  /** The VM with this id or name. */
  vm(idOrName: string): TabvisorVm | undefined;
  hostRam(): HostRamStats;
  /** Be told when VMs are added, removed or change state, and after each stats sample. Returns unsubscribe. */
  onChange(listener: () => void): () => void;
  /** The names of the networks this page's NICs joined (optional: a VMM without networking lacks it). */
  networks?(): string[];
  /** A network's switch (ports, MAC table, counters, DHCP, capture); undefined until a NIC joined it. */
  network?(name: string): TabvisorNetwork | undefined;
}

/** What the page provides the hypervisor with. */
export interface HypervisorOptions {
  /** Host RAM reserved for all VMs, in MiB (at most {@link MAX_HOST_RAM_MIB}). */
  readonly hostRamMiB: number;
  /** vCPU threads for one boot of one VM; `label` names the VM (for thread names). */
  readonly threads: (label: string) => ThreadFactory;
  /**
   * Start `count` vCPU threads ahead of need, for a VM being created: called before its images (or boot
   * snapshot) are read, so thread start-up overlaps that (the page: `prepareBrowserThreads`).
   */
  readonly prepareThreads?: (count: number) => void;
  /**
   * The default guest (loaded once, shared by every VM). `needs.initrd` is false when the VM boots from its
   * root disk, so the initramfs need not be fetched.
   */
  readonly images: (config: VmConfig, needs: { readonly initrd: boolean }) => Promise<GuestBoot>;
  /** Host RAM on a SharedArrayBuffer (default true); false runs VMs only with threads that share no memory. */
  readonly sharedMemory?: boolean;
  /** Defaults for `createVM`. */
  readonly defaults?: { readonly cpus?: number; readonly memoryMiB?: number };
  /** Other tabs and DHCP leader election (the page passes `pageNetworkEnvironment()`); default: none. */
  readonly network?: NetworkEnvironment;
  /**
   * Open VM `id`'s own disks (the page's storage scopes them by id); undefined or no hook: no disks. Called
   * once per VM at `createVM`; the set is closed when the VM is deleted or the hypervisor disposed.
   */
  readonly disks?: (vm: { readonly id: string; readonly name: string }) => Promise<VmDiskSet | undefined>;
  /** Translate hot guest code to JavaScript in every VM (default: the harts' default; the page's `?jit=`). */
  readonly jit?: boolean;
}

/** The page's VMM: owns host RAM and the VMs. */
export class Hypervisor implements TabvisorApi {
  readonly ram: HostRam;
  private readonly list: ManagedVm[] = [];
  private readonly listeners = new Set<() => void>();
  private nextId = 1;
  private readonly sampler: ReturnType<typeof setInterval>;
  /** @internal The page's networks: a switch per name, uplinks to other tabs, DHCP servers. */
  readonly networkHub: NetworkHub;

  constructor(private readonly options: HypervisorOptions) {
    const mib = options.hostRamMiB;
    if (!Number.isInteger(mib) || mib < MIN_MEMORY_MIB || mib > MAX_HOST_RAM_MIB) {
      throw new UserError(
        `host RAM must be a whole number of MiB from ${MIN_MEMORY_MIB} to ${MAX_HOST_RAM_MIB}, not ${mib}`,
      );
    }
    // Reserve the maximum, commit nothing yet: host RAM grows as VMs are created.
    this.ram = new HostRam(0, options.sharedMemory ?? true, mib * 1024 * 1024);
    this.networkHub = new NetworkHub(options.network);
    this.sampler = setInterval(() => {
      for (const vm of this.list) vm.sample();
      this.notify();
    }, STATS_INTERVAL_MS);
  }

  /** The VMs, in creation order. */
  get vms(): readonly TabvisorVm[] {
    return [...this.list];
  }

  /** The VM with this id or name. */
  vm(idOrName: string): TabvisorVm | undefined {
    return this.list.find((vm) => vm.id === idOrName || vm.name === idOrName);
  }

  /** Host RAM figures. */
  hostRam(): HostRamStats {
    return {
      totalFrames: this.ram.maxFrameCount,
      freeFrames: this.ram.freeFrames,
      committedFrames: this.ram.frameCount,
      frameBytes: FRAME_SIZE,
    };
  }

  /** Host RAM not yet given to a VM, in MiB. */
  freeMiB(): number {
    return Math.floor((this.ram.freeFrames * FRAME_SIZE) / (1 << 20));
  }

  /** Check a configuration as {@link createVM} will (for forms). */
  check(config: VmConfig): string | undefined {
    return checkVmConfig(this.resolve(config, `vm-${this.nextId}`), this.freeMiB(), this.names());
  }

  /** Create a VM (and start it unless `config.start` is false). Rejects with a message that says what to fix. */
  async createVM(config: VmConfig = {}): Promise<TabvisorVm> {
    const id = String(this.nextId++);
    const shape = this.resolve(config, `vm-${id}`);
    const problem = checkVmConfig(shape, this.freeMiB(), this.names());
    if (problem !== undefined) throw new UserError(problem);
    validateVmShape(shape.cpus, shape.memoryMiB);
    const nicConfigs = config.nics ?? [];
    if (nicConfigs.length > MAX_NICS)
      throw new UserError(`a VM has at most ${MAX_NICS} NICs, not ${nicConfigs.length}; remove one`);
    const nics = nicConfigs.map((nic, i) => resolveNic(nic, i));
    this.options.prepareThreads?.(shape.cpus);
    const disks = await this.options.disks?.({ id, name: shape.name });
    // A root disk replaces the initramfs, as the CLI's --disk does with the default image.
    let guest: GuestBoot;
    try {
      guest = await this.options.images(config, { initrd: !disks?.rootOnFirstDisk });
    } catch (error) {
      await disks?.close(false);
      throw error;
    }
    const rootArgs = disks?.rootOnFirstDisk ? ' root=/dev/vda rw' : '';
    const vm = new ManagedVm(
      this,
      id,
      shape.name,
      shape.cpus,
      shape.memoryMiB,
      {
        ...guest,
        bootargs: config.bootargs ?? `${guest.bootargs}${rootArgs}`,
      },
      nics,
      disks?.rootOnFirstDisk === true,
    );
    vm.diskSet = disks;
    try {
      await vm.create();
    } catch (error) {
      vm.disposeNics();
      await disks?.close(false);
      throw error;
    }
    this.list.push(vm);
    this.notify();
    if (config.start !== false) await vm.start();
    return vm;
  }

  /** Be told when anything changes. Returns a function that unsubscribes. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stop every VM and the sampler. */
  async dispose(): Promise<void> {
    clearInterval(this.sampler);
    for (const vm of this.list) vm.eraseDisksOnDelete = false; // the page is closing: keep the VMs' disks
    await Promise.all(this.list.map((vm) => vm.delete()));
    this.networkHub.dispose();
    this.listeners.clear();
  }

  /** The names of the networks this page's NICs joined. */
  networks(): string[] {
    return this.networkHub.names();
  }

  /** A network's switch as this tab sees it; undefined until a NIC joined it. */
  network(name: string): TabvisorNetwork | undefined {
    return this.networkHub.view(name);
  }

  /** @internal Threads for one boot of a VM. */
  threadsFor(label: string): ThreadFactory {
    return this.options.threads(label);
  }

  /** @internal Whether VMs translate hot guest code (undefined: the harts' default). */
  get jit(): boolean | undefined {
    return this.options.jit;
  }

  /** @internal A VM left the list. */
  remove(vm: ManagedVm): void {
    const at = this.list.indexOf(vm);
    if (at >= 0) this.list.splice(at, 1);
    this.notify();
  }

  /** @internal Tell listeners something changed. */
  notify(): void {
    for (const listener of this.listeners) listener();
  }

  private names(): string[] {
    return this.list.map((vm) => vm.name);
  }

  private resolve(config: VmConfig, fallbackName: string): { name: string; cpus: number; memoryMiB: number } {
    return {
      name: config.name ?? fallbackName,
      cpus: config.cpus ?? this.options.defaults?.cpus ?? DEFAULT_CPUS,
      memoryMiB: config.memoryMiB ?? this.options.defaults?.memoryMiB ?? DEFAULT_MEMORY_MIB,
    };
  }
}

/**
 * The line a terminal shows last for `transcript`: the text after the last line feed, and of that, what follows
 * the last carriage return that has text after it (busybox redraws its prompt as `\r` + prompt).
 */
function lastLine(transcript: string): string {
  const line = transcript.slice(transcript.lastIndexOf('\n') + 1);
  const parts = line.split('\r').filter((part) => part !== '');
  return (parts.pop() ?? '').slice(-MAX_SCREEN_CHARS);
}

/** One VM of a {@link Hypervisor}: its configuration, its console, and the machine of its current boot. */
class ManagedVm implements TabvisorVm {
  state: VmState = 'created';
  reason: string | undefined;
  readonly console: VmConsole;
  private machine: Vm | undefined;
  private threads: ThreadFactory | undefined;
  private bootedAt = 0;
  /** Lifecycle operations run one after another. */
  private queue: Promise<void> = Promise.resolve();
  /** `run` calls, one after another. */
  private runs: Promise<unknown> = Promise.resolve();
  /** How the current machine started: booted from the kernel, or restored from the boot snapshot. */
  bootedFrom: 'cold' | 'snapshot' = 'cold';
  /** True when this machine's terminal was given the snapshot's console line. */
  private screenRestored = false;
  private lastSample: { readonly at: number; readonly instret: readonly number[] } | undefined;
  private ips: number[];

  constructor(
    private readonly owner: Hypervisor,
    readonly id: string,
    readonly name: string,
    readonly cpus: number,
    readonly memoryMiB: number,
    private readonly guest: GuestBoot,
    readonly nics: readonly ResolvedNic[] = [],
    /** Boot from the first disk: a cold boot loads no initramfs. */
    private readonly rootOnDisk = false,
  ) {
    this.ips = new Array<number>(cpus).fill(0);
    this.console = new VmConsole(
      (bytes) => this.machine?.write(bytes),
      ({ cols, rows }) => this.machine?.resizeConsole(cols, rows),
    );
    this.nicPorts = nics.map((nic, i) => owner.networkHub.nic(`${name}/eth${i}`, nic));
  }

  /** @internal The VM's disks (opened once, attached at every boot). */
  diskSet: VmDiskSet | undefined;
  /** @internal Whether `delete()` deletes the disks' storage too (false while the page closes). */
  eraseDisksOnDelete = true;

  /** One switch port per NIC for the VM's whole life; each boot's card is plugged into it. */
  private readonly nicPorts: (VmNic & { dispose(): void })[];

  /** @internal Remove the VM's switch ports (it was deleted, or never created). */
  disposeNics(): void {
    for (const port of this.nicPorts.splice(0)) port.dispose();
  }

  /**
   * Reserve memory and load the guest (state `created`), from the boot snapshot when there is one and
   * `fromSnapshot` allows it; only a cold boot loads the kernel and initramfs. Throws when host RAM cannot hold
   * it or the images cannot be loaded.
   */
  async create(fromSnapshot = true): Promise<void> {
    const threads = this.owner.threadsFor(`${this.name}/`);
    // A boot snapshot holds no disk state (see Vm.snapshot): a VM with disks boots cold.
    const disks = this.diskSet?.backends ?? [];
    const restored = fromSnapshot && disks.length === 0 ? await this.restore(threads) : undefined;
    const consoleSize = this.console.size();
    let machine = restored?.machine;
    if (!machine) {
      const images = typeof this.guest.images === 'function' ? await this.guest.images() : this.guest.images;
      machine = Vm.create(
        {
          cpus: this.cpus,
          memoryMiB: this.memoryMiB,
          kernel: images.kernel,
          kernelName: images.kernelName,
          initrd: this.rootOnDisk ? undefined : images.initrd,
          bootargs: this.guest.bootargs,
          nics: this.nicPorts,
          disks,
          consoleSize,
          jit: this.owner.jit,
        },
        threads,
        this.owner.ram,
      );
    }
    this.bootedFrom = restored ? 'snapshot' : 'cold';
    // The terminal shows what it showed when the snapshot was taken (the prompt), at once: a script can type
    // before the restored guest has printed anything.
    const screen = restored?.screen ?? '';
    if (screen !== '') this.console.push(new TextEncoder().encode(screen));
    this.screenRestored = screen !== '';
    // A restored machine has the size of the snapshot's host: give it ours, if we have one (the guest is told
    // when it differs).
    const size = restored ? this.console.sizeForRestored(machine.consoleSize()) : undefined;
    if (size) machine.resizeConsole(size.cols, size.rows);
    this.machine = machine;
    this.threads = threads;
    this.lastSample = undefined;
    this.ips.fill(0);
    machine.onOutput((bytes) => this.console.push(bytes));
    machine.onDiskProblem = (message) => this.diskSet?.onProblem?.(`VM ${this.name}: ${message}`);
    void machine.whenPoweredOff().then((event) => this.enqueue(() => this.onPower(machine, event)));
  }

  start(): Promise<void> {
    return this.enqueue(async () => {
      if (this.state === 'running' || this.state === 'paused') return;
      if (this.state === 'deleted') throw new UserError(`VM ${this.name} was deleted`);
      if (this.state !== 'created') await this.boot();
      this.launch();
    });
  }

  pause(): Promise<void> {
    return this.enqueue(async () => {
      if (this.state !== 'running')
        throw new UserError(`VM ${this.name} is ${this.state}; only a running VM pauses`);
      this.machine?.pause();
      this.setState('paused');
    });
  }

  resume(): Promise<void> {
    return this.enqueue(async () => {
      if (this.state !== 'paused')
        throw new UserError(`VM ${this.name} is ${this.state}; only a paused VM resumes`);
      this.machine?.resume();
      this.setState('running');
    });
  }

  stop(): Promise<void> {
    return this.enqueue(async () => {
      if (this.state === 'deleted') return;
      await this.halt('stopped by the user');
      if (this.state !== 'stopped' && this.state !== 'crashed')
        this.setState('stopped', 'stopped by the user');
    });
  }

  reset(): Promise<void> {
    return this.enqueue(async () => {
      if (this.state === 'deleted') throw new UserError(`VM ${this.name} was deleted`);
      await this.halt('the VM was reset');
      await this.bootOrCrash();
      this.launch();
    });
  }

  delete(): Promise<void> {
    return this.enqueue(async () => {
      if (this.state === 'deleted') return;
      await this.halt('the VM was deleted');
      this.setState('deleted');
      this.disposeNics();
      await this.diskSet?.close(this.eraseDisksOnDelete);
      this.console.dispose('the VM was deleted');
      this.owner.remove(this);
    });
  }

  run(command: string, options?: RunOptions): Promise<RunResult> {
    const run = this.runs.then(() => runCommand(this.console, command, options));
    this.runs = run.catch(() => undefined);
    return run;
  }

  snapshot(): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      void this.enqueue(async () => {
        const machine = this.machine;
        if (!machine || (this.state !== 'running' && this.state !== 'paused')) {
          throw new UserError(`VM ${this.name} is ${this.state}; only a running or paused VM has a snapshot`);
        }
        resolve(
          encodeSnapshot({ ...(await machine.snapshot()), screen: lastLine(this.console.transcript()) }),
        );
      }).catch(reject);
    });
  }

  /**
   * A machine from the boot snapshot and the console line the snapshot was taken at (see `VmSnapshot.screen`;
   * empty in older files), or undefined (with a note on the console) when it cannot be used.
   */
  private async restore(threads: ThreadFactory): Promise<{ machine: Vm; screen: string } | undefined> {
    const file = this.guest.snapshot;
    if (!file) return undefined;
    try {
      // A Blob's pages are read after its head: by the vCPU threads, or (without shared memory) below.
      const snapshot = file instanceof Uint8Array ? decodeSnapshot(file) : await decodeSnapshotBlob(file);
      if (snapshot.cpus !== this.cpus || snapshot.memoryMiB !== this.memoryMiB) {
        throw new UserError(
          `it was taken with ${snapshot.cpus} vCPUs and ${snapshot.memoryMiB} MiB, this VM has ${this.cpus} and ${this.memoryMiB} MiB`,
        );
      }
      // Each NIC comes back with this VM's MAC, link held down until the guest re-reads it (Vm.fromSnapshot).
      const machine = Vm.fromSnapshot(snapshot, threads, this.owner.ram, this.nicPorts, this.owner.jit);
      try {
        await machine.loadSnapshotPages();
      } catch (error) {
        await machine.stop();
        throw error;
      }
      return { machine, screen: snapshot.screen ?? '' };
    } catch (error) {
      const why = errorMessage(error);
      this.console.push(
        new TextEncoder().encode(`[tabvisor] boot snapshot not used: ${why}; booting cold\r\n`),
      );
      return undefined;
    }
  }

  killVcpu(hartId: number): boolean {
    const threads = this.threads as (ThreadFactory & { kill?: (hartId: number) => boolean }) | undefined;
    return threads?.kill?.(hartId) ?? false;
  }

  stats(): VmStats {
    const machine = this.machine;
    const sample = machine?.stats();
    const live = this.state === 'running' || this.state === 'paused';
    const vcpus: VcpuStats[] = [];
    for (let h = 0; h < this.cpus; h++) {
      const vcpu = sample?.vcpus[h];
      const state: VcpuRunState =
        vcpu === undefined ? 'stopped' : live || vcpu.state === 'crashed' ? vcpu.state : 'stopped';
      vcpus.push({
        hartId: h,
        state,
        instructions: vcpu?.instret ?? 0,
        ips: live && this.state !== 'paused' ? this.ips[h] : 0,
        jit: vcpu?.jit ?? false,
        wasm: vcpu?.wasm ?? false,
      });
    }
    return {
      id: this.id,
      name: this.name,
      state: this.state,
      reason: this.reason,
      cpus: this.cpus,
      memoryMiB: this.memoryMiB,
      hostFrames: sample?.hostFrames ?? 0,
      frameBytes: FRAME_SIZE,
      threads: sample?.threads ?? 0,
      uptimeMs: machine && this.bootedAt > 0 ? performance.now() - this.bootedAt : 0,
      bootedFrom: this.bootedFrom,
      vcpus,
    };
  }

  /** @internal Take an instructions-per-second sample (the hypervisor calls this every STATS_INTERVAL_MS). */
  sample(): void {
    if (!this.machine || this.state !== 'running') return;
    const now = performance.now();
    const instret = this.machine.stats().vcpus.map((v) => v.instret);
    const last = this.lastSample;
    if (last) {
      const seconds = (now - last.at) / 1000;
      for (let h = 0; h < this.cpus; h++) this.ips[h] = Math.max(0, (instret[h] - last.instret[h]) / seconds);
    }
    this.lastSample = { at: now, instret };
  }

  /** A fresh machine with the same configuration: new memory, new transcript. */
  private async boot(): Promise<void> {
    this.console.reset('the VM booted again');
    this.reason = undefined;
    await this.create();
  }

  /** {@link boot} after the old machine was halted: a failure (images that no longer load) leaves it crashed. */
  private async bootOrCrash(): Promise<void> {
    try {
      await this.boot();
    } catch (error) {
      this.setState('crashed', `it could not boot: ${errorMessage(error)}`);
      throw error;
    }
  }

  private launch(): void {
    this.machine?.start();
    // A boot snapshot is taken at a shell prompt. A snapshot that kept its console line put it on the screen
    // (create); for one that did not, an Enter makes the shell print a fresh prompt.
    if (this.bootedFrom === 'snapshot' && !this.screenRestored) this.machine?.write(Uint8Array.of(0x0a));
    this.bootedAt = performance.now();
    this.setState('running');
  }

  /** Stop the current machine (if any) and give its memory back. */
  private async halt(reason: string): Promise<void> {
    const machine = this.machine;
    this.machine = undefined;
    this.threads = undefined;
    this.console.failWaiters(reason);
    if (machine) await machine.stop();
  }

  private async onPower(machine: Vm, event: PowerEvent): Promise<void> {
    if (machine !== this.machine) return; // a machine we already stopped on purpose
    if (event.kind === 'reboot') {
      // As QEMU does: a guest reboot starts a fresh machine with the same configuration, on the same console.
      const unread = machine.takeUnreadInput();
      await this.halt('the guest rebooted');
      try {
        await this.create(false);
      } catch (error) {
        this.setState('crashed', `it could not boot again: ${errorMessage(error)}`);
        return;
      }
      this.machine?.write(unread);
      this.launch();
      return;
    }
    await this.halt(event.kind === 'failure' ? event.message : 'the guest powered off');
    if (event.kind === 'failure') this.setState('crashed', event.message);
    else this.setState('stopped', 'the guest powered off');
  }

  private setState(state: VmState, reason?: string): void {
    this.state = state;
    this.reason = reason;
    this.owner.notify();
  }

  private enqueue(operation: () => Promise<void>): Promise<void> {
    const run = this.queue.then(operation);
    this.queue = run.catch(() => {});
    return run;
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
