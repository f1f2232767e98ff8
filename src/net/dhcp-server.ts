/**
 * A DHCP server (RFC 2131, options RFC 2132) for one VLAN, attached to the switch as an access port, so a
 * guest's `udhcpc` gets an address with no typing. It also answers ARP (RFC 826) and ICMP echo (RFC 792) for
 * its own address, so the guest can ping its gateway.
 *
 * Leases are keyed by the client's MAC: a client gets the same address back while nobody else needed it.
 * Every packet is a guest's and is validated (Ethernet, IPv4 header and checksum, UDP length, BOOTP fields,
 * magic cookie, each option's length); a bad one is dropped and counted. Relayed requests (giaddr set) and
 * option overload (sname/file holding options) are not supported: there are no relays on this network.
 */
import { UserError } from '../common/errors.ts';
import {
  BROADCAST_MAC,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETH_HEADER_BYTES,
  ETH_SRC_OFFSET,
  ETH_TYPE_OFFSET,
  MAC_BYTES,
  buildFrame,
  formatMac,
  macKeyAt,
  parseMac,
  readU16,
  readU32,
  writeU16,
  writeU32,
} from './ethernet.ts';
import {
  ARP_HLEN,
  ARP_HTYPE,
  ARP_HTYPE_ETHERNET,
  ARP_OPCODE,
  ARP_OP_REPLY,
  ARP_OP_REQUEST,
  ARP_PACKET_BYTES,
  ARP_PLEN,
  ARP_PTYPE,
  ARP_SENDER_IP,
  ARP_SENDER_MAC,
  ARP_TARGET_IP,
  ICMP_CHECKSUM,
  ICMP_CODE,
  ICMP_ECHO_HEADER_BYTES,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_TYPE,
  IPV4_BROADCAST,
  IP_PROTOCOL_ICMP,
  IP_PROTOCOL_UDP,
  UDP_DESTINATION_PORT,
  UDP_HEADER_BYTES,
  UDP_LENGTH,
  buildArpFrame,
  buildIpv4,
  buildUdpFrame,
  formatIpv4,
  internetChecksum,
  parseIpv4,
  prefixMask,
  readIpv4,
} from './ipv4.ts';
import type { EthernetSwitch, PortSink, SwitchPort } from './switch.ts';

/** UDP ports (RFC 2131 section 4.1). */
export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

/**
 * BOOTP/DHCP message (RFC 2131 section 2, Figure 1), offsets from the start of the UDP data:
 *   op @0; htype @1; hlen @2; hops @3; xid @4 (4); secs @8 (2); flags @10 (2); ciaddr @12; yiaddr @16;
 *   siaddr @20; giaddr @24; chaddr @28 (16); sname @44 (64); file @108 (128); options @236, which start with
 *   the magic cookie 99.130.83.99 (RFC 2131 section 3, RFC 2132 section 2).
 */
export const BOOTP_OP = 0;
export const BOOTP_HTYPE = 1;
export const BOOTP_HLEN = 2;
export const BOOTP_XID = 4;
export const BOOTP_FLAGS = 10;
export const BOOTP_CIADDR = 12;
export const BOOTP_YIADDR = 16;
export const BOOTP_SIADDR = 20;
export const BOOTP_GIADDR = 24;
export const BOOTP_CHADDR = 28;
export const BOOTP_OPTIONS = 236;
export const DHCP_MAGIC_COOKIE = 0x63825363;
/** Fixed header plus the magic cookie: the shortest DHCP message. */
export const DHCP_MIN_MESSAGE_BYTES = BOOTP_OPTIONS + 4;
/** Replies are padded to the 300-byte BOOTP minimum some clients still expect (RFC 1542 section 3.4). */
export const BOOTP_MIN_REPLY_BYTES = 300;
/** The broadcast bit of `flags` (RFC 2131 section 2, Figure 2). */
export const BOOTP_FLAG_BROADCAST = 0x8000;
export const BOOTP_OP_REQUEST = 1;
export const BOOTP_OP_REPLY = 2;
/** htype of Ethernet (RFC 1700 hardware types, as in ARP). */
export const BOOTP_HTYPE_ETHERNET = 1;

