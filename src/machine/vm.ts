import type { FrameOffload, OffloadSupport } from '../common/frame-offload.ts';
import { UserError } from '../common/errors.ts';
import {
  HART_INSTRET_HI,
  HART_INSTRET_LO,
  HART_JIT,
  HART_JIT_TRANSLATES,
  HART_JIT_WASM,
  HART_SNAPSHOT,
  HART_STATE_RESTORE_PENDING,
  SNAPSHOT_NONE,
  SNAPSHOT_SAVE,
  SNAPSHOT_SAVED,
  VmClock,
  createControlBlock,
  HART_START_ADDR,
  HART_START_OPAQUE,
  HART_STATE,
  HART_STATE_CRASHED,
  HART_STATE_PAUSED,
  HART_STATE_RUNNING,
  HART_STATE_START_PENDING,
  HART_STATE_STOPPED,
  HART_STATE_WFI,
  POWER_FAIL,
  POWER_NONE,
  POWER_OFF,
  POWER_REBOOT,
  RUN_CONTINUE,
  RUN_PAUSE,
  RUN_STOP,
  VM_EVENT,
  VM_POWER,
  VM_POWER_CODE,
  VM_RAM_PENDING,
  VM_RUN_CONTROL,
  hartWord,
  isSharedBuffer,
  sleepLocally,
} from '../common/shared-block.ts';
import { AddressSpace, RAM_BASE } from '../mem/address-space.ts';
import { FRAME_SIZE, HostRam } from '../mem/host-ram.ts';
import { wallClockMs } from '../common/host.ts';
import { Board, createBoardState, planBoard, type BoardInit } from './board.ts';
import { MAX_HARTS, MAX_MEMORY_MIB, MIN_MEMORY_MIB } from './vm-limits.ts';
import { forEachStoredPage, type VmSnapshot } from './snapshot.ts';
import type { BlockBackend } from '../devices/block-backend.ts';
import { VirtioBlkHost, virtioBlkOptionsFor } from '../devices/virtio-blk.ts';
import { VirtioNetHost, type NetBackend } from '../devices/virtio-net.ts';
import {
  DEFAULT_CONSOLE_COLS,
  DEFAULT_CONSOLE_ROWS,
  VirtioConsoleHost,
  checkConsoleSize,
  type ConsoleSize,
} from '../devices/virtio-console.ts';
import { copyRamShare, type HartThreadInit, type HartThreadMessage, type RamShare } from './hart-thread.ts';
import { consoleDevice, loadLinux, type LinuxBootImages } from './linux-boot.ts';
import { ConsoleStream } from './console-stream.ts';

/** Bytes in a MiB. */
const MIB = 1024 * 1024;

/** A running vCPU thread, as the VMM holds it. */
export interface HartThreadHandle {
  terminate(): void | Promise<unknown>;
}

/** How the VMM starts vCPU threads: Node worker_threads, browser Web Workers, or in-process for tests. */
export interface ThreadFactory {
  /** True when threads share memory (SharedArrayBuffer); false means the VM must not use threads. */
  readonly shared: boolean;
  spawn(
    init: HartThreadInit,
    onMessage: (message: HartThreadMessage) => void,
    onError: (error: Error) => void,
  ): HartThreadHandle;
}

/** A VM's shape and what it boots. */
export interface VmSpec extends LinuxBootImages {
  readonly cpus: number;
  readonly memoryMiB: number;
  /** Block back-ends attached as virtio-blk disks in slots 1, 2, ... (the guest sees /dev/vda, /dev/vdb, ...). */
  readonly disks?: readonly BlockBackend[];
  /** virtio-net NICs in the virtio slots after the disks (the guest sees eth0, eth1, ...). */
  readonly nics?: readonly VmNic[];
  /** Translate hot guest code to JavaScript (default: the harts' default, see cpu/hart.ts jitByDefault). */
  readonly jit?: boolean;
  /** The terminal size the guest's virtio console reports (default 80 x 24); see {@link Vm.resizeConsole}. */
  readonly consoleSize?: ConsoleSize;
}

/**
 * A NIC of a VM: its MAC and how each boot's card is wired to a network. `plug` is called when a machine
 * starts, with the card's receive side (`deliver` answers false when the guest has no free receive buffer, as
 * a switch port's sink does); it returns where the guest's transmitted frames go and how to unplug the card
 * when that machine halts.
 */
export interface VmNic {
  readonly mac: string;
  plug(receiver: PortSink): { readonly backend: NetBackend; unplug(): void };
}

/** A card's receive side as a network sees it (the shape of a switch port's sink). */
export interface PortSink {
  deliver(frame: Uint8Array, offload?: FrameOffload): boolean;
  /** The offloads the guest's driver takes on received frames (see src/net/offload.ts); none if absent. */
  offloads?(): OffloadSupport;
}

/** How a VM ended. */
export type PowerEvent =
  | { readonly kind: 'poweroff'; readonly code: number }
  | { readonly kind: 'reboot'; readonly code: number }
  | { readonly kind: 'failure'; readonly code: number; readonly message: string };

