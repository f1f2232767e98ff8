/**
 * A software layer-2 switch with IEEE 802.1Q VLANs: a C-VLAN bridge with per-VLAN MAC learning (independent
 * VLAN learning, IEEE 802.1Q clause 8.8), access and trunk ports, and split horizon for uplinks.
 *
 * Frames are Uint8Arrays without FCS, lent for the call: {@link SwitchPort.receive} forwards a frame before it
 * returns, and a sink or capture listener that keeps one copies it (a NIC lends views into its transmit buffer,
 * which its next batch overwrites). The switch never mutates a frame and hands the same array to every port
 * that gets it unchanged, so nobody may mutate a frame it was lent. A copy is made only where a tag is inserted
 * or removed.
 *
 * Forwarding is synchronous: `receive` returns after every egress port's sink answered. A sink may send from
 * inside `deliver` (a DHCP reply); the nesting is bounded by {@link MAX_FORWARDING_DEPTH}.
 */
import { UserError } from '../common/errors.ts';
import { NO_OFFLOADS, type FrameOffload, type OffloadSupport } from '../common/frame-offload.ts';
import {
  ETHERTYPE_VLAN,
  ETH_DST_OFFSET,
  ETH_HEADER_BYTES,
  ETH_MAX_TAGGED_FRAME,
  ETH_MAX_UNTAGGED_FRAME,
  ETH_SRC_OFFSET,
  ETH_TYPE_OFFSET,
  TCI_VID_MASK,
  VID_MAX,
  VID_MIN,
  VID_PRIORITY_TAGGED,
  VID_RESERVED,
  VLAN_TAG_BYTES,
  VLAN_TCI_OFFSET,
  formatMacKey,
  isGroupMacAt,
  isReservedMulticastAt,
  isUsableVid,
  isVlanTpid,
  isZeroMacAt,
  macKeyAt,
  popVlanTag,
  pushVlanTag,
  readU16,
  writeU16,
} from './ethernet.ts';
import {
  CHECKSUMS_VALID,
  GSO_MAX_FRAME,
  acceptsOffload,
  checkOffload,
  finishFrame,
  isFinished,
  shiftOffload,
} from './offload.ts';

/**
 * Where a port hands frames the switch sends out of it (a vNIC's receive queue, the uplink, a service).
 *
 * `deliver` returns true when it took the frame and false when it is busy or full: the frame is then dropped
 * and counted as `busy` on that port. There is no queue inside the switch. The frame must not be mutated, and
 * it is lent for the call (a NIC's frames are views into its transmit buffer, which its next batch reuses): a
 * sink that keeps it, or posts it elsewhere, copies it.
 *
 * Offloads (see offload.ts): a frame may come with a {@link FrameOffload} (a checksum still to complete, a TCP
 * super-frame to cut into segments, or the hint that its checksums are known good). A sink gets it only for
 * what its `offloads()` says it takes; for anything else the switch finishes the frame first and the sink gets
 * ordinary frames. A sink without `offloads` takes none and is never handed an offload.
 */
export interface PortSink {
  deliver(frame: Uint8Array, offload?: FrameOffload): boolean;
  /** What `deliver` takes as it is, asked for every frame (a vNIC's answer changes when its driver resets). */
  offloads?(): OffloadSupport;
}

/** An access port: one VLAN, frames sent and received untagged; tagged frames arriving are dropped. */
export interface AccessMode {
  readonly kind: 'access';
  readonly vlan: number;
}

/**
 * A trunk port: frames of the allowed VLANs are tagged, except the native VLAN, which is sent untagged and to
 * which untagged and priority-tagged (VID 0) frames arriving belong. Without a native VLAN those are dropped.
 * The native VLAN is always allowed.
 */
export interface TrunkMode {
  readonly kind: 'trunk';
  /** VLANs carried: a list of VIDs (1..4094), or 'all'. */
  readonly allowed: readonly number[] | 'all';
  readonly native?: number;
}