/** Option codes (RFC 2132). */
export const DHCP_OPTION_PAD = 0;
export const DHCP_OPTION_SUBNET_MASK = 1;
export const DHCP_OPTION_ROUTER = 3;
export const DHCP_OPTION_DNS = 6;
export const DHCP_OPTION_HOSTNAME = 12;
export const DHCP_OPTION_DOMAIN_NAME = 15;
export const DHCP_OPTION_BROADCAST = 28;
export const DHCP_OPTION_REQUESTED_IP = 50;
export const DHCP_OPTION_LEASE_TIME = 51;
export const DHCP_OPTION_MESSAGE_TYPE = 53;
export const DHCP_OPTION_SERVER_ID = 54;
export const DHCP_OPTION_RENEWAL_TIME = 58;
export const DHCP_OPTION_REBINDING_TIME = 59;
export const DHCP_OPTION_END = 255;

/** DHCP message types, option 53 (RFC 2132 section 9.6). */
export const DHCPDISCOVER = 1;
export const DHCPOFFER = 2;
export const DHCPREQUEST = 3;
export const DHCPDECLINE = 4;
export const DHCPACK = 5;
export const DHCPNAK = 6;
export const DHCPRELEASE = 7;
export const DHCPINFORM = 8;

/** How long an offered address is held for the client that was offered it. */
export const OFFER_HOLD_MS = 60_000;
/** How long an address a client declined (found in use) stays out of the pool. */
export const DECLINE_HOLD_MS = 600_000;
/** Largest pool: bounds the lease table and the scan for a free address. */
export const MAX_POOL_SIZE = 65_536;
/** Lease times accepted in configuration, seconds. */
export const MIN_LEASE_SECONDS = 60;
export const MAX_LEASE_SECONDS = 7 * 24 * 3600;
/** Default lease: an hour; udhcpc renews at half. */
export const DEFAULT_LEASE_SECONDS = 3600;
/** Most DNS servers sent in option 6. */
export const MAX_DNS_SERVERS = 4;
/** Longest domain name sent in option 15 (an option holds at most 255 bytes). */
export const MAX_DOMAIN_NAME_LENGTH = 253;

/** Configuration of a {@link DhcpServer}. Addresses are dotted quads. */
export interface DhcpServerConfig {
  /** The subnet, `a.b.c.d/len` with len 8..30. */
  readonly subnet: string;
  /** The server's own address (server identifier, answers ARP and ping); inside the subnet. */
  readonly serverIp: string;
  /** First and last address handed out (inclusive); inside the subnet. The server's address is skipped. */
  readonly rangeStart: string;
  readonly rangeEnd: string;
  /** Default gateway sent to clients (default: `serverIp`; null to send none). */
  readonly router?: string | null;
  /** DNS servers sent in option 6 (default none). */
  readonly dnsServers?: readonly string[];
  /** Domain name, option 15 (default none). */
  readonly domainName?: string;
  /** Lease time in seconds (default {@link DEFAULT_LEASE_SECONDS}). */
  readonly leaseSeconds?: number;
  /** The server's MAC (default {@link defaultServerMac} of the VLAN). */
  readonly serverMac?: string;
  /** Milliseconds (default `Date.now`); tests inject a fake. */
  readonly clock?: () => number;
}

/** The conventional configuration for a VLAN: 10.x.y.0/24 with x.y = the VID, server .1, pool .100-.199. */
export function dhcpConfigForVlan(vlan: number): DhcpServerConfig {
  const prefix = `10.${vlan >>> 8}.${vlan & 0xff}`;
  return {
    subnet: `${prefix}.0/24`,
    serverIp: `${prefix}.1`,
    rangeStart: `${prefix}.100`,
    rangeEnd: `${prefix}.199`,
  };
}

/** A locally administered MAC for the services of a VLAN: 02:74:76:00:VV:VV (VV:VV = the VID). */
export function defaultServerMac(vlan: number): string {
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  return `02:74:76:00:${hex(vlan >>> 8)}:${hex(vlan & 0xff)}`;
}

