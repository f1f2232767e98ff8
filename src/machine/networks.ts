/**
 * The page's virtual networks: one VLAN-aware {@link EthernetSwitch} per network name, joined to the same
 * network in other tabs through a BroadcastChannel {@link Uplink}, with one {@link DhcpServer} per VLAN in use,
 * and the switch ports of the VMs' NICs. Uses no DOM: the page injects the channel and the leader election
 * ({@link NetworkEnvironment}); in Node and tests networks stay inside the process.
 *
 * One DHCP server per (network, VLAN) across all tabs: every tab that uses a VLAN asks for the Web Lock
 * `tabvisor-dhcp:<network>:<vlan>`; the tab holding it runs the server, the others queue. Two servers on one
 * broadcast domain would hand out the same addresses from the same pool (the pool is derived from the VLAN, so
 * disjoint per-tab pools would need coordination anyway); the lock gives exactly one server, and failover for
 * free: when the leader tab closes, the browser grants the lock to the next tab, whose server answers the
 * clients' renewals (it ACKs a requested address that is free in its pool, so clients keep their addresses).
 */
import { UserError } from '../common/errors.ts';
import { NO_OFFLOADS } from '../common/frame-offload.ts';
import type { NetBackend } from '../devices/virtio-net.ts';
import { parseUnicastMac } from '../devices/virtio-net.ts';
import { DhcpServer, type DhcpLeaseView } from '../net/dhcp-server.ts';
import { PcapWriter, capturePort } from '../net/pcap.ts';
import {
  EthernetSwitch,
  validatePortMode,
  type PortCounters,
  type PortMode,
  type PortRole,
  type SwitchPort,
} from '../net/switch.ts';
import { Uplink, networkChannelName, type NetChannel, type UplinkTransport } from '../net/uplink.ts';
import type { PortSink as VmPortSink, VmNic } from './vm.ts';
import { tabChannel } from './net-hub.ts';

/** The network a NIC joins when its configuration names none. */
export const DEFAULT_NETWORK = 'default';
/** The VLAN mode of a NIC whose configuration names none: an access port in VLAN 1. */
export const DEFAULT_NIC_MODE: PortMode = { kind: 'access', vlan: 1 };
/** NICs per VM (each takes a virtio slot; disks take the others). */
export const MAX_NICS = 4;

/** A VM's NIC as `createVM` takes it. */
export interface NicConfig {
  /** `xx:xx:xx:xx:xx:xx`, unicast; default: a random locally administered address, kept for the VM's life. */
  readonly mac?: string;
  /** Network name (default 'default'); VMs in any tab of this origin on the same name share the switch. */
  readonly network?: string;
  /** `{ kind: 'access', vlan }` or `{ kind: 'trunk', allowed, native? }` (default access VLAN 1). */
  readonly mode?: PortMode;
}

/** A NIC configuration with every default filled in. */
export interface ResolvedNic {
  readonly mac: string;
  readonly network: string;
  readonly mode: PortMode;
}

/** What the page provides; everything optional (Node: no other tabs, this process leads every DHCP VLAN). */
export interface NetworkEnvironment {
  /** A channel shared by the tabs of this origin, e.g. `new BroadcastChannel(name)`. */
  channel?(channelName: string): NetChannel;
  /**
   * Run `lead` once this tab holds the lock `lockName` (e.g. with `navigator.locks.request`), possibly much
   * later; the returned function gives the lock up (or leaves the queue).
   */
  elect?(lockName: string, lead: () => void): () => void;
}

/** The page's environment: BroadcastChannel and Web Locks when the browser has them. */
export function pageNetworkEnvironment(): NetworkEnvironment {
  const env: { -readonly [K in keyof NetworkEnvironment]: NetworkEnvironment[K] } = {};
  if (typeof BroadcastChannel === 'function') env.channel = tabChannel;
  const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
  if (locks !== undefined) {
    env.elect = (lockName, lead) => {
      let release: () => void = () => {};
      const held = new Promise<void>((resolve) => (release = resolve));
      const abort = new AbortController();
      locks
        .request(lockName, { signal: abort.signal }, () => {
          lead();
          return held;
        })
        .catch(() => {}); // aborted while queued
      return () => {
        abort.abort();
        release();
      };
    };
  }
  return env;
}