/** How a port treats VLANs. */
export type PortMode = AccessMode | TrunkMode;

/**
 * What a port is attached to. `uplink` ports join switches to each other over a full mesh: a frame that
 * arrived on one is never sent out of any uplink (split horizon), so a mesh of switches cannot loop.
 */
export type PortRole = 'nic' | 'uplink' | 'service';

/** What {@link EthernetSwitch.addPort} needs. */
export interface PortConfig {
  /** Shown in views and errors; need not be unique. */
  readonly name: string;
  readonly mode: PortMode;
  readonly sink: PortSink;
  /** Default 'nic'. */
  readonly role?: PortRole;
  /** MAC table entries this port may hold (default: the switch's `maxMacsPerPort`). */
  readonly maxMacs?: number;
}

/** Why a frame was dropped. Ingress reasons count on the receiving port; `busy`/`sink-error` on the egress port. */
export const DROP_REASONS = [
  /** Shorter than an Ethernet header (or a tag header). */
  'runt',
  /** Longer than MTU 1500 plus headers (64 KiB plus headers for a TCP super-frame). */
  'oversize',
  /** The offload the sender asked for does not match the frame (see `checkOffload` in offload.ts). */
  'bad-offload',
  /** A tagged frame arrived on an access port (defeats double-tagging VLAN hopping). */
  'tagged-on-access',
  /** A second tag under the switch's tag, or an S-tag (0x88a8/0x9100) on a trunk: never forwarded. */
  'stacked-tag',
  /** The frame's VLAN is not allowed on the ingress trunk. */
  'vlan-not-allowed',
  /** Untagged or priority-tagged frame on a trunk without a native VLAN. */
  'untagged-not-allowed',
  /** Tagged with VID 4095. */
  'reserved-vid',
  /** Destination 01:80:C2:00:00:00..0F, which a bridge never forwards. */
  'reserved-multicast',
  /** Source MAC is a group address or all zeros. */
  'bad-source',
  /** The destination was learned on the ingress port (or on an uplink, for a frame from an uplink). */
  'filtered',
  /** Sinks sending from inside `deliver` nested deeper than {@link MAX_FORWARDING_DEPTH}. */
  'reentrancy',
  /** The egress sink answered busy/full. */
  'busy',
  /** The egress sink threw; the frame was dropped for that port only. */
  'sink-error',
] as const;

/** A reason from {@link DROP_REASONS}. */
export type DropReason = (typeof DROP_REASONS)[number];

/** Counters of one port; frames and bytes as seen on the port's side (with the port's tagging). */
export interface PortCounters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  drops: Record<DropReason, number>;
  /** Source addresses not learned because the table was full of other ports' live entries. */
  learnRefused: number;
  /** Learned addresses that moved here from another port. */
  macMoves: number;
}

/** Direction of a captured frame, from the switch's point of view at that port. */
export type CaptureDirection = 'rx' | 'tx';

/**
 * Called with every frame a port receives (before any check) and every frame it delivers. The frame is lent
 * for the call, as to a {@link PortSink}: a listener that keeps it copies it (a pcap writer copies each record).
 */
export type CaptureListener = (frame: Uint8Array, direction: CaptureDirection, timeMs: number) => void;

/** One row of the MAC table view. */
export interface MacTableEntry {
  readonly mac: string;
  readonly vlan: number;
  readonly port: SwitchPort;
  readonly ageMs: number;
}

/** Options of {@link EthernetSwitch}. */
export interface SwitchOptions {
  /** Milliseconds, monotonic enough for ageing (default `Date.now`); tests inject a fake. */
  readonly clock?: () => number;
  /** Entries not refreshed for this long are forgotten (default {@link DEFAULT_AGEING_MS}). */
  readonly ageingMs?: number;
  /** Total MAC table entries (default {@link DEFAULT_MAX_MACS}). */
  readonly maxMacs?: number;
  /** Default per-port limit (default {@link DEFAULT_MAX_MACS_PER_PORT}). */
  readonly maxMacsPerPort?: number;
}

