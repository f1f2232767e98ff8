/**
 * Joins a switch to a named network shared by other tabs of the same origin, over a BroadcastChannel.
 *
 * BroadcastChannel is a full mesh: every message reaches every other channel object of that name. So an
 * uplink port is an `uplink`-role trunk of the switch, and the switch never sends a frame that arrived on an
 * uplink out of an uplink (split horizon): a frame crosses the channel exactly once and reaches every port of
 * every switch at most once, however many tabs join.
 *
 * Everything that arrives on the channel comes from another tab and is untrusted: each field is checked, and a
 * message that fails a check is dropped and counted, never thrown.
 */
import type { FrameOffload, OffloadSupport } from '../common/frame-offload.ts';
import { ETH_HEADER_BYTES, ETH_MAX_TAGGED_FRAME } from './ethernet.ts';
import { GSO_MAX_FRAME } from './offload.ts';
import type { EthernetSwitch, SwitchPort, TrunkMode } from './switch.ts';

/**
 * The part of BroadcastChannel an uplink uses; the browser passes `new BroadcastChannel(networkChannelName(n))`,
 * tests a fake. `postMessage` may throw (closed channel, uncloneable data): the frame is then counted as lost.
 */
export interface NetChannel {
  /** `transfer`: buffers the channel may move to the receiver (only when `transfers` is true). */
  postMessage(data: unknown, transfer?: Transferable[]): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  close(): void;
  /** True when the channel can transfer a frame's buffer instead of cloning it (machine/net-hub.ts). */
  readonly transfers?: boolean;
  /** How messages leave: a relay between the tabs (machine/net-hub.ts) or a BroadcastChannel (the default). */
  readonly transport?: UplinkTransport;
}

/** How an uplink reaches the other tabs (see {@link NetChannel.transport}). */
export type UplinkTransport = 'relay' | 'broadcast';

/**
 * The version this code writes and the only one it accepts. Version 2 added `offload` (version 1 tabs, which
 * could not carry super-frames, are not on the same network as version 2 tabs: each drops the other's messages
 * as `bad-version`).
 */
export const UPLINK_PROTOCOL_VERSION = 2;

/**
 * The one message of protocol version 2: an Ethernet frame as it leaves the switch on a trunk (tagged with
 * its VLAN; this port has no native VLAN), without FCS, with its offload when it has one: a TCP super-frame
 * crosses the channel as one message, and the receiving switch finishes it for ports that need it.
 */
export interface UplinkFrameMessage {
  readonly v: typeof UPLINK_PROTOCOL_VERSION;
  readonly kind: 'frame';
  /** The sending switch's id, {@link MIN_SWITCH_ID_LENGTH}..{@link MAX_SWITCH_ID_LENGTH} of `[A-Za-z0-9_-]`. */
  readonly from: string;
  /**
   * A Uint8Array of {@link ETH_HEADER_BYTES}..{@link ETH_MAX_TAGGED_FRAME} bytes, or up to
   * {@link GSO_MAX_FRAME} for a TCP super-frame.
   */
  readonly frame: Uint8Array;
  /** Absent for a finished frame. Checked here for shape and by the receiving switch against the frame. */
  readonly offload?: FrameOffload;
}

/** The uplink carries every offload: the receiving tab's switch finishes frames for its own ports. */
const UPLINK_OFFLOADS: OffloadSupport = { csum: true, tcp4: true, tcp6: true };

/** Shortest accepted switch id. */
export const MIN_SWITCH_ID_LENGTH = 1;
/** Longest accepted switch id: room for a UUID, small enough that a hostile one costs nothing. */
export const MAX_SWITCH_ID_LENGTH = 64;
const SWITCH_ID_PATTERN = /^[A-Za-z0-9_-]+$/;

/** Longest accepted network name: it becomes part of a BroadcastChannel name. */
export const MAX_NETWORK_NAME_LENGTH = 64;
const NETWORK_NAME_PATTERN = /^[A-Za-z0-9._-]+$/;
/** Prefix of the BroadcastChannel name of a network. */
export const NETWORK_CHANNEL_PREFIX = 'tabvisor-net:';

/** Why a message from the channel was dropped. */
export const UPLINK_DROP_REASONS = [
  /** Not a plain object. */
  'not-object',
  /** `v` is not {@link UPLINK_PROTOCOL_VERSION}. */
  'bad-version',
  /** `kind` is not 'frame'. */
  'bad-kind',
  /** `from` missing, not a string, too long or with characters outside `[A-Za-z0-9_-]`. */
  'bad-from',
  /** `frame` is not a Uint8Array. */
  'bad-frame-type',
  /** `frame` shorter than an Ethernet header or longer than a tagged MTU-sized frame (or super-frame). */
  'bad-frame-size',
  /** `offload` present but not an object of the documented fields and types. */
  'bad-offload',
  /** Reading the message threw (an exotic object handed in-process). */
  'unreadable',
  /** The uplink was closed. */
  'closed',
] as const;