/** Fill in a NIC's defaults and check it; throws a UserError that names the field and the fix. */
export function resolveNic(
  config: NicConfig,
  index: number,
  randomMac: () => string = randomLocalMac,
): ResolvedNic {
  const what = `NIC ${index}`;
  const mac = (config.mac ?? randomMac()).toLowerCase();
  if (parseUnicastMac(mac) === undefined) {
    throw new UserError(
      `${what}: the MAC "${mac}" is not a unicast address written xx:xx:xx:xx:xx:xx (first byte even, not all zeros)`,
    );
  }
  const network = config.network ?? DEFAULT_NETWORK;
  const named = networkChannelName(network);
  if (!named.ok) throw new UserError(`${what}: ${named.message}`);
  const mode = validatePortMode(config.mode ?? DEFAULT_NIC_MODE, `${what}`);
  return { mac, network, mode };
}

/** A random locally administered unicast MAC (02:xx:...), avoiding the 02:74:76:00 prefix of the services. */
export function randomLocalMac(): string {
  const bytes = new Uint8Array(6);
  for (let i = 1; i < 6; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[0] = 0x02;
  if (bytes[1] === 0x74) bytes[1] = 0x75;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** One port as the network view shows it. */
export interface NetworkPortView {
  readonly name: string;
  readonly role: PortRole;
  readonly mode: PortMode;
  /** A copy of the port's counters (frames and bytes each way, drops by reason). */
  readonly counters: PortCounters;
  /** True while a capture records the port. */
  readonly capturing: boolean;
}

/** One learned address. */
export interface NetworkMacEntry {
  readonly mac: string;
  readonly vlan: number;
  readonly port: string;
  readonly ageMs: number;
}

/** The DHCP service of one VLAN, as this tab sees it. */
export interface NetworkDhcpView {
  readonly vlan: number;
  /** 'leader': this tab runs the server; 'standby': another tab does, this one takes over if it goes. */
  readonly role: 'leader' | 'standby';
  readonly serverIp: string | undefined;
  readonly leases: readonly DhcpLeaseView[];
}

/** A running capture of one port. */
export interface NetworkCapture {
  readonly portName: string;
  /** Frames recorded so far. */
  readonly frames: number;
  /** The pcap file so far (Wireshark opens it), as a download. */
  blob(): Blob;
  /** Stop recording and return the pcap file. */
  stop(): Blob;
}

/** `tabvisor.network(name)`: one network's switch as this tab sees it. */
export interface TabvisorNetwork {
  readonly name: string;
  /** Ports in creation order: the VMs' NICs (`<vm>/eth<n>`), `uplink`, `dhcp-vlan<N>`. */
  ports(): NetworkPortView[];
  /** The learned MAC table, by VLAN then MAC (expired entries swept first). */
  macTable(): NetworkMacEntry[];
  /** The DHCP service of every VLAN in use. */
  dhcp(): NetworkDhcpView[];
  /** Start recording the port named `portName` (both directions) into a pcap file. */
  capture(portName: string): NetworkCapture;
  /**
   * How this tab reaches the network in other tabs: `relay` (a SharedWorker passing frames between the tabs'
   * MessagePorts), `broadcast` (a BroadcastChannel), or undefined where there are no other tabs (Node).
   */
  uplinkTransport(): UplinkTransport | undefined;
}

/** A VLAN's DHCP service in this tab. */
interface DhcpSlot {
  server: DhcpServer | undefined;
  release: () => void;
}

/** One network of the page. */
class ManagedNetwork implements TabvisorNetwork {
  readonly switch = new EthernetSwitch();
  readonly uplink: Uplink | undefined;
  private readonly dhcpSlots = new Map<number, DhcpSlot>();
  private readonly captures = new Map<SwitchPort, number>();

  constructor(
    readonly name: string,
    private readonly env: NetworkEnvironment,
  ) {
    const named = networkChannelName(name);
    if (!named.ok) throw new UserError(named.message);
    this.uplink = env.channel ? new Uplink(this.switch, env.channel(named.name)) : undefined;
  }

  /** Make sure the VLANs a port of `mode` reaches have a DHCP service (here or, if elected elsewhere, there). */
  useVlans(mode: PortMode): void {
    const vlans =
      mode.kind === 'access'
        ? [mode.vlan]
        : [
            ...(mode.allowed === 'all' ? [] : mode.allowed),
            ...(mode.native === undefined ? [] : [mode.native]),
          ];
    for (const vlan of new Set(vlans)) {
      if (this.dhcpSlots.has(vlan)) continue;
      const slot: DhcpSlot = { server: undefined, release: () => {} };
      this.dhcpSlots.set(vlan, slot);
      const lead = (): void => {
        if (this.dhcpSlots.get(vlan) === slot) slot.server ??= new DhcpServer(this.switch, vlan);
      };
      if (this.env.elect) slot.release = this.env.elect(`tabvisor-dhcp:${this.name}:${vlan}`, lead);
      else lead();
    }
  }

  ports(): NetworkPortView[] {
    return this.switch.ports.map((port) => ({
      name: port.name,
      role: port.role,
      mode: port.mode,
      counters: structuredClone(port.counters),
      capturing: (this.captures.get(port) ?? 0) > 0,
    }));
  }

  macTable(): NetworkMacEntry[] {
    return this.switch
      .macTable()
      .map((entry) => ({ mac: entry.mac, vlan: entry.vlan, port: entry.port.name, ageMs: entry.ageMs }));
  }

  dhcp(): NetworkDhcpView[] {
    return [...this.dhcpSlots]
      .sort(([a], [b]) => a - b)
      .map(([vlan, slot]) => ({
        vlan,
        role: slot.server ? 'leader' : 'standby',
        serverIp: slot.server?.serverIp,
        leases: slot.server?.leases() ?? [],
      }));
  }

  uplinkTransport(): UplinkTransport | undefined {
    return this.uplink?.transport;
  }

  capture(portName: string): NetworkCapture {
    const port = this.switch.ports.find((p) => p.name === portName);
    if (port === undefined) {
      const names = this.switch.ports.map((p) => p.name).join(', ');
      throw new UserError(`network ${this.name} has no port "${portName}"; its ports are: ${names}`);
    }
    const writer = new PcapWriter();
    this.captures.set(port, (this.captures.get(port) ?? 0) + 1);
    let stopCapture: (() => void) | undefined = capturePort(port, writer);
    const blob = (): Blob =>
      new Blob([new Uint8Array(writer.bytes())], { type: 'application/vnd.tcpdump.pcap' });
    return {
      portName,
      get frames() {
        return writer.records;
      },
      blob,
      stop: () => {
        if (stopCapture) {
          stopCapture();
          stopCapture = undefined;
          this.captures.set(port, (this.captures.get(port) ?? 1) - 1);
        }
        return blob();
      },
    };
  }

  dispose(): void {
    for (const slot of this.dhcpSlots.values()) {
      slot.server?.close();
      slot.release();
    }
    this.dhcpSlots.clear();
    this.uplink?.close();
  }
}

/** The networks of one page (or process). */
export class NetworkHub {
  private readonly networks = new Map<string, ManagedNetwork>();

  constructor(private readonly env: NetworkEnvironment = {}) {}

  /** Names of the networks in use, in order of first use. */
  names(): string[] {
    return [...this.networks.keys()];
  }

  /** The network named `name`, if a NIC ever joined it. */
  view(name: string): TabvisorNetwork | undefined {
    return this.networks.get(name);
  }

  /** The switch of network `name` (created on first use). */
  switchOf(name: string): EthernetSwitch {
    return this.network(name).switch;
  }

  /**
   * A NIC of a VM on its network: one switch port named `portName` for the VM's whole life (counters and
   * captures survive reboots), handed to each boot's card by `plug`. Dispose it when the VM is deleted.
   */
  nic(portName: string, config: ResolvedNic): VmNic & { dispose(): void } {
    const network = this.network(config.network);
    network.useVlans(config.mode);
    let receiver: VmPortSink | undefined;
    const port = network.switch.addPort({
      name: portName,
      mode: config.mode,
      sink: {
        deliver: (frame, offload) => receiver?.deliver(frame, offload) ?? false,
        offloads: () => receiver?.offloads?.() ?? NO_OFFLOADS,
      },
    });
    const backend: NetBackend = { send: (frame, offload) => port.receive(frame, offload) };
    return {
      mac: config.mac,
      plug: (next) => {
        receiver = next;
        return {
          backend,
          unplug: () => {
            if (receiver === next) receiver = undefined;
            // The next boot's card may get another MAC's traffic history: forget what this one learned.
            network.switch.flushMacs(port);
          },
        };
      },
      dispose: () => {
        receiver = undefined;
        network.switch.removePort(port);
      },
    };
  }

  /** Close every uplink and DHCP server and give up every election. */
  dispose(): void {
    for (const network of this.networks.values()) network.dispose();
    this.networks.clear();
  }

  private network(name: string): ManagedNetwork {
    let network = this.networks.get(name);
    if (network === undefined) {
      network = new ManagedNetwork(name, this.env);
      this.networks.set(name, network);
    }
    return network;
  }
}