/** 300 s: the recommended ageing time of IEEE 802.1Q clause 8.8.3, Table 8-6. */
export const DEFAULT_AGEING_MS = 300_000;
/** Total table size: far beyond what a page of VMs uses, small enough that a scan stays cheap. */
export const DEFAULT_MAX_MACS = 4096;
/** Per-port limit: a guest with many VLAN subinterfaces and containers stays well below it. */
export const DEFAULT_MAX_MACS_PER_PORT = 256;
/** Largest per-port or total limit accepted, so a configuration mistake cannot make the table unbounded. */
export const MAX_MAC_LIMIT = 1 << 20;
/**
 * How deep `deliver -> receive -> deliver` may nest. A DHCP or ARP reply sent from `deliver` needs 2; a pair of
 * sinks that answer each other forever is cut off here.
 */
export const MAX_FORWARDING_DEPTH = 8;

/** Number of VIDs, the size of a VLAN membership map. */
const VID_COUNT = 4096;

function newCounters(): PortCounters {
  const drops = {} as Record<DropReason, number>;
  for (const reason of DROP_REASONS) drops[reason] = 0;
  return { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops, learnRefused: 0, macMoves: 0 };
}

function checkVid(vid: unknown, what: string): number {
  if (typeof vid !== 'number' || !Number.isInteger(vid)) {
    throw new UserError(
      `${what} must be an integer VLAN ID from ${VID_MIN} to ${VID_MAX}, got ${String(vid)}.`,
    );
  }
  if (vid === VID_PRIORITY_TAGGED) {
    throw new UserError(
      `${what} cannot be VLAN 0: VID 0 marks a priority-tagged frame, not a VLAN (IEEE 802.1Q). ` +
        `Use a VLAN ID from ${VID_MIN} to ${VID_MAX}.`,
    );
  }
  if (vid === VID_RESERVED) {
    throw new UserError(
      `${what} cannot be VLAN 4095: VID 4095 is reserved (IEEE 802.1Q). Use a VLAN ID from ${VID_MIN} to ${VID_MAX}.`,
    );
  }
  if (!isUsableVid(vid)) {
    throw new UserError(`${what} must be a VLAN ID from ${VID_MIN} to ${VID_MAX}, got ${vid}.`);
  }
  return vid;
}

function checkLimit(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_MAC_LIMIT) {
    throw new UserError(`${what} must be an integer from 0 to ${MAX_MAC_LIMIT}, got ${value}.`);
  }
  return value;
}

/**
 * Check a port mode and return a normalized copy (sorted, deduplicated allowed list including the native VLAN).
 * Throws a {@link UserError} that names the field and the fix.
 */
export function validatePortMode(mode: PortMode, portName = 'port'): PortMode {
  if (mode.kind === 'access') {
    return { kind: 'access', vlan: checkVid(mode.vlan, `The VLAN of access port "${portName}"`) };
  }
  if (mode.kind !== 'trunk') {
    throw new UserError(`Port "${portName}" must be in 'access' or 'trunk' mode.`);
  }
  const native =
    mode.native === undefined
      ? undefined
      : checkVid(mode.native, `The native VLAN of trunk port "${portName}"`);
  if (mode.allowed === 'all')
    return native === undefined ? { kind: 'trunk', allowed: 'all' } : { ...mode, native };
  if (!Array.isArray(mode.allowed)) {
    throw new UserError(`The allowed VLANs of trunk port "${portName}" must be a list of VLAN IDs or 'all'.`);
  }
  const set = new Set<number>();
  for (const vid of mode.allowed) set.add(checkVid(vid, `An allowed VLAN of trunk port "${portName}"`));
  if (native !== undefined) set.add(native);
  const allowed = [...set].sort((a, b) => a - b);
  return native === undefined ? { kind: 'trunk', allowed } : { kind: 'trunk', allowed, native };
}