/** What a vCPU is doing, from its HART_STATE word: 'wfi' sleeps until an interrupt, 'stopped' waits for HSM. */
export type VcpuRunState = 'running' | 'wfi' | 'stopped' | 'starting' | 'paused' | 'crashed';

/** One vCPU's figures at one instant (see {@link Vm.stats}). */
export interface VcpuSample {
  readonly hartId: number;
  readonly state: VcpuRunState;
  /** Instructions retired since the VM started, as last published by the hart (once per slice). */
  readonly instret: number;
  /** Whether the hart translates hot code to JavaScript (false: interpreter only, or not started yet). */
  readonly jit: boolean;
  /** Whether the hart's common path runs in WebAssembly (false: JavaScript only, or not started yet). */
  readonly wasm: boolean;
}

/** A VM's figures at one instant, read from its control block without stopping it (see {@link Vm.stats}). */
export interface VmSample {
  readonly vcpus: readonly VcpuSample[];
  /** Live vCPU threads (one per vCPU while the VM runs, 0 after it halted). */
  readonly threads: number;
  /** Host RAM frames the VM holds (0 once they went back to host RAM). */
  readonly hostFrames: number;
  readonly paused: boolean;
}

const VCPU_STATE_NAMES: Record<number, VcpuRunState> = {
  [HART_STATE_STOPPED]: 'stopped',
  [HART_STATE_RUNNING]: 'running',
  [HART_STATE_WFI]: 'wfi',
  [HART_STATE_START_PENDING]: 'starting',
  [HART_STATE_PAUSED]: 'paused',
  [HART_STATE_CRASHED]: 'crashed',
};

/** How long a snapshot waits for the vCPUs to pause and save their state. */
const SNAPSHOT_TIMEOUT_MS = 5000;

/** Most console input bytes handed to the guest's UART at once. */
const INPUT_CHUNK = 256;
/** Most bytes offered to the virtio console's receive buffers at once (16 page-sized buffers hold 64 KiB). */
const PORT_INPUT_CHUNK = 64 * 1024;
/** With line pacing, how long an idle guest with no prompt showing waits before it gets the next line anyway. */
const LINE_PACING_IDLE_MS = 3000;
/**
 * The end of a shell prompt: `#`, `$` or `>` followed by a space, at the very end of the output (or followed by
 * ESC [ J, as busybox redraws its prompt after a terminal resize).
 */
const SHELL_PROMPT = /[#$>] (?:\x1b\[J)?$/;

/** Check a VM shape; throws a UserError that names the limit. */
export function validateVmShape(cpus: number, memoryMiB: number): void {
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_HARTS) {
    throw new UserError(
      `a VM needs between 1 and ${MAX_HARTS} vCPUs, not ${cpus}; use --cpus 1..${MAX_HARTS}`,
    );
  }
  if (!Number.isInteger(memoryMiB) || memoryMiB < MIN_MEMORY_MIB || memoryMiB > MAX_MEMORY_MIB) {
    throw new UserError(
      `guest memory must be a whole number of MiB from ${MIN_MEMORY_MIB} to ${MAX_MEMORY_MIB}, not ${memoryMiB}; use --mem ${MIN_MEMORY_MIB}..${MAX_MEMORY_MIB}`,
    );
  }
}

/**
 * A virtual machine: its frames of host RAM, its control block, one thread per vCPU, and the host side of its
 * devices (console). Create with {@link Vm.create}, then {@link Vm.start}.
 */
export class Vm {
  readonly board: Board;
  private readonly threads: HartThreadHandle[] = [];
  private readonly outputListeners = new Set<(bytes: Uint8Array) => void>();
  private readonly pendingInput: number[] = [];
  /**
   * How console input is handed to the guest: 'stream' as fast as it reads (a person typing, a terminal), or
   * 'line' one line at a time when the guest is idle (a piped script). Set with {@link setInputPacing}.
   */
  private inputPacing: 'stream' | 'line' = 'stream';
  /** When every vCPU was first seen idle (-1: busy), for line pacing. */
  private idleSinceMs = -1;
  /** The last characters the guest printed, for line pacing's prompt check. */
  private outputTail = '';
  private pumping = false;
  private power: PowerEvent | undefined;
  private failureMessage = '';
  private readonly powerWaiters: ((event: PowerEvent) => void)[] = [];
  private readonly frames: Int32Array;
  /** Host RAM areas of the vCPUs' registers and TLBs (BoardInit.hartAreas); freed with the frames. */
  private hartAreas: readonly number[] = [];
  /** Set once the VM's frames went back to host RAM (stop is idempotent). */
  private framesFreed = false;
  /** Guest time (ticks) when {@link pause} froze the clock; undefined while not paused. */
  private pausedTicks: number | undefined;
  /** Each vCPU thread's share of the snapshot pages it copies at {@link start} (snapshot read from a Blob). */
  private ramShares: RamShare[] | undefined;
  /** The snapshot's pages still in their Blob, for {@link loadSnapshotPages} (a VM without shared memory). */
  private pagesToLoad: RamShare | undefined;
  /**
   * True while guest RAM still lacks the pages the vCPU threads copy (a VM with {@link ramShares}, from its
   * creation until they are all in): nothing may write into guest buffers, typed input waits.
   */
  private ramPending = false;
  /** Keeps the host's event loop alive while the VM runs (a pending Atomics.waitAsync does not, in Node). */
  private keepAlive: ReturnType<typeof setInterval> | undefined;