/** Why an incoming frame was not answered. */
export const DHCP_DROP_REASONS = [
  'not-ip',
  'bad-ip-header',
  'bad-ip-checksum',
  'fragment',
  'not-for-us',
  'bad-udp',
  'bad-bootp',
  'bad-cookie',
  'bad-options',
  'chaddr-mismatch',
  'relayed',
  'unknown-type',
  'pool-exhausted',
  'bad-arp',
  'bad-icmp',
] as const;

/** A reason from {@link DHCP_DROP_REASONS}. */
export type DhcpDropReason = (typeof DHCP_DROP_REASONS)[number];

/** Counters of a {@link DhcpServer}. */
export interface DhcpCounters {
  received: Record<'discover' | 'request' | 'decline' | 'release' | 'inform', number>;
  sent: Record<'offer' | 'ack' | 'nak' | 'arp' | 'echo', number>;
  dropped: Record<DhcpDropReason, number>;
}

/** One row of the lease view. */
export interface DhcpLeaseView {
  readonly mac: string;
  readonly ip: string;
  readonly state: 'offered' | 'bound' | 'released';
  /** Milliseconds until expiry (<= 0: expired, reusable for others). */
  readonly remainingMs: number;
}

interface Lease {
  readonly macKey: number;
  readonly mac: string;
  readonly ip: number;
  state: 'offered' | 'bound' | 'released';
  expiresMs: number;
}

/** A request's fields after validation. */
interface DhcpRequest {
  readonly type: number;
  readonly xid: number;
  readonly flags: number;
  readonly ciaddr: number;
  readonly chaddr: Uint8Array;
  readonly macKey: number;
  readonly requestedIp: number | null;
  readonly serverId: number | null;
}

/** Parsed and checked configuration. */
interface Settings {
  readonly network: number;
  readonly mask: number;
  readonly broadcast: number;
  readonly serverIp: number;
  readonly rangeStart: number;
  readonly rangeEnd: number;
  readonly router: number | null;
  readonly dns: readonly number[];
  readonly domainName: Uint8Array | null;
  readonly leaseSeconds: number;
  readonly serverMac: Uint8Array;
}

function settingsFrom(config: DhcpServerConfig, vlan: number): Settings {
  const address = (text: unknown, what: string): number => {
    const value = typeof text === 'string' ? parseIpv4(text) : null;
    if (value === null)
      throw new UserError(`DHCP ${what} "${String(text)}" is not an IPv4 address like 10.0.10.1.`);
    return value;
  };
  const subnetMatch = /^([0-9.]+)\/([0-9]{1,2})$/.exec(String(config.subnet));
  const prefixLength = subnetMatch ? Number(subnetMatch[2]) : NaN;
  if (!subnetMatch || !(prefixLength >= 8 && prefixLength <= 30)) {
    throw new UserError(
      `DHCP subnet "${String(config.subnet)}" must look like 10.0.10.0/24 (prefix length 8..30).`,
    );
  }
  const mask = prefixMask(prefixLength);
  const network = (address(subnetMatch[1], 'subnet') & mask) >>> 0;
  const broadcast = (network | ~mask) >>> 0;
  const inside = (value: number, what: string): number => {
    if ((value & mask) >>> 0 !== network || value === network || value === broadcast) {
      throw new UserError(
        `DHCP ${what} ${formatIpv4(value)} must be a host address inside ${config.subnet}.`,
      );
    }
    return value;
  };
  const serverIp = inside(address(config.serverIp, 'server address'), 'server address');
  const rangeStart = inside(address(config.rangeStart, 'range start'), 'range start');
  const rangeEnd = inside(address(config.rangeEnd, 'range end'), 'range end');
  if (rangeEnd < rangeStart) {
    throw new UserError(`DHCP range end ${config.rangeEnd} comes before range start ${config.rangeStart}.`);
  }
  if (rangeEnd - rangeStart + 1 > MAX_POOL_SIZE) {
    throw new UserError(`DHCP range holds more than ${MAX_POOL_SIZE} addresses; make it smaller.`);
  }
  const router =
    config.router === null ? null : inside(address(config.router ?? config.serverIp, 'router'), 'router');
  const dnsList = config.dnsServers ?? [];
  if (dnsList.length > MAX_DNS_SERVERS)
    throw new UserError(`At most ${MAX_DNS_SERVERS} DNS servers can be sent.`);
  const dns = dnsList.map((text) => address(text, 'DNS server'));
  let domainName: Uint8Array | null = null;
  if (config.domainName !== undefined) {
    if (!/^[A-Za-z0-9.-]+$/.test(config.domainName) || config.domainName.length > MAX_DOMAIN_NAME_LENGTH) {
      throw new UserError(`DHCP domain name "${config.domainName}" must be letters, digits, '.' and '-'.`);
    }
    domainName = Uint8Array.from(config.domainName, (c) => c.charCodeAt(0)); // checked ASCII above
  }
  const leaseSeconds = config.leaseSeconds ?? DEFAULT_LEASE_SECONDS;
  if (
    !Number.isInteger(leaseSeconds) ||
    leaseSeconds < MIN_LEASE_SECONDS ||
    leaseSeconds > MAX_LEASE_SECONDS
  ) {
    throw new UserError(
      `DHCP lease time must be whole seconds from ${MIN_LEASE_SECONDS} to ${MAX_LEASE_SECONDS}, got ${leaseSeconds}.`,
    );
  }
  const macText = config.serverMac ?? defaultServerMac(vlan);
  const serverMac = parseMac(macText);
  if (serverMac === null || (serverMac[0] & 1) !== 0) {
    throw new UserError(`DHCP server MAC "${macText}" must be a unicast address like 02:74:76:00:00:0a.`);
  }
  return {
    network,
    mask,
    broadcast,
    serverIp,
    rangeStart,
    rangeEnd,
    router,
    dns,
    domainName,
    leaseSeconds,
    serverMac,
  };
}