/** A learned address. */
interface LearnedMac {
  readonly key: number;
  readonly vlan: number;
  port: SwitchPort;
  lastSeenMs: number;
}

/** One port of an {@link EthernetSwitch}. Created by {@link EthernetSwitch.addPort}. */
export class SwitchPort {
  /** Unique within the switch, never reused. */
  readonly id: number;
  readonly name: string;
  readonly role: PortRole;
  readonly sink: PortSink;
  /** Live counters (read them; the switch writes them). */
  readonly counters: PortCounters = newCounters();
  /** MAC table entries this port may hold. */
  readonly maxMacs: number;

  #mode: PortMode;
  /** 1 where the VLAN is carried by this port. */
  #member = new Uint8Array(VID_COUNT);
  /** The VLAN untagged frames belong to and are sent in, or 0 when none. */
  #untaggedVlan = 0;
  #access = false;
  #attached = true;
  readonly #switch: EthernetSwitch;
  readonly #captures = new Set<CaptureListener>();
  /** @internal This port's learned entries, least recently seen first (Set insertion order). */
  readonly entries = new Set<LearnedMac>();

  /** @internal Use {@link EthernetSwitch.addPort}. */
  constructor(owner: EthernetSwitch, id: number, config: PortConfig, defaultMaxMacs: number) {
    this.#switch = owner;
    this.id = id;
    this.name = String(config.name);
    this.role = config.role ?? 'nic';
    this.sink = config.sink;
    this.maxMacs = checkLimit(config.maxMacs ?? defaultMaxMacs, `The MAC limit of port "${this.name}"`);
    this.#mode = this.#apply(config.mode);
  }

  /** The port's VLAN mode (normalized). */
  get mode(): PortMode {
    return this.#mode;
  }

  /** False once the port was removed from its switch. */
  get attached(): boolean {
    return this.#attached;
  }

  /** Change the VLAN mode; forgets the addresses learned on this port. Throws a UserError for a bad mode. */
  setMode(mode: PortMode): void {
    this.#mode = this.#apply(mode);
    this.#switch.flushMacs(this);
  }

  /** True when frames of `vlan` may enter and leave through this port. */
  carries(vlan: number): boolean {
    return this.#member[vlan] === 1;
  }

  /** True when frames of `vlan` leave this port tagged. */
  tags(vlan: number): boolean {
    return !this.#access && vlan !== this.#untaggedVlan;
  }

  /** @internal The VLAN of untagged frames, 0 if they are not allowed. */
  get untaggedVlan(): number {
    return this.#untaggedVlan;
  }

  /** @internal */
  get isAccess(): boolean {
    return this.#access;
  }

  /**
   * A frame from the attached device enters the switch, with the offload its sender asked for (validated
   * here, never trusted). The frame is only read, during the call: it is forwarded before this returns.
   */
  receive(frame: Uint8Array, offload?: FrameOffload): void {
    if (this.#attached) this.#switch.forward(this, frame, offload);
  }

  /** Observe this port's frames (for pcap); returns a function that stops observing. */
  capture(listener: CaptureListener): () => void {
    this.#captures.add(listener);
    return () => this.#captures.delete(listener);
  }

  /** @internal True when someone observes this port (frames are then finished for the capture). */
  get capturing(): boolean {
    return this.#captures.size > 0;
  }

  /** @internal */
  notifyCapture(frame: Uint8Array, direction: CaptureDirection, timeMs: number): void {
    for (const listener of this.#captures) {
      try {
        listener(frame, direction, timeMs);
      } catch {
        // A broken viewer must not stop the network; the listener keeps its own error state.
      }
    }
  }

  /** @internal */
  detach(): void {
    this.#attached = false;
    this.#captures.clear();
  }

  #apply(requested: PortMode): PortMode {
    const mode = validatePortMode(requested, this.name);
    this.#member.fill(0);
    if (mode.kind === 'access') {
      this.#access = true;
      this.#untaggedVlan = mode.vlan;
      this.#member[mode.vlan] = 1;
    } else {
      this.#access = false;
      this.#untaggedVlan = mode.native ?? 0;
      if (mode.allowed === 'all') this.#member.fill(1, VID_MIN, VID_MAX + 1);
      else for (const vid of mode.allowed) this.#member[vid] = 1;
    }
    return mode;
  }
}