  private constructor(
    private readonly hostRam: HostRam,
    frames: Int32Array,
    private readonly boardInit: BoardInit,
    private readonly factory: ThreadFactory,
    /** The kernel command line the VM booted with (kept for snapshots). */
    readonly bootargs: string,
    backends: readonly BlockBackend[] = [],
    private readonly nics: readonly VmNic[] = [],
  ) {
    this.frames = frames;
    this.board = new Board(boardInit);
    this.diskHosts = backends.map(
      (backend, i) =>
        new VirtioBlkHost(this.board.disks[i], this.board.memory, backend, {
          onGuestError: (reason) =>
            this.onDiskProblem?.(`disk ${i}: the guest broke the virtio protocol: ${reason}`),
          onBackendError: (error) =>
            this.onDiskProblem?.(`disk ${i}: ${error instanceof Error ? error.message : String(error)}`),
        }),
    );
    this.consoleHost = new VirtioConsoleHost(this.board.console, this.board.memory, {
      onGuestError: (reason) =>
        this.onDiskProblem?.(`console: the guest broke the virtio protocol: ${reason}`),
    });
    this.stream = new ConsoleStream(
      this.board.uart,
      this.consoleHost,
      /^hvc\d+$/.test(consoleDevice(bootargs) ?? ''),
      (bytes) => this.emit(bytes),
    );
    this.nicHosts = nics.map((_, i) => {
      const backend: NetBackend = { send: (frame, offload) => this.nicBackends[i]?.send(frame, offload) };
      return new VirtioNetHost(this.board.nics[i], this.board.memory, backend, {
        onGuestError: (reason) =>
          this.onDiskProblem?.(`NIC ${i}: the guest broke the virtio protocol: ${reason}`),
      });
    });
  }

  /** The I/O side of the virtio console (input, size; its output is taken by {@link stream}). */
  private readonly consoleHost: VirtioConsoleHost;
  /** The console stream: the guest's /dev/console out of the UART and the virtio console. */
  private readonly stream: ConsoleStream;

  /** The I/O side of each NIC (frames are moved on the VMM's thread). */
  private readonly nicHosts: VirtioNetHost[];
  /** Where each NIC's transmitted frames go while the machine runs (set by `plug`). */
  private readonly nicBackends: (NetBackend | undefined)[] = [];
  private readonly nicUnplugs: (() => void)[] = [];

  /** Move one NIC's transmitted frames whenever a vCPU rings its doorbell, until the VM halts. */
  private async serveNic(host: VirtioNetHost): Promise<void> {
    const block = this.board.block;
    const doorbell = host.doorbellIndex;
    while (this.pumping) {
      const seen = Atomics.load(block, doorbell);
      if (host.service()) {
        // A full batch was sent: let the event loop (other NICs, the console) run, then carry on.
        await new Promise((resolve) => setTimeout(resolve, 0));
        continue;
      }
      await waitForDoorbell(block, doorbell, seen);
    }
  }

  /** The I/O side of each disk (requests are served on the VMM's thread). */
  private readonly diskHosts: VirtioBlkHost[];
  /** Receives disk problems worth telling a person about (guest protocol errors, back-end I/O errors). */
  onDiskProblem: ((message: string) => void) | undefined;

  /** Serve one disk's requests whenever a vCPU rings its doorbell, until the VM halts. */
  private async serveDisk(host: VirtioBlkHost): Promise<void> {
    const block = this.board.block;
    const doorbell = host.doorbellIndex;
    while (this.pumping) {
      const seen = Atomics.load(block, doorbell);
      host.service();
      await waitForDoorbell(block, doorbell, seen);
    }
  }