/**
 * DHCP (and ARP/ping) service for one VLAN. Created attached to a switch; it is the sink of its own access
 * port and answers synchronously from `deliver`.
 */
export class DhcpServer implements PortSink {
  /** The server's port on the switch (access mode, role 'service'). */
  readonly port: SwitchPort;
  /** The VLAN served. */
  readonly vlan: number;
  /** Live counters. */
  readonly counters: DhcpCounters;

  readonly #settings: Settings;
  readonly #clock: () => number;
  readonly #switch: EthernetSwitch;
  readonly #byMac = new Map<number, Lease>();
  readonly #byIp = new Map<number, Lease>();
  /** Declined address -> time it may be offered again. */
  readonly #declined = new Map<number, number>();
  /** Where the next scan for a never-used address starts. */
  #cursor: number;

  /** Add a service port for `vlan` to `owner` and serve it. Throws a UserError for a bad configuration. */
  constructor(owner: EthernetSwitch, vlan: number, config: DhcpServerConfig = dhcpConfigForVlan(vlan)) {
    this.#settings = settingsFrom(config, vlan);
    this.#clock = config.clock ?? Date.now;
    this.#cursor = this.#settings.rangeStart;
    this.#switch = owner;
    this.vlan = vlan;
    const zero = <K extends string>(keys: readonly K[]) =>
      Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
    this.counters = {
      received: zero(['discover', 'request', 'decline', 'release', 'inform']),
      sent: zero(['offer', 'ack', 'nak', 'arp', 'echo']),
      dropped: zero(DHCP_DROP_REASONS),
    };
    this.port = owner.addPort({
      name: `dhcp-vlan${vlan}`,
      role: 'service',
      mode: { kind: 'access', vlan },
      sink: this,
    });
  }