/** A frame as some egress ports send it, with its offload and, once needed, its finished frames. */
interface EgressForm {
  readonly frame: Uint8Array;
  readonly offload: FrameOffload | undefined;
  /** {@link finishFrame}'s result, made once for every port that needs it. */
  finished: readonly Uint8Array[] | null;
}

/** The per-frame copies made for egress, shared by every port that sends the frame the same way. */
interface EgressForms {
  untagged: EgressForm | null;
  tagged: EgressForm | null;
}

/** The finished frames of `form` (computed once). */
function finished(form: EgressForm): readonly Uint8Array[] {
  if (form.offload === undefined) return [form.frame];
  form.finished ??= finishFrame(form.frame, form.offload);
  return form.finished;
}

/** First size of a scratch buffer (an MTU-sized tagged frame); super-frames grow it. */
const SCRATCH_INITIAL_BYTES = 2048;

/** A VLAN-aware learning switch. See the module comment for the frame ownership rules. */
export class EthernetSwitch {
  readonly #clock: () => number;
  readonly #ageingMs: number;
  readonly #maxMacs: number;
  readonly #maxMacsPerPort: number;
  /** Per forwarding depth, the buffers {@link #scratch} lends. */
  readonly #scratchByDepth: { tagged?: Uint8Array; untagged?: Uint8Array }[] = [];
  /** Copy-on-write, so forwarding can iterate while a sink adds or removes ports. */
  #ports: readonly SwitchPort[] = [];
  #nextPortId = 1;
  /** VLAN -> MAC key -> entry. */
  readonly #table = new Map<number, Map<number, LearnedMac>>();
  #macCount = 0;
  #depth = 0;