/** A reason from {@link UPLINK_DROP_REASONS}. */
export type UplinkDropReason = (typeof UPLINK_DROP_REASONS)[number];

/** Counters of an uplink (the switch port has its own frame counters and drops). */
export interface UplinkCounters {
  /** Frames posted to the channel. */
  sent: number;
  /** Frames posting threw for; each was dropped (also counted as `busy` on the port). */
  postErrors: number;
  /** Valid frames handed to the switch. */
  received: number;
  /** Our own messages echoed back (a channel implementation that loops back), ignored. */
  ownMessages: number;
  /** Invalid messages by reason. */
  dropped: Record<UplinkDropReason, number>;
}

/** Options of {@link Uplink}. */
export interface UplinkOptions {
  /** This switch's id on the channel (default: random). Must match `[A-Za-z0-9_-]{1,64}`. */
  readonly switchId?: string;
  /** Port name in the switch's views (default 'uplink'). */
  readonly portName?: string;
  /** VLANs carried to other tabs (default all). */
  readonly allowedVlans?: readonly number[] | 'all';
  /** MAC entries the uplink port may hold: every remote station is learned on it (default 1024). */
  readonly maxMacs?: number;
}

/** Default MAC limit of an uplink port: all remote VMs of a network are learned on it. */
export const DEFAULT_UPLINK_MAX_MACS = 1024;

/**
 * The BroadcastChannel name of a network, or a UserError-worthy message when the name is unusable.
 * Returns `{ ok: false, message }` rather than throwing so the UI can show it next to the field.
 */
export function networkChannelName(
  network: string,
): { ok: true; name: string } | { ok: false; message: string } {
  if (
    network.length === 0 ||
    network.length > MAX_NETWORK_NAME_LENGTH ||
    !NETWORK_NAME_PATTERN.test(network)
  ) {
    return {
      ok: false,
      message:
        `Network name "${network.slice(0, MAX_NETWORK_NAME_LENGTH)}" is not usable: use 1 to ` +
        `${MAX_NETWORK_NAME_LENGTH} letters, digits, '.', '_' or '-'.`,
    };
  }
  return { ok: true, name: NETWORK_CHANNEL_PREFIX + network };
}

/** True when `id` is an acceptable switch id. */
export function isValidSwitchId(id: unknown): id is string {
  return (
    typeof id === 'string' &&
    id.length >= MIN_SWITCH_ID_LENGTH &&
    id.length <= MAX_SWITCH_ID_LENGTH &&
    SWITCH_ID_PATTERN.test(id)
  );
}

/**
 * Check a message from the channel. Returns the frame (a fresh copy when the sender's view could be shared or
 * could pin a larger buffer) or the reason it is refused. Never throws on plain data; exotic objects handed
 * in-process may throw from getters, which {@link Uplink} catches.
 */
export function parseUplinkMessage(
  data: unknown,
): { from: string; frame: Uint8Array; offload?: FrameOffload } | UplinkDropReason {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return 'not-object';
  const message = data as Record<string, unknown>;
  if (message.v !== UPLINK_PROTOCOL_VERSION) return 'bad-version';
  if (message.kind !== 'frame') return 'bad-kind';
  const from = message.from;
  if (!isValidSwitchId(from)) return 'bad-from';
  const frame = message.frame;
  if (!(frame instanceof Uint8Array)) return 'bad-frame-type';
  let offload: FrameOffload | undefined;
  if (message.offload !== undefined) {
    offload = parseOffloadShape(message.offload);
    if (offload === undefined) return 'bad-offload';
  }
  const length = frame.byteLength;
  const limit = offload !== undefined && offload.gso !== 'none' ? GSO_MAX_FRAME : ETH_MAX_TAGGED_FRAME;
  if (length < ETH_HEADER_BYTES || length > limit) return 'bad-frame-size';
  // A frame on a SharedArrayBuffer is copied, since another thread could change it under the switch; so is a
  // view into a larger buffer (a message from the channel always owns its buffer, so this costs nothing there).
  const copy = ownsBuffer(frame) ? frame : frame.slice();
  return offload === undefined ? { from, frame: copy } : { from, frame: copy, offload };
}

/** True when `frame` is all of an ordinary (not shared) ArrayBuffer. */
function ownsBuffer(frame: Uint8Array): boolean {
  return (
    frame.buffer instanceof ArrayBuffer &&
    frame.byteOffset === 0 &&
    frame.buffer.byteLength === frame.byteLength
  );
}