  /** Reserve memory, build the board and load the kernel. Nothing runs until {@link start}. */
  static create(spec: VmSpec, factory: ThreadFactory, hostRam?: HostRam): Vm {
    validateVmShape(spec.cpus, spec.memoryMiB);
    return Vm.withGuestMemory(
      spec.memoryMiB,
      spec.cpus,
      factory,
      hostRam,
      (ram, frames, memory, hartAreas) => {
        const plan = loadLinux(memory, spec.cpus, spec);
        const backends = spec.disks ?? [];
        const nics = spec.nics ?? [];
        const { block, layout } = createBoardState(spec.cpus, factory.shared, backends.length, nics.length);
        // Hart 0 enters the kernel like any HSM start: a0 = hartid, a1 = device tree.
        block[hartWord(0, HART_START_ADDR)] = plan.entry;
        block[hartWord(0, HART_START_OPAQUE)] = plan.dtbGpa;
        block[hartWord(0, HART_STATE)] = HART_STATE_START_PENDING;
        for (let h = 1; h < spec.cpus; h++) block[hartWord(h, HART_STATE)] = HART_STATE_STOPPED;
        const disks = backends.map((backend, i) => virtioBlkOptionsFor(backend, `tabvisor-disk${i}`));
        const init: BoardInit = {
          hartCount: spec.cpus,
          block,
          memory: memory.init,
          layout,
          firmware: true,
          disks,
          nics: nics.map((nic) => ({ mac: nic.mac })),
          jit: spec.jit,
          hartAreas,
        };
        const vm = new Vm(ram, frames, init, factory, spec.bootargs, backends, nics);
        const size = spec.consoleSize ?? { cols: DEFAULT_CONSOLE_COLS, rows: DEFAULT_CONSOLE_ROWS };
        vm.resizeConsole(size.cols, size.rows);
        return vm;
      },
    );
  }

  /**
   * Reserve `memoryMiB` of guest RAM (frames of `hostRam`, or of a host RAM of its own) and hand it to `build`;
   * if `build` throws, the frames go back before the error travels on.
   */
  private static withGuestMemory(
    memoryMiB: number,
    cpus: number,
    factory: ThreadFactory,
    hostRam: HostRam | undefined,
    build: (ram: HostRam, frames: Int32Array, memory: AddressSpace, hartAreas: readonly number[]) => Vm,
  ): Vm {
    const ramSize = memoryMiB * MIB; // (not << 20: 2048 MiB is 2^31, negative as an int32)
    const ram = hostRam ?? new HostRam(ramSize, factory.shared);
    const frames = ram.allocate(ramSize / FRAME_SIZE);
    const hartAreas = ram.allocateHartAreas(cpus);
    try {
      const table = AddressSpace.tableFor(frames, factory.shared);
      const memory = new AddressSpace({
        ram: ram.buffer,
        memory: ram.memory,
        table,
        ramBase: RAM_BASE,
        ramSize,
      });
      const vm = build(ram, frames, memory, hartAreas);
      vm.hartAreas = hartAreas;
      return vm;
    } catch (error) {
      ram.free(frames);
      ram.freeHartAreas(hartAreas);
      throw error;
    }
  }

  /**
   * Start one thread per vCPU and the console pump. A VM restored from a snapshot read from a Blob has its vCPU
   * threads copy the snapshot's pages first (each a share, in parallel, off this thread); its devices' I/O
   * starts once they are all in.
   */
  start(): void {
    if (this.pagesToLoad)
      throw new Error("the snapshot's pages are not in guest RAM yet: loadSnapshotPages first");
    const shares = this.ramShares;
    this.ramShares = undefined;
    if (shares) Atomics.store(this.board.block, VM_RAM_PENDING, shares.length);
    for (let hartId = 0; hartId < this.boardInit.hartCount; hartId++) {
      const ramShare = shares?.[hartId];
      this.threads.push(
        this.factory.spawn(
          { board: this.boardInit, hartId, ...(ramShare ? { ramShare } : {}) },
          (message) => {
            if (message.type === 'fatal') this.fail(message.message);
          },
          (error) => this.fail(`vCPU ${hartId} crashed: ${error.message}`),
        ),
      );
    }
    this.keepAlive = setInterval(() => {}, 1 << 30);
    void this.pump();
    if (shares) void this.whenRamRestored().then((restored) => restored && this.startIo());
    else this.startIo();
  }

  /**
   * Copy the snapshot's pages that are still in their Blob into guest RAM: a VM restored without shared memory
   * has no vCPU threads to do it (see fromSnapshot). Before {@link start}. Rejects when the Blob cannot be read
   * or does not hold the pages its head lists.
   */
  async loadSnapshotPages(): Promise<void> {
    const share = this.pagesToLoad;
    if (!share) return;
    await copyRamShare(this.board.memory, share);
    this.pagesToLoad = undefined;
    this.ramPending = false;
  }

  /**
   * Resolves true once every vCPU thread has copied its share of the snapshot's pages (VM_RAM_PENDING is 0),
   * false if the VM halted first.
   */
  private async whenRamRestored(): Promise<boolean> {
    const block = this.board.block;
    for (
      let left = Atomics.load(block, VM_RAM_PENDING);
      left > 0;
      left = Atomics.load(block, VM_RAM_PENDING)
    ) {
      if (!this.pumping) return false;
      await waitForDoorbell(block, VM_RAM_PENDING, left);
    }
    if (!this.pumping) return false;
    this.ramPending = false;
    return true;
  }