  constructor(options: SwitchOptions = {}) {
    this.#clock = options.clock ?? Date.now;
    this.#ageingMs = options.ageingMs ?? DEFAULT_AGEING_MS;
    if (!(this.#ageingMs > 0))
      throw new UserError(`The MAC ageing time must be positive, got ${this.#ageingMs}.`);
    this.#maxMacs = checkLimit(options.maxMacs ?? DEFAULT_MAX_MACS, 'The MAC table size');
    this.#maxMacsPerPort = checkLimit(
      options.maxMacsPerPort ?? DEFAULT_MAX_MACS_PER_PORT,
      'The per-port MAC limit',
    );
  }

  /** Create a port. Throws a UserError for an invalid mode (VLAN 0, 4095, out of range, ...). */
  addPort(config: PortConfig): SwitchPort {
    const port = new SwitchPort(this, this.#nextPortId++, config, this.#maxMacsPerPort);
    this.#ports = [...this.#ports, port];
    return port;
  }

  /** Detach a port: it sends and receives nothing more and its learned addresses are forgotten. */
  removePort(port: SwitchPort): void {
    if (!this.#ports.includes(port)) return;
    this.#ports = this.#ports.filter((p) => p !== port);
    this.flushMacs(port);
    port.detach();
  }

  /** The ports, in creation order. */
  get ports(): readonly SwitchPort[] {
    return this.#ports;
  }

  /** Number of entries in the MAC table (including ones that expired but were not swept yet). */
  get macCount(): number {
    return this.#macCount;
  }

  /** The live MAC table (expired entries are swept first), ordered by VLAN, then MAC. */
  macTable(): MacTableEntry[] {
    const now = this.#clock();
    this.ageOut();
    const rows: MacTableEntry[] = [];
    for (const [vlan, macs] of this.#table) {
      for (const entry of macs.values()) {
        rows.push({ mac: formatMacKey(entry.key), vlan, port: entry.port, ageMs: now - entry.lastSeenMs });
      }
    }
    return rows.sort((a, b) => a.vlan - b.vlan || (a.mac < b.mac ? -1 : a.mac > b.mac ? 1 : 0));
  }

  /** Forget learned addresses: of one port, or all. */
  flushMacs(port?: SwitchPort): void {
    const victims = port ? [...port.entries] : this.#ports.flatMap((p) => [...p.entries]);
    for (const entry of victims) this.#forget(entry);
  }

  /** Forget every entry older than the ageing time; returns how many were removed. */
  ageOut(): number {
    const now = this.#clock();
    let removed = 0;
    for (const port of this.#ports) {
      // Each port's set is ordered least recently seen first, so stop at the first live entry.
      for (const entry of port.entries) {
        if (now - entry.lastSeenMs < this.#ageingMs) break;
        this.#forget(entry);
        removed++;
      }
    }
    return removed;
  }

  /** @internal Entry point of {@link SwitchPort.receive}. */
  forward(ingress: SwitchPort, frame: Uint8Array, requested?: FrameOffload): void {
    const now = this.#clock();
    const counters = ingress.counters;
    counters.rxFrames++;
    counters.rxBytes += frame.length;
    let offload: FrameOffload | undefined;
    if (requested !== undefined) {
      const checked = checkOffload(frame, requested);
      if (typeof checked === 'string') {
        ingress.notifyCapture(frame, 'rx', now);
        counters.drops['bad-offload']++;
        return;
      }
      if (!isFinished(checked)) offload = checked;
    }
    if (ingress.capturing) {
      const form: EgressForm = { frame, offload, finished: null };
      for (const piece of finished(form)) ingress.notifyCapture(piece, 'rx', now);
    }
    if (this.#depth >= MAX_FORWARDING_DEPTH) {
      counters.drops.reentrancy++;
      return;
    }
    const length = frame.length;
    const superFrame = offload !== undefined && offload.gso !== 'none';
    if (length < ETH_HEADER_BYTES) {
      counters.drops.runt++;
      return;
    }
    if (length > (superFrame ? GSO_MAX_FRAME : ETH_MAX_TAGGED_FRAME)) {
      counters.drops.oversize++;
      return;
    }

    // Classify: which VLAN, and does the frame carry the switch's tag (IEEE 802.1Q clause 6.9, 8.6.1).
    const outerType = readU16(frame, ETH_TYPE_OFFSET);
    let vlan: number;
    let tagged = false;
    if (ingress.isAccess) {
      if (isVlanTpid(outerType)) {
        counters.drops['tagged-on-access']++;
        return;
      }
      vlan = ingress.untaggedVlan;
    } else if (outerType === ETHERTYPE_VLAN) {
      if (length < ETH_HEADER_BYTES + VLAN_TAG_BYTES) {
        counters.drops.runt++;
        return;
      }
      const vid = readU16(frame, VLAN_TCI_OFFSET) & TCI_VID_MASK;
      if (vid === VID_RESERVED) {
        counters.drops['reserved-vid']++;
        return;
      }
      vlan = vid === VID_PRIORITY_TAGGED ? ingress.untaggedVlan : vid;
      if (vlan === 0) {
        counters.drops['untagged-not-allowed']++;
        return;
      }
      if (!ingress.carries(vlan)) {
        counters.drops['vlan-not-allowed']++;
        return;
      }
      // Whatever follows our tag would become the outer tag where the frame leaves untagged: VLAN hopping.
      if (isVlanTpid(readU16(frame, ETH_TYPE_OFFSET + VLAN_TAG_BYTES))) {
        counters.drops['stacked-tag']++;
        return;
      }
      tagged = true;
    } else if (isVlanTpid(outerType)) {
      counters.drops['stacked-tag']++;
      return;
    } else {
      vlan = ingress.untaggedVlan;
      if (vlan === 0) {
        counters.drops['untagged-not-allowed']++;
        return;
      }
    }
    if (!tagged && !superFrame && length > ETH_MAX_UNTAGGED_FRAME) {
      counters.drops.oversize++;
      return;
    }
    if (isReservedMulticastAt(frame, ETH_DST_OFFSET)) {
      counters.drops['reserved-multicast']++;
      return;
    }
    if (isGroupMacAt(frame, ETH_SRC_OFFSET) || isZeroMacAt(frame, ETH_SRC_OFFSET)) {
      counters.drops['bad-source']++;
      return;
    }

    this.#learn(ingress, vlan, macKeyAt(frame, ETH_SRC_OFFSET), now);

    const forms: EgressForms = tagged
      ? { untagged: null, tagged: null }
      : { untagged: { frame, offload, finished: null }, tagged: null };
    const fromUplink = ingress.role === 'uplink';
    this.#depth++;
    try {
      if (!isGroupMacAt(frame, ETH_DST_OFFSET)) {
        const entry = this.#lookup(vlan, macKeyAt(frame, ETH_DST_OFFSET), now);
        if (entry) {
          const egress = entry.port;
          if (egress === ingress || (fromUplink && egress.role === 'uplink')) counters.drops.filtered++;
          else this.#send(egress, this.#egressForm(egress, vlan, frame, offload, tagged, forms), now);
          return;
        }
      }
      // Broadcast, multicast and unknown unicast: every other port of the VLAN, once each.
      for (const egress of this.#ports) {
        if (egress === ingress || !egress.attached || !egress.carries(vlan)) continue;
        if (fromUplink && egress.role === 'uplink') continue;
        this.#send(egress, this.#egressForm(egress, vlan, frame, offload, tagged, forms), now);
      }
    } finally {
      this.#depth--;
    }
  }

  /**
   * Where this forwarding depth builds a frame's other form (tag removed or inserted): reused by every frame
   * at that depth, since a frame is lent to sinks for the call only. In Chromium a fresh array per frame cost
   * more than the copy into it (new memory is zeroed and faulted in: ~0.1 ms for a 20 KB super-frame).
   */
  #scratch(form: 'tagged' | 'untagged', length: number): Uint8Array {
    const buffers = (this.#scratchByDepth[this.#depth] ??= {});
    let buffer = buffers[form];
    if (buffer === undefined || buffer.length < length) {
      buffer = new Uint8Array(Math.max(length, SCRATCH_INITIAL_BYTES, 2 * (buffer?.length ?? 0)));
      buffers[form] = buffer;
    }
    return buffer.subarray(0, length);
  }

  /** The frame as `egress` sends it, making each needed copy once per frame. */
  #egressForm(
    egress: SwitchPort,
    vlan: number,
    frame: Uint8Array,
    offload: FrameOffload | undefined,
    ingressTagged: boolean,
    forms: EgressForms,
  ): EgressForm {
    if (!egress.tags(vlan)) {
      forms.untagged ??= {
        frame: popVlanTag(frame, this.#scratch('untagged', frame.length - VLAN_TAG_BYTES)),
        offload: offload && shiftOffload(offload, -VLAN_TAG_BYTES),
        finished: null,
      };
      return forms.untagged;
    }
    if (forms.tagged === null) {
      if (!ingressTagged) {
        const shifted = offload && shiftOffload(offload, VLAN_TAG_BYTES);
        const tagged = pushVlanTag(
          frame,
          vlan,
          ETHERTYPE_VLAN,
          this.#scratch('tagged', frame.length + VLAN_TAG_BYTES),
        );
        forms.tagged = { frame: tagged, offload: shifted, finished: null };
      } else if ((readU16(frame, VLAN_TCI_OFFSET) & TCI_VID_MASK) === vlan) {
        forms.tagged = { frame, offload, finished: null };
      } else {
        // Priority-tagged (VID 0) frame of the native VLAN: keep PCP and DEI, write the VID.
        const copy = frame.slice();
        writeU16(copy, VLAN_TCI_OFFSET, (readU16(frame, VLAN_TCI_OFFSET) & ~TCI_VID_MASK) | vlan);
        forms.tagged = { frame: copy, offload, finished: null };
      }
    }
    return forms.tagged;
  }

  /** Hand `form` to `egress`: as it is where the sink takes its offload, else finished first. */
  #send(egress: SwitchPort, form: EgressForm, now: number): void {
    if (form.offload === undefined) {
      this.#deliver(egress, form, form.frame, undefined, now);
      return;
    }
    let support: OffloadSupport;
    try {
      support = egress.sink.offloads?.() ?? NO_OFFLOADS;
    } catch {
      egress.counters.drops['sink-error']++;
      return;
    }
    if (acceptsOffload(support, form.offload)) {
      this.#deliver(egress, form, form.frame, support.csum ? form.offload : undefined, now);
      return;
    }
    const hint = support.csum ? CHECKSUMS_VALID : undefined;
    for (const piece of finished(form)) this.#deliver(egress, form, piece, hint, now);
  }

  /** Deliver one frame of `form` (the form's own, or one of its finished frames) and count it. */
  #deliver(
    egress: SwitchPort,
    form: EgressForm,
    frame: Uint8Array,
    offload: FrameOffload | undefined,
    now: number,
  ): void {
    const counters = egress.counters;
    let accepted: boolean;
    try {
      accepted = egress.sink.deliver(frame, offload);
    } catch {
      counters.drops['sink-error']++;
      return;
    }
    if (!accepted) {
      counters.drops.busy++;
      return;
    }
    counters.txFrames++;
    counters.txBytes += frame.length;
    if (!egress.capturing) return;
    // A capture shows finished frames, as they would be on a wire, whatever the sink was handed.
    if (frame === form.frame) for (const piece of finished(form)) egress.notifyCapture(piece, 'tx', now);
    else egress.notifyCapture(frame, 'tx', now);
  }

  #lookup(vlan: number, key: number, now: number): LearnedMac | undefined {
    const entry = this.#table.get(vlan)?.get(key);
    if (entry === undefined) return undefined;
    if (now - entry.lastSeenMs >= this.#ageingMs) {
      this.#forget(entry);
      return undefined;
    }
    return entry;
  }

  #learn(port: SwitchPort, vlan: number, key: number, now: number): void {
    const existing = this.#table.get(vlan)?.get(key);
    if (existing !== undefined && existing.port === port) {
      existing.lastSeenMs = now;
      port.entries.delete(existing); // move to the most recently seen end
      port.entries.add(existing);
      return;
    }
    if (existing !== undefined) {
      port.counters.macMoves++;
      this.#forget(existing);
    }
    if (port.maxMacs === 0) {
      port.counters.learnRefused++;
      return;
    }
    if (port.entries.size >= port.maxMacs) {
      this.#forget(port.entries.values().next().value as LearnedMac); // only ever its own oldest
    } else if (this.#macCount >= this.#maxMacs) {
      this.ageOut();
      if (this.#macCount >= this.#maxMacs) {
        // Never evict another port's live entry: a flooding port can only churn its own.
        if (port.entries.size === 0) {
          port.counters.learnRefused++;
          return;
        }
        this.#forget(port.entries.values().next().value as LearnedMac);
      }
    }
    // Looked up only now: forgetting an entry above may have removed the VLAN's map.
    let macs = this.#table.get(vlan);
    if (macs === undefined) {
      macs = new Map();
      this.#table.set(vlan, macs);
    }
    const entry: LearnedMac = { key, vlan, port, lastSeenMs: now };
    macs.set(key, entry);
    port.entries.add(entry);
    this.#macCount++;
  }

  #forget(entry: LearnedMac): void {
    const macs = this.#table.get(entry.vlan);
    if (macs?.get(entry.key) !== entry) return;
    macs.delete(entry.key);
    if (macs.size === 0) this.#table.delete(entry.vlan);
    entry.port.entries.delete(entry);
    this.#macCount--;
  }
}
