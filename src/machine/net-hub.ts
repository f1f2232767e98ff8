/**
 * The tabs of one origin meet on a network through a relay in a SharedWorker (`net-hub.worker.ts`): each tab's
 * uplink joins its network over a MessagePort, and the relay passes every message on to the other tabs joined
 * to that network, moving a frame's bytes (transfer) instead of cloning them. Uplinks that cannot reach the
 * relay (a VM-host worker of the single-worker mode, which has no SharedWorker; a browser without it; a relay
 * that failed to load) use the network's BroadcastChannel as before, and the relay bridges the two: what
 * arrives there goes to every port, and what a port sends also goes out there while such uplinks are present.
 * They say so on a side channel ({@link presenceChannelName}) when they open, every {@link PRESENCE_INTERVAL_MS}
 * and when the relay asks; so do relays, so that two relays on one origin (two builds, whose workers have
 * different URLs, e.g. tabs opened before and after a deployment) bridge to each other; bridging every frame when nobody listens costs the relay a clone and the browser a
 * message per frame (measured: two-tab TCP fell from 9.2-10.9 to 5.5-6.3 MB/s). A tab on the relay listens to
 * the relay only, so every message reaches every other uplink exactly once.
 *
 * Why: measured in Chromium on the 2-core test machine (two tabs of one profile, isolated pages), a 16 KB message
 * crosses a MessagePort at 46-104 MB/s against BroadcastChannel's 31-41 MB/s, and small ones round-trip in
 * 0.1-0.3 ms against 0.3-0.46 ms; during a TCP stream between two tabs, `BroadcastChannel.postMessage` took
 * ~0.75 ms per frame of the sending page's main thread.
 */
import type { NetChannel, UplinkTransport } from '../net/uplink.ts';

/** What the relay and a tab need of a MessagePort (tests use fakes). */
export interface HubPort {
  postMessage(data: unknown, transfer?: Transferable[]): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  close(): void;
  /** `close`: the other side is gone (its tab closed); where the platform has the event (Chromium 122+, Node). */
  addEventListener?(type: 'close', listener: () => void): void;
}

/** The first message a port sends: the network (channel name) it joins. */
export interface HubJoin {
  readonly join: string;
}

/** A port leaving its network (its tab closes the uplink). */
export const HUB_LEAVE = 'leave';

/**
 * A tab asking the relay whether it is still there, and the relay's answer (to that port only). A relay worker
 * that dies after it loaded (killed under memory pressure, say) fires no `error` event: without an answer
 * within {@link RELAY_TIMEOUT_MS} the tab goes over to the BroadcastChannel.
 */
export const HUB_PING = 'ping';
export const HUB_PONG = 'pong';
/** How often a tab on the relay checks that it is there, and how long an unanswered question may wait. */
export const RELAY_CHECK_MS = 2_000;
export const RELAY_TIMEOUT_MS = 3 * RELAY_CHECK_MS;

/** Longest network channel name the relay accepts. */
const MAX_NAME_LENGTH = 512;

/** How often an uplink on the BroadcastChannel says it is there, and how long the relay believes it. */
export const PRESENCE_INTERVAL_MS = 5_000;
export const PRESENCE_TTL_MS = 3 * PRESENCE_INTERVAL_MS;
/** Messages on the side channel: an uplink on the BroadcastChannel is there; the relay asks who is. */
export const PRESENT = 'present';
export const WHO_IS_THERE = 'who-is-there';

/** The side channel where uplinks on network channel `name`'s BroadcastChannel say they are there. */
export function presenceChannelName(name: string): string {
  return `${name}|present`;
}

/** What the relay opens per network to bridge it: its BroadcastChannel and the side channel. */
export interface HubBridge {
  readonly channel: NetChannel;
  readonly presence: NetChannel;
}

interface Network {
  readonly ports: Set<HubPort>;
  readonly bridge: HubBridge | undefined;
  /** Until when (ms, `now()`) uplinks on the BroadcastChannel are known to be there. */
  presentUntil: number;
  /** The timer that says this relay is there. */
  stopSaying?: ReturnType<typeof setInterval>;
}

/**
 * The relay (runs in the SharedWorker). A port's first message must be a {@link HubJoin}; anything before it is
 * ignored. After it, each message from the port goes to every other port joined to the same network, unread:
 * the receiving uplinks check it (see `parseUplinkMessage`). A frame's buffer is transferred to the last
 * recipient and cloned for the others.
 */
export class NetHub {
  readonly #networks = new Map<string, Network>();