  /** The devices' I/O side: console, disks, NICs (guest RAM holds the VM's state by now). */
  private startIo(): void {
    this.feedInput();
    void this.serveConsole();
    for (const host of this.diskHosts) void this.serveDisk(host);
    this.nics.forEach((nic, i) => {
      const host = this.nicHosts[i];
      const plugged = nic.plug({
        deliver: (frame, offload) => host.deliver(frame, offload),
        offloads: () => host.offloads(),
      });
      this.nicBackends[i] = plugged.backend;
      this.nicUnplugs.push(() => plugged.unplug());
      void this.serveNic(host);
    });
  }

  /** Counters of each NIC's I/O side (frames and bytes each way, drops), in slot order. */
  nicStats(): readonly VirtioNetHost['stats'][] {
    return this.nicHosts.map((host) => host.stats);
  }

  /**
   * Capture the VM's full state (RAM, control block with every device, each vCPU's registers, guest time). The
   * VM is paused for the copy and left as it was (running VMs resume).
   */
  async snapshot(): Promise<VmSnapshot> {
    if (this.power) throw new UserError('this VM has stopped; snapshot a running or paused VM');
    if (this.diskHosts.length > 0) {
      // The guest's page cache and file-system state in RAM describe the disk as it was at this instant, but
      // the disk lives on (and changes) after the snapshot; restoring onto a disk that moved on corrupts its
      // file system, and clones of one snapshot would share one disk. Requests in flight live on the I/O side.
      throw new UserError(
        'snapshots of VMs with disks are not supported: the guest would come back with file-system state in RAM that no longer matches its disk; snapshot a VM without disks (NICs are fine)',
      );
    }
    const wasPaused = this.pausedTicks !== undefined;
    this.pause();
    const block = this.board.block;
    const harts = this.boardInit.hartCount;
    const settled = (h: number): boolean => {
      const state = Atomics.load(block, hartWord(h, HART_STATE));
      return (
        state === HART_STATE_PAUSED || state === HART_STATE_STOPPED || state === HART_STATE_START_PENDING
      );
    };
    await this.until(() => Array.from({ length: harts }, (_, h) => settled(h)).every(Boolean), 'pause');
    const saving: number[] = [];
    for (let h = 0; h < harts; h++) {
      if (Atomics.load(block, hartWord(h, HART_STATE)) !== HART_STATE_PAUSED) continue;
      Atomics.store(block, hartWord(h, HART_SNAPSHOT), SNAPSHOT_SAVE);
      this.board.lines.wake(h);
      saving.push(h);
    }
    await this.until(
      () => saving.every((h) => Atomics.load(block, hartWord(h, HART_SNAPSHOT)) === SNAPSHOT_SAVED),
      'save',
    );
    const copy = block.slice();
    for (let h = 0; h < harts; h++) {
      copy[hartWord(h, HART_SNAPSHOT)] = SNAPSHOT_NONE;
      block[hartWord(h, HART_SNAPSHOT)] = SNAPSHOT_NONE;
      if (saving.includes(h)) copy[hartWord(h, HART_STATE)] = HART_STATE_RESTORE_PENDING;
    }
    copy[VM_RUN_CONTROL] = RUN_CONTINUE;
    const ram = new Uint8Array(this.board.memory.ramSize);
    this.board.memory.read(this.board.memory.ramBase, ram);
    const snapshot: VmSnapshot = {
      cpus: harts,
      memoryMiB: this.board.memory.ramSize / MIB,
      bootargs: this.bootargs,
      nics: this.nicHosts.length,
      ticks: this.pausedTicks ?? this.board.clock.ticks(),
      block: copy,
      ram,
    };
    if (!wasPaused) this.resume();
    return snapshot;
  }