  /** The server's address. */
  get serverIp(): string {
    return formatIpv4(this.#settings.serverIp);
  }

  /** The server's MAC. */
  get serverMac(): string {
    return formatMac(this.#settings.serverMac);
  }

  /** The lease table, by address. */
  leases(): DhcpLeaseView[] {
    const now = this.#clock();
    return [...this.#byIp.values()]
      .sort((a, b) => a.ip - b.ip)
      .map((lease) => ({
        mac: lease.mac,
        ip: formatIpv4(lease.ip),
        state: lease.state,
        remainingMs: lease.expiresMs - now,
      }));
  }

  /** Remove the server's port from the switch. */
  close(): void {
    this.#switch.removePort(this.port);
  }

  /** {@link PortSink}: a frame from the VLAN. Never busy; answers before returning. */
  deliver(frame: Uint8Array): boolean {
    const type = readU16(frame, ETH_TYPE_OFFSET);
    if (type === ETHERTYPE_ARP) this.#onArp(frame);
    else if (type === ETHERTYPE_IPV4) this.#onIpv4(frame);
    return true;
  }

  #drop(reason: DhcpDropReason): void {
    this.counters.dropped[reason]++;
  }

  #onArp(frame: Uint8Array): void {
    const arp = ETH_HEADER_BYTES;
    if (
      frame.length < arp + ARP_PACKET_BYTES ||
      readU16(frame, arp + ARP_HTYPE) !== ARP_HTYPE_ETHERNET ||
      readU16(frame, arp + ARP_PTYPE) !== ETHERTYPE_IPV4 ||
      frame[arp + ARP_HLEN] !== MAC_BYTES ||
      frame[arp + ARP_PLEN] !== 4
    ) {
      this.#drop('bad-arp');
      return;
    }
    if (readU16(frame, arp + ARP_OPCODE) !== ARP_OP_REQUEST) return;
    if (readU32(frame, arp + ARP_TARGET_IP) !== this.#settings.serverIp) return;
    const senderMac = frame.slice(arp + ARP_SENDER_MAC, arp + ARP_SENDER_MAC + MAC_BYTES);
    if ((senderMac[0] & 1) !== 0) {
      this.#drop('bad-arp');
      return;
    }
    this.counters.sent.arp++;
    this.port.receive(
      buildArpFrame({
        dstMac: senderMac,
        opcode: ARP_OP_REPLY,
        senderMac: this.#settings.serverMac,
        senderIp: this.#settings.serverIp,
        targetMac: senderMac,
        targetIp: readU32(frame, arp + ARP_SENDER_IP),
      }),
    );
  }

  #onIpv4(frame: Uint8Array): void {
    const ip = readIpv4(frame, ETH_HEADER_BYTES);
    if (typeof ip === 'string') {
      this.#drop(ip);
      return;
    }
    if (ip.protocol === IP_PROTOCOL_ICMP && ip.destination === this.#settings.serverIp) {
      this.#onIcmp(frame, ip.payloadOffset, ip.end, ip.source);
      return;
    }
    if (ip.protocol !== IP_PROTOCOL_UDP) return;
    if (ip.end - ip.payloadOffset < UDP_HEADER_BYTES) {
      this.#drop('bad-udp');
      return;
    }
    if (readU16(frame, ip.payloadOffset + UDP_DESTINATION_PORT) !== DHCP_SERVER_PORT) return;
    if (ip.destination !== IPV4_BROADCAST && ip.destination !== this.#settings.serverIp) {
      this.#drop('not-for-us');
      return;
    }
    const udpLength = readU16(frame, ip.payloadOffset + UDP_LENGTH);
    if (udpLength < UDP_HEADER_BYTES || ip.payloadOffset + udpLength > ip.end) {
      this.#drop('bad-udp');
      return;
    }
    // The UDP checksum is not verified: with checksum offload a guest leaves only the pseudo-header sum in it.
    const start = ip.payloadOffset + UDP_HEADER_BYTES;
    const request = this.#parseDhcp(frame.subarray(start, ip.payloadOffset + udpLength), frame);
    if (request !== null) this.#onDhcp(request);
  }

  #onIcmp(frame: Uint8Array, start: number, end: number, source: number): void {
    if (end - start < ICMP_ECHO_HEADER_BYTES || internetChecksum(frame, start, end) !== 0) {
      this.#drop('bad-icmp');
      return;
    }
    if (frame[start + ICMP_TYPE] !== ICMP_ECHO_REQUEST || frame[start + ICMP_CODE] !== 0) return;
    const icmp = frame.slice(start, end);
    icmp[ICMP_TYPE] = ICMP_ECHO_REPLY;
    writeU16(icmp, ICMP_CHECKSUM, 0);
    writeU16(icmp, ICMP_CHECKSUM, internetChecksum(icmp, 0, icmp.length));
    const datagram = buildIpv4({
      source: this.#settings.serverIp,
      destination: source,
      protocol: IP_PROTOCOL_ICMP,
      payload: icmp,
    });
    this.counters.sent.echo++;
    this.port.receive(
      buildFrame({
        dst: frame.slice(ETH_SRC_OFFSET, ETH_SRC_OFFSET + MAC_BYTES),
        src: this.#settings.serverMac,
        etherType: ETHERTYPE_IPV4,
        payload: datagram,
      }),
    );
  }