  /**
   * `bridge` opens a network's BroadcastChannel and side channel (none: no bridging, as in some tests); `now`
   * is the clock in ms.
   */
  constructor(
    private readonly bridge?: (name: string) => HubBridge,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Take a newly connected port. */
  connect(port: HubPort): void {
    let members: Network | undefined;
    let network = '';
    const leave = (): void => {
      if (members === undefined) return;
      members.ports.delete(port);
      if (members.ports.size === 0) {
        this.#networks.delete(network);
        clearInterval(members.stopSaying);
        for (const channel of members.bridge ? [members.bridge.channel, members.bridge.presence] : []) {
          channel.onmessage = null;
          channel.close();
        }
      }
      members = undefined;
      port.onmessage = null;
      port.close();
    };
    // A tab that closed without leaving (killed, or closed before it could say so) is dropped too.
    port.addEventListener?.('close', leave);
    port.onmessage = (event) => {
      const data: unknown = event.data;
      if (members === undefined) {
        const join = (data as Partial<HubJoin> | null)?.join;
        if (typeof join !== 'string' || join.length > MAX_NAME_LENGTH) return;
        network = join;
        members = this.#networks.get(network) ?? this.#open(network);
        members.ports.add(port);
        return;
      }
      if (data === HUB_LEAVE) {
        leave();
        return;
      }
      if (data === HUB_PING) {
        try {
          port.postMessage(HUB_PONG);
        } catch {
          // A closed port: the tab is gone anyway.
        }
        return;
      }
      if (members.bridge !== undefined && this.now() < members.presentUntil) {
        try {
          members.bridge.channel.postMessage(data);
        } catch {
          // Not cloneable: the uplinks on the BroadcastChannel miss it (as they would have from its sender).
        }
      }
      relay(members.ports, port, data);
    };
  }

  #open(name: string): Network {
    const ports = new Set<HubPort>();
    const bridge = this.bridge?.(name);
    const network: Network = { ports, bridge, presentUntil: -Infinity };
    if (bridge !== undefined) {
      bridge.channel.onmessage = (event) => {
        network.presentUntil = this.now() + PRESENCE_TTL_MS; // whoever sends there is there
        relay(ports, undefined, event.data);
      };
      // Another relay (another build of tabvisor on this origin: its worker has another URL) is a participant
      // on the BroadcastChannel like any other, so relays say they are there too, and bridge to each other.
      const say = (): void => bridge.presence.postMessage(PRESENT);
      bridge.presence.onmessage = (event) => {
        if (event.data === PRESENT) network.presentUntil = this.now() + PRESENCE_TTL_MS;
        else if (event.data === WHO_IS_THERE) say();
      };
      bridge.presence.postMessage(WHO_IS_THERE);
      say();
      network.stopSaying = setInterval(say, PRESENCE_INTERVAL_MS);
    }
    this.#networks.set(name, network);
    return network;
  }

  /** Ports joined to `network` (for tests and statistics). */
  members(network: string): number {
    return this.#networks.get(network)?.ports.size ?? 0;
  }
}

function relay(members: ReadonlySet<HubPort>, from: HubPort | undefined, data: unknown): void {
  const others = [...members].filter((port) => port !== from);
  const frame = (data as { frame?: unknown } | null)?.frame;
  const buffer =
    frame instanceof Uint8Array && frame.buffer instanceof ArrayBuffer ? frame.buffer : undefined;
  others.forEach((port, i) => {
    try {
      if (buffer !== undefined && i === others.length - 1) port.postMessage(data, [buffer]);
      else port.postMessage(data);
    } catch {
      // A port that cannot take it (closed, or data it cannot clone): that tab misses this message.
    }
  });
}

/**
 * A tab's channel for one network: the relay's port when it has one, and the BroadcastChannel of the same name.
 * Sends and listens on the relay while it is up (the relay bridges the BroadcastChannel's traffic), and on the
 * BroadcastChannel otherwise, announcing itself there so the relay bridges to it. While on the relay it asks
 * every {@link RELAY_CHECK_MS} whether the relay is there ({@link HUB_PING}); a question left unanswered (and no
 * other message from the relay) for {@link RELAY_TIMEOUT_MS} counts as a failed relay. `transfers`: a frame
 * posted here may have its buffer transferred (the uplink posts a copy of its own).
 */
export class TabChannel implements NetChannel {
  readonly transfers = true;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  #hub: HubPort | undefined;
  readonly #broadcast: NetChannel;

  readonly #deliver = (event: { data: unknown }): void => this.onmessage?.(event);
  readonly #announce: (() => () => void) | undefined;
  /** Stops announcing this uplink on the side channel (while it is on the BroadcastChannel). */
  #unannounce: (() => void) | undefined;
  /** The relay check's timer, and when its unanswered question was asked (undefined: none is). */
  #checker: ReturnType<typeof setInterval> | undefined;
  #askedAt: number | undefined;