  /**
   * Create a VM that continues from `snapshot`. Nothing runs until {@link start}.
   *
   * NICs: `nics` must match the snapshot's count; each card comes back with the `nics[i].mac` given here, not the
   * MAC of the VM the snapshot came from, so any number of VMs can start from one snapshot on one network. The
   * guest's kernel, though, read the old MAC when it probed the card (Linux reads it only then) and its DHCP
   * client holds the old VM's lease, both in the restored RAM. So every card the driver had set up comes back
   * with its link held down (`holdLinkDownUntilReset`: status without LINK_UP, a configuration change interrupt,
   * no frame in or out) until the driver resets the card. The default image's ifplugd action answers a lost link
   * by re-binding the driver (a reset, then a probe that reads the new MAC), and the link-up that follows starts
   * DHCP afresh: the clone gets its own address. A guest that does not react stays off the network instead of
   * sending as another VM.
   */
  static fromSnapshot(
    snapshot: VmSnapshot,
    factory: ThreadFactory,
    hostRam?: HostRam,
    nics: readonly VmNic[] = [],
    jit?: boolean,
  ): Vm {
    validateVmShape(snapshot.cpus, snapshot.memoryMiB);
    if (nics.length !== snapshot.nics) {
      throw new UserError(
        `this snapshot was taken of a VM with ${snapshot.nics} NIC(s), this VM has ${nics.length}; start it from a snapshot of a VM with the same NICs`,
      );
    }
    const layout = planBoard(snapshot.cpus, 0, snapshot.nics);
    const ramSize = snapshot.memoryMiB * MIB;
    // A decoded snapshot's size was checked against its header (and reading `ram` would build it).
    const ramLength =
      snapshot.pageData !== undefined || snapshot.pageBlob !== undefined ? ramSize : snapshot.ram.length;
    if (snapshot.block.length !== layout.words || ramLength !== ramSize) {
      throw new UserError('this snapshot was taken by a different version of tabvisor; take a new snapshot');
    }
    const { storedPages, pageData, pageBlob } = snapshot;
    // Pages in a Blob: the vCPU threads copy them when the VM starts (see start), off the VMM's thread; without
    // shared memory there are none, and loadSnapshotPages copies them before the start.
    const fromBlob =
      storedPages !== undefined && pageBlob !== undefined
        ? ramShares(storedPages, ramSize / FRAME_SIZE, pageBlob, factory.shared ? snapshot.cpus : 1)
        : undefined;
    const shares = factory.shared ? fromBlob : undefined;
    return Vm.withGuestMemory(
      snapshot.memoryMiB,
      snapshot.cpus,
      factory,
      hostRam,
      (ram, frames, memory, hartAreas) => {
        if (storedPages !== undefined && pageData !== undefined) {
          // Frames come zeroed: copy only the pages that hold data (a booted guest's RAM is mostly zero), straight
          // from the file.
          forEachStoredPage(storedPages, ramSize / FRAME_SIZE, (page, index) =>
            memory.write(
              RAM_BASE + page * FRAME_SIZE,
              pageData.subarray(index * FRAME_SIZE, (index + 1) * FRAME_SIZE),
            ),
          );
        } else if (fromBlob === undefined) memory.write(RAM_BASE, snapshot.ram);
        const block = createControlBlock(layout.words, factory.shared);
        block.set(snapshot.block);
        new VmClock(block, wallClockMs).setTicks(snapshot.ticks);
        const init: BoardInit = {
          hartCount: snapshot.cpus,
          block,
          memory: memory.init,
          layout,
          firmware: true,
          jit,
          hartAreas,
          ...(nics.length > 0 ? { nics: nics.map((nic) => ({ mac: nic.mac })) } : {}),
        };
        const vm = new Vm(ram, frames, init, factory, snapshot.bootargs, [], nics);
        vm.ramShares = shares;
        vm.pagesToLoad = shares ? undefined : fromBlob?.[0];
        vm.ramPending = fromBlob !== undefined;
        for (const host of vm.nicHosts) host.holdLinkDownUntilReset();
        // Buffers the old I/O side took notice of but had not used yet are looked at again (see the method).
        for (const transport of [vm.board.console, ...vm.board.nics]) transport.renotifyReadyQueues();
        return vm;
      },
    );
  }