/** A fresh FrameOffload from an untrusted value, or undefined when a field is missing or of the wrong type. */
function parseOffloadShape(value: unknown): FrameOffload | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const o = value as Record<string, unknown>;
  const { csumStart, csumOffset, gso, gsoSize, dataValid } = o;
  if (!Number.isInteger(csumStart) || !Number.isInteger(csumOffset) || !Number.isInteger(gsoSize))
    return undefined;
  if (gso !== 'none' && gso !== 'tcp4' && gso !== 'tcp6') return undefined;
  if (typeof dataValid !== 'boolean') return undefined;
  return {
    csumStart: csumStart as number,
    csumOffset: csumOffset as number,
    gso,
    gsoSize: gsoSize as number,
    dataValid,
  };
}

function randomSwitchId(): string {
  let id = 'sw-';
  for (let i = 0; i < 4; i++) id += Math.floor(Math.random() * 0x1_0000_0000).toString(36);
  return id;
}

/** A switch's connection to a named network. Dispose with {@link Uplink.close}. */
export class Uplink {
  /** This switch's id on the channel. */
  readonly switchId: string;
  /** The uplink port on the switch. */
  readonly port: SwitchPort;
  /** Live counters. */
  readonly counters: UplinkCounters;

  readonly #switch: EthernetSwitch;
  readonly #channel: NetChannel;
  #closed = false;

  /** Add an uplink port to `owner` and connect it to `channel`; the uplink owns the channel from now on. */
  constructor(owner: EthernetSwitch, channel: NetChannel, options: UplinkOptions = {}) {
    const switchId = options.switchId ?? randomSwitchId();
    if (!isValidSwitchId(switchId)) {
      throw new TypeError(`switchId must match [A-Za-z0-9_-]{1,${MAX_SWITCH_ID_LENGTH}}, got "${switchId}"`);
    }
    this.switchId = switchId;
    this.#switch = owner;
    this.#channel = channel;
    const dropped = {} as Record<UplinkDropReason, number>;
    for (const reason of UPLINK_DROP_REASONS) dropped[reason] = 0;
    this.counters = { sent: 0, postErrors: 0, received: 0, ownMessages: 0, dropped };
    const mode: TrunkMode = { kind: 'trunk', allowed: options.allowedVlans ?? 'all' };
    this.port = owner.addPort({
      name: options.portName ?? 'uplink',
      role: 'uplink',
      mode,
      maxMacs: options.maxMacs ?? DEFAULT_UPLINK_MAX_MACS,
      sink: { deliver: (frame, offload) => this.#post(frame, offload), offloads: () => UPLINK_OFFLOADS },
    });
    channel.onmessage = (event) => this.#onMessage(event);
  }

  /** How this uplink reaches the other tabs now. */
  get transport(): UplinkTransport {
    return this.#channel.transport ?? 'broadcast';
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Leave the network: remove the port, stop listening and close the channel. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#channel.onmessage = null;
    this.#switch.removePort(this.port);
    try {
      this.#channel.close();
    } catch {
      // Already closed by its creator: nothing left to release.
    }
  }

  #post(frame: Uint8Array, offload: FrameOffload | undefined): boolean {
    if (this.#closed) return false;
    const transfers = this.#channel.transfers === true;
    const message: UplinkFrameMessage = {
      v: UPLINK_PROTOCOL_VERSION,
      kind: 'frame',
      from: this.switchId,
      // Posting clones the view's whole buffer: a frame lent as a view into a larger one (a NIC's transmit
      // buffer) is cut out first. A channel that transfers gets a copy of our own in any case: the switch
      // delivers the same frame to other ports after this one.
      frame: transfers || !ownsBuffer(frame) ? frame.slice() : frame,
      ...(offload === undefined ? {} : { offload }),
    };
    try {
      if (transfers) this.#channel.postMessage(message, [message.frame.buffer]);
      else this.#channel.postMessage(message);
    } catch {
      this.counters.postErrors++;
      return false;
    }
    this.counters.sent++;
    return true;
  }

  #onMessage(event: { data: unknown }): void {
    if (this.#closed) {
      this.counters.dropped.closed++;
      return;
    }
    let parsed: ReturnType<typeof parseUplinkMessage>;
    try {
      parsed = parseUplinkMessage(event === null || typeof event !== 'object' ? undefined : event.data);
    } catch {
      this.counters.dropped.unreadable++;
      return;
    }
    if (typeof parsed === 'string') {
      this.counters.dropped[parsed]++;
      return;
    }
    if (parsed.from === this.switchId) {
      this.counters.ownMessages++;
      return;
    }
    this.counters.received++;
    this.port.receive(parsed.frame, parsed.offload);
  }
}