  /** Validate a BOOTP/DHCP request and read the options we use. `message` is the UDP data. */
  #parseDhcp(message: Uint8Array, frame: Uint8Array): DhcpRequest | null {
    if (
      message.length < DHCP_MIN_MESSAGE_BYTES ||
      message[BOOTP_OP] !== BOOTP_OP_REQUEST ||
      message[BOOTP_HTYPE] !== BOOTP_HTYPE_ETHERNET ||
      message[BOOTP_HLEN] !== MAC_BYTES
    ) {
      this.#drop('bad-bootp');
      return null;
    }
    if (readU32(message, BOOTP_OPTIONS) !== DHCP_MAGIC_COOKIE) {
      this.#drop('bad-cookie');
      return null;
    }
    if (readU32(message, BOOTP_GIADDR) !== 0) {
      this.#drop('relayed');
      return null;
    }
    // Without relays the client hardware address is the frame's source: refusing others stops a guest from
    // leasing addresses in other stations' names.
    const macKey = macKeyAt(message, BOOTP_CHADDR);
    if (macKey !== macKeyAt(frame, ETH_SRC_OFFSET)) {
      this.#drop('chaddr-mismatch');
      return null;
    }
    let type = 0;
    let requestedIp: number | null = null;
    let serverId: number | null = null;
    // Options (RFC 2132 section 2): code, length, data; pad and end have no length. Each read is bounded by
    // the message; the first occurrence of an option wins.
    let offset = DHCP_MIN_MESSAGE_BYTES;
    let ended = false;
    while (offset < message.length) {
      const code = message[offset];
      if (code === DHCP_OPTION_PAD) {
        offset++;
        continue;
      }
      if (code === DHCP_OPTION_END) {
        ended = true;
        break;
      }
      if (offset + 2 > message.length || offset + 2 + message[offset + 1] > message.length) {
        this.#drop('bad-options');
        return null;
      }
      const length = message[offset + 1];
      const data = offset + 2;
      if (code === DHCP_OPTION_MESSAGE_TYPE && type === 0) {
        if (length !== 1) {
          this.#drop('bad-options');
          return null;
        }
        type = message[data];
      } else if ((code === DHCP_OPTION_REQUESTED_IP || code === DHCP_OPTION_SERVER_ID) && length !== 4) {
        this.#drop('bad-options');
        return null;
      } else if (code === DHCP_OPTION_REQUESTED_IP && requestedIp === null) {
        requestedIp = readU32(message, data);
      } else if (code === DHCP_OPTION_SERVER_ID && serverId === null) {
        serverId = readU32(message, data);
      }
      offset = data + length;
    }
    if (!ended) {
      this.#drop('bad-options');
      return null;
    }
    if (
      type < DHCPDISCOVER ||
      type > DHCPINFORM ||
      type === DHCPOFFER ||
      type === DHCPACK ||
      type === DHCPNAK
    ) {
      this.#drop('unknown-type');
      return null;
    }
    return {
      type,
      xid: readU32(message, BOOTP_XID),
      flags: readU16(message, BOOTP_FLAGS),
      ciaddr: readU32(message, BOOTP_CIADDR),
      chaddr: message.slice(BOOTP_CHADDR, BOOTP_CHADDR + MAC_BYTES),
      macKey,
      requestedIp,
      serverId,
    };
  }

  #onDhcp(request: DhcpRequest): void {
    const now = this.#clock();
    const s = this.#settings;
    const own = this.#byMac.get(request.macKey);
    switch (request.type) {
      case DHCPDISCOVER: {
        this.counters.received.discover++;
        const ip = this.#choose(request, now);
        if (ip === null) {
          this.#drop('pool-exhausted');
          return;
        }
        const lease = this.#hold(request, ip);
        // A client that still has a live binding keeps it; otherwise the address is held for the offer.
        if (lease.state !== 'bound' || lease.expiresMs <= now) {
          lease.state = 'offered';
          lease.expiresMs = now + OFFER_HOLD_MS;
        }
        this.#reply(request, DHCPOFFER, ip);
        return;
      }
      case DHCPREQUEST: {
        this.counters.received.request++;
        if (request.serverId !== null) {
          // SELECTING (RFC 2131 section 4.3.2): the client answers one server's offer.
          if (request.serverId !== s.serverIp) {
            if (own?.state === 'offered') this.#release(own, now);
            return;
          }
          if (own !== undefined && request.requestedIp === own.ip && request.ciaddr === 0)
            this.#bind(request, own, now);
          else this.#reply(request, DHCPNAK, 0);
          return;
        }
        // INIT-REBOOT (requested IP, no ciaddr) or RENEWING/REBINDING (ciaddr, no requested IP).
        const wanted = request.requestedIp ?? (request.ciaddr !== 0 ? request.ciaddr : null);
        if (wanted === null) {
          this.#reply(request, DHCPNAK, 0);
          return;
        }
        if (own !== undefined && own.ip === wanted) {
          this.#bind(request, own, now);
          return;
        }
        // The lease table lives in a tab and can be lost: grant a free pool address the client still holds.
        if (this.#available(wanted, request.macKey, now)) {
          this.#bind(request, this.#hold(request, wanted), now);
          return;
        }
        this.#reply(request, DHCPNAK, 0);
        return;
      }
      case DHCPDECLINE: {
        this.counters.received.decline++;
        if (request.serverId === s.serverIp && own !== undefined && own.ip === request.requestedIp) {
          this.#forget(own);
          this.#declined.set(own.ip, now + DECLINE_HOLD_MS);
        }
        return;
      }
      case DHCPRELEASE: {
        this.counters.received.release++;
        if (own !== undefined && own.ip === request.ciaddr) this.#release(own, now);
        return;
      }
      case DHCPINFORM: {
        this.counters.received.inform++;
        if (request.ciaddr !== 0) this.#reply(request, DHCPACK, 0);
        return;
      }
    }
  }

  /** True when `ip` is in the pool, not the server's, not declined, and free or already this client's. */
  #available(ip: number, macKey: number, now: number): boolean {
    const s = this.#settings;
    if (ip < s.rangeStart || ip > s.rangeEnd || ip === s.serverIp) return false;
    const declinedUntil = this.#declined.get(ip);
    if (declinedUntil !== undefined) {
      if (declinedUntil > now) return false;
      this.#declined.delete(ip);
    }
    const holder = this.#byIp.get(ip);
    return holder === undefined || holder.macKey === macKey || holder.expiresMs <= now;
  }

  /** The address to offer: the client's own, the one it asks for, a never-used one, then the longest-expired. */
  #choose(request: DhcpRequest, now: number): number | null {
    const own = this.#byMac.get(request.macKey);
    if (own !== undefined) return own.ip;
    if (request.requestedIp !== null && this.#available(request.requestedIp, request.macKey, now)) {
      return request.requestedIp;
    }
    const s = this.#settings;
    const size = s.rangeEnd - s.rangeStart + 1;
    for (let i = 0; i < size; i++) {
      const ip = this.#cursor;
      this.#cursor = ip === s.rangeEnd ? s.rangeStart : ip + 1;
      if (!this.#byIp.has(ip) && this.#available(ip, request.macKey, now)) return ip;
    }
    let oldest: Lease | null = null;
    for (const lease of this.#byIp.values()) {
      if (lease.expiresMs <= now && (oldest === null || lease.expiresMs < oldest.expiresMs)) oldest = lease;
    }
    return oldest?.ip ?? null;
  }

  /** The client's lease on `ip`, taking the address from an expired holder if needed. */
  #hold(request: DhcpRequest, ip: number): Lease {
    const own = this.#byMac.get(request.macKey);
    if (own !== undefined && own.ip === ip) return own;
    if (own !== undefined) this.#forget(own);
    const previous = this.#byIp.get(ip);
    if (previous !== undefined) this.#forget(previous);
    const lease: Lease = {
      macKey: request.macKey,
      mac: formatMac(request.chaddr),
      ip,
      state: 'offered',
      expiresMs: 0,
    };
    this.#byMac.set(lease.macKey, lease);
    this.#byIp.set(ip, lease);
    return lease;
  }

  #bind(request: DhcpRequest, lease: Lease, now: number): void {
    lease.state = 'bound';
    lease.expiresMs = now + this.#settings.leaseSeconds * 1000;
    this.#reply(request, DHCPACK, lease.ip);
  }

  /** Keep the association (the client gets the address back if it is still free), but let others have it. */
  #release(lease: Lease, now: number): void {
    lease.state = 'released';
    lease.expiresMs = now;
  }

  #forget(lease: Lease): void {
    if (this.#byMac.get(lease.macKey) === lease) this.#byMac.delete(lease.macKey);
    if (this.#byIp.get(lease.ip) === lease) this.#byIp.delete(lease.ip);
  }

  /** Build and send a reply, addressed as RFC 2131 section 4.1 says for a request with giaddr 0. */
  #reply(request: DhcpRequest, type: number, yiaddr: number): void {
    const s = this.#settings;
    const options: number[] = [DHCP_OPTION_MESSAGE_TYPE, 1, type];
    const u32 = (code: number, ...values: number[]) => {
      options.push(code, 4 * values.length);
      for (const v of values) options.push(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
    };
    u32(DHCP_OPTION_SERVER_ID, s.serverIp);
    if (type !== DHCPNAK) {
      if (type !== DHCPACK || yiaddr !== 0) {
        u32(DHCP_OPTION_LEASE_TIME, s.leaseSeconds);
        u32(DHCP_OPTION_RENEWAL_TIME, Math.floor(s.leaseSeconds / 2));
        u32(DHCP_OPTION_REBINDING_TIME, Math.floor((s.leaseSeconds * 7) / 8));
      }
      u32(DHCP_OPTION_SUBNET_MASK, s.mask);
      u32(DHCP_OPTION_BROADCAST, s.broadcast);
      if (s.router !== null) u32(DHCP_OPTION_ROUTER, s.router);
      if (s.dns.length > 0) u32(DHCP_OPTION_DNS, ...s.dns);
      if (s.domainName !== null) options.push(DHCP_OPTION_DOMAIN_NAME, s.domainName.length, ...s.domainName);
    }
    options.push(DHCP_OPTION_END);

    const message = new Uint8Array(Math.max(BOOTP_MIN_REPLY_BYTES, BOOTP_OPTIONS + 4 + options.length));
    message[BOOTP_OP] = BOOTP_OP_REPLY;
    message[BOOTP_HTYPE] = BOOTP_HTYPE_ETHERNET;
    message[BOOTP_HLEN] = MAC_BYTES;
    writeU32(message, BOOTP_XID, request.xid);
    writeU16(message, BOOTP_FLAGS, request.flags & BOOTP_FLAG_BROADCAST);
    if (type === DHCPACK) writeU32(message, BOOTP_CIADDR, request.ciaddr);
    writeU32(message, BOOTP_YIADDR, yiaddr);
    writeU32(message, BOOTP_SIADDR, 0);
    message.set(request.chaddr, BOOTP_CHADDR);
    writeU32(message, BOOTP_OPTIONS, DHCP_MAGIC_COOKIE);
    message.set(options, BOOTP_OPTIONS + 4);

    // Section 4.1: NAKs are broadcast; a client with an address gets unicast to it; the broadcast bit asks
    // for broadcast; otherwise unicast to the new address at the client's MAC.
    let destination: number;
    let dstMac: Uint8Array;
    if (type === DHCPNAK || (request.ciaddr === 0 && (request.flags & BOOTP_FLAG_BROADCAST) !== 0)) {
      destination = IPV4_BROADCAST;
      dstMac = BROADCAST_MAC;
    } else {
      destination = request.ciaddr !== 0 ? request.ciaddr : yiaddr;
      dstMac = request.chaddr;
    }
    if (type === DHCPOFFER) this.counters.sent.offer++;
    else if (type === DHCPACK) this.counters.sent.ack++;
    else this.counters.sent.nak++;
    this.port.receive(
      buildUdpFrame({
        dstMac,
        srcMac: s.serverMac,
        source: s.serverIp,
        destination,
        sourcePort: DHCP_SERVER_PORT,
        destinationPort: DHCP_CLIENT_PORT,
        data: message,
      }),
    );
  }
}