  /** Wait (polling the control block) until `done`, for at most SNAPSHOT_TIMEOUT_MS. */
  private async until(done: () => boolean, what: string): Promise<void> {
    const deadline = performance.now() + SNAPSHOT_TIMEOUT_MS;
    while (!done()) {
      if (performance.now() > deadline)
        throw new Error(`vCPUs did not ${what} within ${SNAPSHOT_TIMEOUT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  /** Receive everything the guest prints on its console. Returns a function that unsubscribes. */
  onOutput(listener: (bytes: Uint8Array) => void): () => void {
    this.outputListeners.add(listener);
    return () => this.outputListeners.delete(listener);
  }

  /**
   * Set the terminal size the guest sees on its virtio console (its tty's window size: `stty size`, and
   * SIGWINCH for the foreground process when it changes). Whole numbers 1..65535, else a UserError. A guest
   * whose console is the UART (`console=ttyS0`) keeps its own idea of the size.
   */
  resizeConsole(cols: number, rows: number): void {
    checkConsoleSize(cols, rows);
    this.consoleHost.resize(cols, rows);
  }

  /** The terminal size the virtio console reports. */
  consoleSize(): ConsoleSize {
    return this.consoleHost.device.size;
  }

  /**
   * Type into the guest's console. Input is held until the guest has opened the console (enabled the UART's
   * receive interrupt, or switched to the virtio console: see ConsoleStream) and is fed as the guest
   * reads it: nothing is dropped.
   */
  write(bytes: Uint8Array): void {
    for (const byte of bytes) this.pendingInput.push(byte);
    this.feedInput();
  }

  /** Choose how console input is paced (see {@link inputPacing}). */
  setInputPacing(pacing: 'stream' | 'line'): void {
    this.inputPacing = pacing;
  }

  /** Remove and return console input the guest has not read yet (to hand it to the next VM after a reboot). */
  takeUnreadInput(): Uint8Array {
    return Uint8Array.from(this.pendingInput.splice(0));
  }

  /** Resolves when the guest powers off, reboots or fails. */
  whenPoweredOff(): Promise<PowerEvent> {
    if (this.power) return Promise.resolve(this.power);
    return new Promise((resolve) => this.powerWaiters.push(resolve));
  }

  /**
   * Pause every vCPU (VM_RUN_CONTROL = RUN_PAUSE; each hart parks after its current slice) and freeze the guest
   * clock, so the guest sees no time pass and no timer fires late in a burst on {@link resume}. Idempotent.
   */
  pause(): void {
    if (this.pausedTicks !== undefined || this.power) return;
    this.pausedTicks = this.board.clock.ticks();
    Atomics.compareExchange(this.board.block, VM_RUN_CONTROL, RUN_CONTINUE, RUN_PAUSE);
    for (let h = 0; h < this.boardInit.hartCount; h++) this.board.lines.wake(h);
  }

  /** Undo {@link pause}: the clock continues from where it stopped and every vCPU runs on. Idempotent. */
  resume(): void {
    if (this.pausedTicks === undefined) return;
    this.board.clock.setTicks(this.pausedTicks);
    this.pausedTicks = undefined;
    Atomics.compareExchange(this.board.block, VM_RUN_CONTROL, RUN_PAUSE, RUN_CONTINUE);
    for (let h = 0; h < this.boardInit.hartCount; h++) this.board.lines.wake(h);
  }

  /** Per-vCPU state and retired instructions, live threads and host frames; cheap enough to call every frame. */
  stats(): VmSample {
    const block = this.board.block;
    const vcpus: VcpuSample[] = [];
    for (let h = 0; h < this.boardInit.hartCount; h++) {
      const lo = Atomics.load(block, hartWord(h, HART_INSTRET_LO)) >>> 0;
      const hi = Atomics.load(block, hartWord(h, HART_INSTRET_HI)) >>> 0;
      const state = VCPU_STATE_NAMES[Atomics.load(block, hartWord(h, HART_STATE))] ?? 'stopped';
      const flags = Atomics.load(block, hartWord(h, HART_JIT));
      const jit = (flags & HART_JIT_TRANSLATES) !== 0;
      const wasm = (flags & HART_JIT_WASM) !== 0;
      vcpus.push({ hartId: h, state, instret: hi * 0x1_0000_0000 + lo, jit, wasm });
    }
    return {
      vcpus,
      threads: this.threads.length,
      hostFrames: this.framesFreed ? 0 : this.frames.length,
      paused: this.pausedTicks !== undefined,
    };
  }

  /** Stop every vCPU and release the VM's memory. */
  async stop(): Promise<void> {
    await this.haltThreads();
    if (!this.framesFreed) {
      this.framesFreed = true;
      this.hostRam.free(this.frames);
      this.hostRam.freeHartAreas(this.hartAreas);
    }
    this.settle({ kind: 'poweroff', code: 0 });
  }

  private fail(message: string): void {
    this.failureMessage ||= message;
    Atomics.store(this.board.block, VM_POWER, POWER_FAIL);
    Atomics.store(this.board.block, VM_RUN_CONTROL, RUN_STOP);
    Atomics.add(this.board.block, VM_EVENT, 1);
  }

  private settle(event: PowerEvent): void {
    if (this.power) return;
    this.power = event;
    clearInterval(this.keepAlive);
    for (const waiter of this.powerWaiters.splice(0)) waiter(event);
  }

  private feedInput(): void {
    // Input reaches guest buffers only once guest RAM is restored (see start).
    if (this.pendingInput.length === 0 || this.ramPending) return;
    const uart = this.board.uart;
    const toPort = this.stream.inputToPort;
    // A guest whose console is the virtio console reads nothing from the UART: hold input until it switched.
    if (this.stream.inputHeld || (!toPort && !uart.rxEnabled())) return;
    // Feed the UART only into an empty receive ring: the guest has read what it was given. The virtio console
    // needs no such check: the guest hands a receive buffer back only once its tty took the bytes.
    if (!toPort && uart.rxRing.size !== 0) return;
    let take = toPort ? Math.min(this.pendingInput.length, PORT_INPUT_CHUNK) : INPUT_CHUNK;
    if (this.inputPacing === 'line') {
      // A line at a time, when the guest waits for it: every vCPU idle and a shell prompt at the end of the
      // output, as if typed at the prompt. A program reading its input without a prompt gets the next line
      // once the guest has stayed idle for LINE_PACING_IDLE_MS.
      const now = performance.now();
      if (!this.allHartsIdle()) {
        this.idleSinceMs = -1;
        return;
      }
      if (this.idleSinceMs < 0) this.idleSinceMs = now;
      if (!SHELL_PROMPT.test(this.outputTail) && now - this.idleSinceMs < LINE_PACING_IDLE_MS) return;
      const newline = this.pendingInput.indexOf(0x0a);
      take =
        newline < 0 ? Math.min(this.pendingInput.length, INPUT_CHUNK) : Math.min(newline + 1, INPUT_CHUNK);
    }
    const chunk = Uint8Array.from(this.pendingInput.slice(0, take));
    const written = toPort ? this.consoleHost.receive(chunk) : uart.rxRing.pushMany(chunk);
    if (written === 0) return;
    this.pendingInput.splice(0, written);
    if (this.inputPacing === 'line') {
      this.outputTail = '';
      this.idleSinceMs = -1;
    }
    if (!toPort) uart.rxNotify();
  }

  /** True when every vCPU sleeps (WFI) or is stopped: the guest is waiting for something, such as input. */
  private allHartsIdle(): boolean {
    for (let h = 0; h < this.boardInit.hartCount; h++) {
      const state = Atomics.load(this.board.block, hartWord(h, HART_STATE));
      if (state !== HART_STATE_WFI && state !== HART_STATE_STOPPED) return false;
    }
    return true;
  }

  /** Hand console-stream bytes to the listeners. */
  private emit(bytes: Uint8Array): void {
    if (this.inputPacing === 'line') {
      let tail = this.outputTail;
      for (const byte of bytes.subarray(Math.max(0, bytes.length - 64))) tail += String.fromCharCode(byte);
      this.outputTail = tail.slice(-64);
    }
    for (const listener of this.outputListeners) listener(bytes);
  }

  /** Take the virtio console's output and serve its queues whenever a vCPU rings its doorbell, until the VM halts. */
  private async serveConsole(): Promise<void> {
    const block = this.board.block;
    const host = this.consoleHost;
    const doorbell = host.doorbellIndex;
    while (this.pumping) {
      const seen = Atomics.load(block, doorbell);
      // Chains that waited for room in the ring are newer than what it holds: drain, take them, drain again.
      this.stream.drain();
      const more = host.service();
      this.stream.drain();
      this.feedInput();
      if (more) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        continue;
      }
      await waitForDoorbell(block, doorbell, seen);
    }
  }

  /** The I/O loop: console output and input, and power events from the guest. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const block = this.board.block;
    const txEvent = this.board.uart.txEventIndex;
    while (this.pumping) {
      this.stream.drain();
      this.feedInput();
      const power = Atomics.load(block, VM_POWER);
      if (power !== POWER_NONE) {
        this.stream.drain();
        const code = Atomics.load(block, VM_POWER_CODE);
        await this.haltThreads();
        if (power === POWER_OFF) this.settle({ kind: 'poweroff', code });
        else if (power === POWER_REBOOT) this.settle({ kind: 'reboot', code });
        else
          this.settle({
            kind: 'failure',
            code,
            message: this.failureMessage || 'the guest reported a failure',
          });
        break;
      }
      const seen = Atomics.load(block, txEvent);
      if (this.board.uart.txRing.size === 0) {
        const ms = this.pendingInput.length > 0 ? 2 : 20;
        if (isSharedBuffer(block.buffer)) {
          const wait = Atomics.waitAsync(block, txEvent, seen, ms);
          if (wait.async) await wait.value;
        } else {
          // Not shared: the vCPUs run on this thread and say when they have output (sleepLocally).
          await sleepLocally(Math.min(ms, 4));
        }
      } else {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
  }

  private async haltThreads(): Promise<void> {
    Atomics.store(this.board.block, VM_RUN_CONTROL, RUN_STOP);
    for (let h = 0; h < this.boardInit.hartCount; h++) this.board.lines.wake(h);
    await Promise.all(this.threads.map((t) => t.terminate()));
    this.threads.length = 0;
    this.pumping = false;
    for (const unplug of this.nicUnplugs.splice(0)) unplug();
    this.nicBackends.length = 0;
    // Requests already handed to a back-end finish (a write the guest was told nothing about yet may still land).
    await Promise.all(this.diskHosts.map((host) => host.close()));
  }
}

/**
 * Wait until a doorbell word differs from `seen` (or 50 ms pass, so a halt is noticed). Without shared memory
 * the vCPUs run on this thread: the doorbell's notify ends a short sleep instead (sleepLocally).
 */
async function waitForDoorbell(block: Int32Array, doorbell: number, seen: number): Promise<void> {
  if (isSharedBuffer(block.buffer)) {
    const wait = Atomics.waitAsync(block, doorbell, seen, 50);
    if (wait.async) await wait.value;
  } else {
    await sleepLocally(2);
  }
}

/**
 * Split a snapshot's stored pages (marked in `storedPages`, their bytes in order in `data`) into `threads`
 * shares of consecutive pages, one per vCPU thread (empty shares for threads left over).
 */
function ramShares(storedPages: Uint8Array, pageCount: number, data: Blob, threads: number): RamShare[] {
  const pages: number[] = [];
  forEachStoredPage(storedPages, pageCount, (page) => pages.push(page));
  const shares: RamShare[] = [];
  for (let t = 0; t < threads; t++) {
    const from = Math.floor((pages.length * t) / threads);
    const to = Math.floor((pages.length * (t + 1)) / threads);
    shares.push({
      pages: Int32Array.from(pages.slice(from, to)),
      data: data.slice(from * FRAME_SIZE, to * FRAME_SIZE),
    });
  }
  return shares;
}