  /**
   * `announce` starts saying on the side channel that this uplink is on the BroadcastChannel (so the relay
   * bridges to it) and returns how to stop; none in tests that do not need it. `checkMs`: how often the relay
   * is checked (tests shorten it; it times out after three checks).
   */
  constructor(
    name: string,
    broadcast: NetChannel,
    hub: HubPort | undefined,
    announce?: () => () => void,
    checkMs = RELAY_CHECK_MS,
  ) {
    this.#broadcast = broadcast;
    this.#hub = hub;
    this.#announce = announce;
    if (hub === undefined) {
      broadcast.onmessage = this.#deliver;
      this.#unannounce = announce?.();
      return;
    }
    // The relay bridges the BroadcastChannel's traffic to this port: listening there too would hear it twice.
    hub.onmessage = (event) => {
      this.#askedAt = undefined; // whatever comes from the relay says it is there
      if (event.data !== HUB_PONG) this.#deliver(event);
    };
    const join: HubJoin = { join: name };
    hub.postMessage(join);
    // Timers of a hidden tab may run late (throttled): only a question that waited a whole timeout counts.
    this.#checker = setInterval(() => {
      const now = performance.now();
      if (this.#askedAt === undefined) {
        this.#askedAt = now;
        this.#hub?.postMessage(HUB_PING);
      } else if (now - this.#askedAt >= 3 * checkMs) {
        this.relayFailed();
      }
    }, checkMs);
  }

  /** Which way messages leave: through the relay, or the BroadcastChannel. */
  get transport(): UplinkTransport {
    return this.#hub !== undefined ? 'relay' : 'broadcast';
  }

  /**
   * The relay failed (its worker did not load, or stopped answering): use the BroadcastChannel from now on.
   */
  relayFailed(): void {
    clearInterval(this.#checker);
    this.#checker = undefined;
    if (this.#hub === undefined) return;
    this.#hub.onmessage = null;
    this.#hub.close();
    this.#hub = undefined;
    this.#broadcast.onmessage = this.#deliver;
    this.#unannounce = this.#announce?.();
  }

  postMessage(data: unknown, transfer?: Transferable[]): void {
    if (this.#hub !== undefined) this.#hub.postMessage(data, transfer ?? []);
    else this.#broadcast.postMessage(data);
  }

  close(): void {
    clearInterval(this.#checker);
    this.#checker = undefined;
    if (this.#hub !== undefined) {
      this.#hub.postMessage(HUB_LEAVE);
      this.#hub.onmessage = null;
      this.#hub.close();
      this.#hub = undefined;
    }
    this.#unannounce?.();
    this.#unannounce = undefined;
    this.#broadcast.onmessage = null;
    this.#broadcast.close();
  }
}

/**
 * Say on network channel `name`'s side channel that an uplink is on its BroadcastChannel: now, every
 * {@link PRESENCE_INTERVAL_MS}, and whenever the relay asks. Returns how to stop.
 */
export function announcePresence(name: string, open: (name: string) => NetChannel): () => void {
  const side = open(presenceChannelName(name));
  const say = (): void => side.postMessage(PRESENT);
  side.onmessage = (event) => {
    if (event.data === WHO_IS_THERE) say();
  };
  say();
  const timer = setInterval(say, PRESENCE_INTERVAL_MS);
  return () => {
    clearInterval(timer);
    side.onmessage = null;
    side.close();
  };
}

/**
 * The page's channel for network channel `name`: a {@link TabChannel} over the relay (a SharedWorker, one per
 * origin) and a BroadcastChannel, or the BroadcastChannel alone where SharedWorker is missing.
 */
export function tabChannel(name: string): NetChannel {
  const open = (channelName: string): NetChannel =>
    new BroadcastChannel(channelName) as unknown as NetChannel;
  const broadcast = open(name);
  const announce = (): (() => void) => announcePresence(name, open);
  let worker: SharedWorker | undefined;
  try {
    if (typeof SharedWorker === 'function') {
      worker = new SharedWorker(new URL('./net-hub.worker.ts', import.meta.url), {
        type: 'module',
        name: 'tabvisor network relay',
      });
    }
  } catch {
    worker = undefined;
  }
  if (worker === undefined) return new TabChannel(name, broadcast, undefined, announce);
  const channel = new TabChannel(name, broadcast, worker.port as unknown as HubPort, announce);
  worker.addEventListener('error', (event) => {
    event.preventDefault();
    channel.relayFailed();
  });
  return channel;
}
