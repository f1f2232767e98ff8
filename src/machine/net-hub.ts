/**
 * The tabs of one origin meet on a network through a broker in a SharedWorker (`net-hub.worker.ts`): each tab's
 * uplink joins its network over a MessagePort, and the broker hands every pair of tabs on that network a
 * MessageChannel of their own ({@link HubPeer}), so frames go from tab to tab in one hop, their bytes moved
 * (transfer) rather than cloned. Uplinks that cannot reach the broker (a VM-host worker of the single-worker mode,
 * which has no SharedWorker; a browser without it; a broker that failed to load or stopped answering) use the
 * network's BroadcastChannel, and the broker bridges the two: what arrives there goes to every tab, and while
 * such uplinks are present it tells its tabs so ({@link HubBridging}) and they also send it their frames, which
 * it posts there. They say they are present on a side channel ({@link presenceChannelName}) when they open,
 * every {@link PRESENCE_INTERVAL_MS} and when the broker asks; so do brokers, so that two on one origin (two
 * builds, whose workers have different URLs, e.g. tabs opened before and after a deployment) bridge to each
 * other. Bridging every frame when nobody listens costs a clone and a message per frame (measured: two-tab TCP
 * fell from 9.2-10.9 to 5.5-6.3 MB/s). A tab on the broker listens to its peers and the broker only, so every
 * message reaches every other uplink exactly once.
 *
 * Why: measured in Chromium on the 2-core test machine (two isolated tabs of one profile), a 16 KB message
 * crosses a MessagePort between two tabs at 40-44 MB/s and small ones round-trip in 0.14-0.24 ms; through a
 * relay in a SharedWorker (two hops), 22-28 MB/s and 0.36-0.62 ms; BroadcastChannel 31-41 MB/s and 0.3-0.46 ms.
 * During a TCP stream between two tabs, `BroadcastChannel.postMessage` took ~0.75 ms per frame of the sending
 * page's main thread; with the relay, a ping's frames took 0.8-2 ms (median) between the two pages' uplinks.
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
/** The broker handing a tab the port of its channel with another tab (`peer`: that tab's number). */
export interface HubPeer {
  readonly peer: number;
  readonly port: HubPort;
}

/** The broker telling a tab that the tab numbered `gone` left (close its channel). */
export interface HubGone {
  readonly gone: number;
}

/**
 * The broker telling a tab whether uplinks on the BroadcastChannel are present: while they are, the tab also
 * sends the broker its frames, for the broker to post there.
 */
export interface HubBridging {
  readonly bridging: boolean;
}

function isPeer(data: unknown): data is HubPeer {
  const offer = data as Partial<HubPeer> | null;
  return typeof offer?.peer === 'number' && typeof offer.port?.postMessage === 'function';
}

function isGone(data: unknown): data is HubGone {
  return typeof (data as Partial<HubGone> | null)?.gone === 'number';
}

function isBridging(data: unknown): data is HubBridging {
  return typeof (data as Partial<HubBridging> | null)?.bridging === 'boolean';
}

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
  /** Joined ports and their numbers. */
  readonly ports: Map<HubPort, number>;
  readonly bridge: HubBridge | undefined;
  /** Until when (ms, `now()`) uplinks on the BroadcastChannel are known to be there. */
  presentUntil: number;
  /** What the tabs were last told ({@link HubBridging}). */
  bridging: boolean;
  /** The timer that says this broker is there (and notices when the uplinks there are gone). */
  stopSaying?: ReturnType<typeof setInterval>;
}

/**
 * The broker (runs in the SharedWorker). A port's first message must be a {@link HubJoin}; anything before it is
 * ignored. On joining, the port and each port already on its network get a MessageChannel between them
 * ({@link HubPeer}); on leaving (or closing), the others hear {@link HubGone}. Messages a port sends the broker
 * go to the BroadcastChannel while uplinks there are present (the tabs send them only then, see
 * {@link HubBridging}), and what arrives on the BroadcastChannel goes to every port, unread: the receiving
 * uplinks check it (see `parseUplinkMessage`).
 */
export class NetHub {
  readonly #networks = new Map<string, Network>();
  #nextNumber = 1;

  /**
   * `bridge` opens a network's BroadcastChannel and side channel (none: no bridging, as in some tests); `now`
   * is the clock in ms; `channel` makes the MessageChannel between two tabs.
   */
  constructor(
    private readonly bridge?: (name: string) => HubBridge,
    private readonly now: () => number = () => performance.now(),
    private readonly channel: () => { port1: HubPort; port2: HubPort } = () =>
      new MessageChannel() as unknown as { port1: HubPort; port2: HubPort },
  ) {}

  /** Take a newly connected port. */
  connect(port: HubPort): void {
    let members: Network | undefined;
    let network = '';
    let number = 0;
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
      } else {
        const gone: HubGone = { gone: number };
        for (const other of members.ports.keys()) send(other, gone);
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
        number = this.#nextNumber++;
        members = this.#networks.get(network) ?? this.#open(network);
        for (const [other, otherNumber] of members.ports) {
          const { port1, port2 } = this.channel();
          const toOther: HubPeer = { peer: number, port: port1 };
          const toNew: HubPeer = { peer: otherNumber, port: port2 };
          send(other, toOther, [port1 as unknown as Transferable]);
          send(port, toNew, [port2 as unknown as Transferable]);
        }
        members.ports.set(port, number);
        if (members.bridging) send(port, { bridging: true } satisfies HubBridging);
        return;
      }
      if (data === HUB_LEAVE) {
        leave();
        return;
      }
      if (data === HUB_PING) {
        send(port, HUB_PONG);
        return;
      }
      if (members.bridge !== undefined && this.now() < members.presentUntil) {
        try {
          members.bridge.channel.postMessage(data);
        } catch {
          // Not cloneable: the uplinks on the BroadcastChannel miss it (as they would have from its sender).
        }
      }
    };
  }

  #open(name: string): Network {
    const ports = new Map<HubPort, number>();
    const bridge = this.bridge?.(name);
    const network: Network = { ports, bridge, presentUntil: -Infinity, bridging: false };
    /** Tell the tabs whether to send frames here for the BroadcastChannel, when that changes. */
    const update = (): void => {
      const bridging = this.now() < network.presentUntil;
      if (bridging === network.bridging) return;
      network.bridging = bridging;
      for (const port of ports.keys()) send(port, { bridging } satisfies HubBridging);
    };
    if (bridge !== undefined) {
      const present = (): void => {
        network.presentUntil = this.now() + PRESENCE_TTL_MS;
        update();
      };
      bridge.channel.onmessage = (event) => {
        present(); // whoever sends there is there
        relay(new Set(ports.keys()), undefined, event.data);
      };
      // Another broker (another build of tabvisor on this origin: its worker has another URL) is a participant
      // on the BroadcastChannel like any other, so brokers say they are there too, and bridge to each other.
      const say = (): void => bridge.presence.postMessage(PRESENT);
      bridge.presence.onmessage = (event) => {
        if (event.data === PRESENT) present();
        else if (event.data === WHO_IS_THERE) say();
      };
      bridge.presence.postMessage(WHO_IS_THERE);
      say();
      network.stopSaying = setInterval(() => {
        say();
        update(); // the uplinks there may have gone quiet
      }, PRESENCE_INTERVAL_MS);
    }
    this.#networks.set(name, network);
    return network;
  }

  /** Ports joined to `network` (for tests and statistics). */
  members(network: string): number {
    return this.#networks.get(network)?.ports.size ?? 0;
  }
}

/** Post to a port that may be closed (its tab gone): the message is then lost, as the tab is. */
function send(port: HubPort, data: unknown, transfer?: Transferable[]): void {
  try {
    port.postMessage(data, transfer ?? []);
  } catch {
    // A closed port.
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
 * A tab's channel for one network: the broker's port when it has one (and through it a channel with each other
 * tab on the network), and the BroadcastChannel of the same name. While the broker is up it sends to and
 * listens on those channels (the broker bridges the BroadcastChannel's traffic), and on the BroadcastChannel
 * otherwise, announcing itself there so the broker bridges to it. While on the relay it asks
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
  /** This tab's channels with the other tabs on the network, by their numbers (see {@link HubPeer}). */
  readonly #peers = new Map<number, HubPort>();
  /** Whether the broker wants this tab's frames too, for uplinks on the BroadcastChannel (see {@link HubBridging}). */
  #bridging = false;
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
      const data: unknown = event.data;
      if (data === HUB_PONG) return;
      if (isPeer(data)) this.#addPeer(data);
      else if (isGone(data)) this.#dropPeer(data.gone);
      else if (isBridging(data)) this.#bridging = data.bridging;
      else this.#deliver(event); // from the BroadcastChannel, bridged
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

  #addPeer(offer: HubPeer): void {
    this.#dropPeer(offer.peer);
    const port = offer.port;
    port.onmessage = this.#deliver;
    // The other tab closed without leaving: the broker says so too, whichever comes first.
    port.addEventListener?.('close', () => {
      if (this.#peers.get(offer.peer) === port) this.#dropPeer(offer.peer);
    });
    this.#peers.set(offer.peer, port);
  }

  #dropPeer(peer: number): void {
    const port = this.#peers.get(peer);
    if (port === undefined) return;
    this.#peers.delete(peer);
    port.onmessage = null;
    port.close();
  }

  #dropPeers(): void {
    for (const peer of [...this.#peers.keys()]) this.#dropPeer(peer);
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
    this.#dropPeers();
    this.#hub.onmessage = null;
    this.#hub.close();
    this.#hub = undefined;
    this.#broadcast.onmessage = this.#deliver;
    this.#unannounce = this.#announce?.();
  }

  /**
   * Send to every other tab on the network (and, while it asks, to the broker for the BroadcastChannel): a
   * clone to each but the last, which gets `transfer`. A port that throws (closed) loses the message; if the
   * last one throws, so does this.
   */
  postMessage(data: unknown, transfer?: Transferable[]): void {
    const hub = this.#hub;
    if (hub === undefined) {
      this.#broadcast.postMessage(data);
      return;
    }
    const targets = [...this.#peers.values()];
    if (this.#bridging) targets.push(hub);
    targets.forEach((port, i) => {
      if (i === targets.length - 1) port.postMessage(data, transfer ?? []);
      else send(port, data);
    });
  }

  close(): void {
    clearInterval(this.#checker);
    this.#checker = undefined;
    this.#dropPeers();
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
