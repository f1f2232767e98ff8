import { afterEach, describe, expect, it } from 'vitest';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import {
  HUB_LEAVE,
  NetHub,
  TabChannel,
  announcePresence,
  presenceChannelName,
  type HubBridge,
  type HubPort,
} from '../../../src/machine/net-hub.ts';
import { EthernetSwitch } from '../../../src/net/switch.ts';
import { Uplink, type NetChannel } from '../../../src/net/uplink.ts';
import { RecordingSink, hex, plainFrame, stationMac } from '../net/net-test-helpers.ts';

// Real MessagePorts and BroadcastChannels (Node has both), so transfers detach buffers as in a browser.

const open: { close(): void }[] = [];
afterEach(() => {
  for (const thing of open.splice(0)) thing.close();
});

/** Messages arrive asynchronously; give them time. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 30));

/** A port connected to `hub`, and what arrives at it. */
function member(hub: NetHub, join?: unknown) {
  const { port1, port2 } = new MessageChannel();
  open.push(port1, port2);
  hub.connect(port2 as unknown as HubPort);
  const received: unknown[] = [];
  port1.on('message', (data: unknown) => received.push(data));
  if (join !== undefined) port1.postMessage(join);
  return { port: port1, received };
}

/** A BroadcastChannel of `name` as a NetChannel, closed after the test. */
function openChannel(name: string): NetChannel {
  const channel = new BroadcastChannel(name);
  open.push(channel);
  return channel as unknown as NetChannel;
}

/** What a relay opens to bridge network `name` (as net-hub.worker.ts does). */
function bridge(name: string): HubBridge {
  return { channel: openChannel(name), presence: openChannel(presenceChannelName(name)) };
}

/** A listener on the BroadcastChannel `name` (an uplink without the relay), and what it heard. */
function onBroadcast(name: string) {
  const channel = new BroadcastChannel(name);
  open.push(channel);
  const heard: unknown[] = [];
  channel.onmessage = (event) => heard.push((event as MessageEvent).data);
  return { channel, heard };
}

function bytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
}

/** Messages a raw port gets from the broker about other tabs (peer channels, departures, bridging). */
const isControl = (data: unknown): boolean =>
  typeof data === 'object' && data !== null && ('peer' in data || 'gone' in data || 'bridging' in data);

/**
 * A tab's channel joined to `hub` on network `name` (checked every `checkMs`), and what it heard. `brokerEnd`
 * wraps the broker's end of the tab's port (default: the port itself).
 */
function tab(
  hub: NetHub,
  name: string,
  checkMs?: number,
  brokerEnd: (port: MessagePort) => HubPort = (port) => port as unknown as HubPort,
) {
  const { port1, port2 } = new MessageChannel();
  open.push(port1, port2);
  hub.connect(brokerEnd(port2));
  let announcing = 0;
  const channel = new TabChannel(
    name,
    openChannel(name),
    port1 as unknown as HubPort,
    () => {
      announcing++;
      return () => announcing--;
    },
    checkMs,
  );
  open.push(channel);
  const heard: unknown[] = [];
  channel.onmessage = (event) => heard.push(event.data);
  return { channel, heard, announcing: () => announcing };
}

describe('the network broker (NetHub)', () => {
  it('gives each pair of tabs on a network a channel: a message reaches every other tab once, none itself or other networks', async () => {
    const hub = new NetHub();
    const [a, b, c] = [0, 1, 2].map(() => tab(hub, 'tabvisor-net:lab'));
    const elsewhere = tab(hub, 'tabvisor-net:other');
    await settle();
    expect(hub.members('tabvisor-net:lab')).toBe(3);
    const frame = bytes(1600, 1);
    const copy = frame.slice();
    a.channel.postMessage({ v: 2, kind: 'frame', from: 'a', frame: copy }, [copy.buffer]);
    expect(copy.buffer.byteLength).toBe(0); // moved to the last peer, cloned for the other
    await settle();
    expect(a.heard).toEqual([]);
    expect(elsewhere.heard).toEqual([]);
    for (const other of [b, c]) {
      expect(other.heard).toHaveLength(1);
      expect((other.heard[0] as { frame: Uint8Array }).frame).toEqual(frame);
    }
    c.channel.postMessage('from c');
    await settle();
    expect(a.heard).toEqual(['from c']);
    expect(b.heard).toHaveLength(2);
  });

  it('sends nothing between tabs itself, and a tab that joins later gets a channel with each one there', async () => {
    const hub = new NetHub();
    const a = member(hub, { join: 'n' });
    const b = member(hub, { join: 'n' });
    await settle();
    a.port.postMessage('to the broker: no one on the BroadcastChannel, so nowhere');
    await settle();
    expect(b.received.filter((data) => !isControl(data))).toEqual([]);
    // One channel per pair: each side was told of the other.
    expect(a.received.filter(isControl)).toHaveLength(1);
    expect(b.received.filter(isControl)).toHaveLength(1);
    const late = tab(hub, 'n');
    await settle();
    expect(a.received.filter(isControl)).toHaveLength(2);
    expect(b.received.filter(isControl)).toHaveLength(2);
    expect(late.channel.transport).toBe('relay');
  });

  it('ignores a port until it joins with a valid name, and tells the others when one leaves', async () => {
    const hub = new NetHub();
    const a = member(hub, { join: 'n' });
    const silent = member(hub);
    const hostile = member(hub, { join: 'x'.repeat(513) });
    hostile.port.postMessage({ join: 7 });
    silent.port.postMessage({ v: 2, kind: 'frame' }); // before any join: nothing
    await settle();
    expect(a.received).toEqual([]);
    expect(hub.members('n')).toBe(1);
    const b = member(hub, { join: 'n' });
    await settle();
    b.port.postMessage(HUB_LEAVE);
    await settle();
    expect(hub.members('n')).toBe(1);
    expect(a.received.filter((data) => isControl(data) && 'gone' in (data as object))).toHaveLength(1);
  });

  it('drops a port whose tab closed without leaving', async () => {
    const hub = new NetHub();
    const a = member(hub, { join: 'gone' });
    const b = member(hub, { join: 'gone' });
    await settle();
    expect(hub.members('gone')).toBe(2);
    b.port.close(); // the tab went away
    await settle();
    expect(hub.members('gone')).toBe(1);
    a.port.close();
    await settle();
    expect(hub.members('gone')).toBe(0);
  });

  it('a tab whose peer left stops sending to it', async () => {
    const hub = new NetHub();
    const a = tab(hub, 'left');
    const b = tab(hub, 'left');
    await settle();
    b.channel.close();
    await settle();
    const frame = bytes(100, 3);
    a.channel.postMessage({ frame }, [frame.buffer]);
    expect(frame.buffer.byteLength).toBe(100); // no peer left: nothing was posted
  });

  it('bridges to the BroadcastChannel: tabs and uplinks there hear each other once, while those are present', async () => {
    const name = `tabvisor-net:bridge-${Math.random()}`;
    const hub = new NetHub(bridge);
    const relayed = tab(hub, name);
    const { channel: plain, heard: heardPlain } = onBroadcast(name);
    await settle();
    relayed.channel.postMessage('nobody on the BroadcastChannel said so yet');
    await settle();
    expect(heardPlain).toEqual([]);
    const stop = announcePresence(name, openChannel);
    await settle();
    relayed.channel.postMessage('from the relay tab');
    plain.postMessage('from a VM-host worker');
    await settle();
    expect(heardPlain).toEqual(['from the relay tab']);
    expect(relayed.heard).toEqual(['from a VM-host worker']);
    stop();
    relayed.channel.close(); // the last member: the bridge closes
    await settle();
    expect(hub.members(name)).toBe(0);
  });

  it('asks who is on the BroadcastChannel when it opens a network, and they answer', async () => {
    const name = `tabvisor-net:ask-${Math.random()}`;
    const stop = announcePresence(name, openChannel); // there before the relay
    await settle();
    const { heard: heardPlain } = onBroadcast(name);
    const hub = new NetHub(bridge);
    const relayed = tab(hub, name);
    await settle();
    relayed.channel.postMessage('bridged at once');
    await settle();
    expect(heardPlain).toEqual(['bridged at once']);
    stop();
  });

  it('two brokers on one origin (two builds) bridge to each other through the BroadcastChannel', async () => {
    const name = `tabvisor-net:relays-${Math.random()}`;
    const [one, two] = [new NetHub(bridge), new NetHub(bridge)];
    const a = tab(one, name);
    await settle();
    const b = tab(two, name);
    await settle();
    a.channel.postMessage('from the old build');
    b.channel.postMessage('from the new build');
    await settle();
    expect(a.heard).toEqual(['from the new build']);
    expect(b.heard).toEqual(['from the old build']);
  });
});

describe('a tab’s channel (TabChannel)', () => {
  it('joins the broker and sends to the other tabs; after a broker failure it uses the BroadcastChannel both ways', async () => {
    const name = `tabvisor-net:tab-${Math.random()}`;
    const hub = new NetHub();
    const peer = tab(hub, name);
    const { channel, heard, announcing } = tab(hub, name);
    const { channel: outside, heard: heardOutside } = onBroadcast(name);
    await settle();
    expect(channel.transport).toBe('relay');
    channel.postMessage('one');
    peer.channel.postMessage('two');
    outside.postMessage('not bridged here, so not heard');
    await settle();
    expect(peer.heard).toEqual(['one']);
    expect(heard).toEqual(['two']);
    expect(heardOutside).toEqual([]);
    expect(announcing()).toBe(0); // on the broker: nothing to announce
    channel.relayFailed();
    expect(channel.transport).toBe('broadcast');
    expect(announcing()).toBe(1); // on the BroadcastChannel: the broker must bridge to it
    channel.postMessage('three');
    outside.postMessage('four');
    await settle();
    expect(heardOutside).toEqual(['three']);
    expect(heard).toEqual(['two', 'four']);
    channel.close();
    expect(announcing()).toBe(0);
  });
});

describe('a tab checks that its relay is there', () => {
  /** A tab's channel on `hub` (checked every 10 ms) through a broker end the test can silence, and a peer. */
  function tabOnRelay(hub: NetHub, name: string) {
    const peer = tab(hub, name);
    // The broker's end, which a test can silence as a killed SharedWorker's goes silent.
    let dead = false;
    const silenceable = (port2: MessagePort): HubPort => {
      const end: HubPort = {
        postMessage: (data, transfer) => {
          if (!dead) port2.postMessage(data, transfer as never);
        },
        onmessage: null,
        close: () => port2.close(),
      };
      port2.on('message', (data: unknown) => {
        if (!dead) end.onmessage?.({ data });
      });
      return end;
    };
    return { ...tab(hub, name, 10, silenceable), peer, kill: () => (dead = true) };
  }

  it('stays on a relay that answers; the questions and answers reach no one else', async () => {
    const name = `tabvisor-net:alive-${Math.random()}`;
    const { channel, peer, heard, announcing } = tabOnRelay(new NetHub(), name);
    await new Promise((resolve) => setTimeout(resolve, 150)); // many checks
    expect(channel.transport).toBe('relay');
    expect(announcing()).toBe(0);
    expect(peer.heard).toEqual([]);
    expect(heard).toEqual([]);
    peer.channel.postMessage('still reached');
    await settle();
    expect(heard).toEqual(['still reached']);
  });

  it('goes over to the BroadcastChannel when its relay stops answering (a worker that died without an error)', async () => {
    const name = `tabvisor-net:dead-${Math.random()}`;
    const { channel, heard, kill, announcing } = tabOnRelay(new NetHub(), name);
    const { channel: outside, heard: heardOutside } = onBroadcast(name);
    await settle();
    expect(channel.transport).toBe('relay');
    kill();
    await expect.poll(() => channel.transport, { timeout: 2_000, interval: 10 }).toBe('broadcast');
    expect(announcing()).toBe(1); // so that relays elsewhere bridge to it
    channel.postMessage('out');
    outside.postMessage('in');
    await settle();
    expect(heardOutside).toEqual(['out']);
    expect(heard).toEqual(['in']);
  });
});

describe('an uplink on a channel that transfers', () => {
  it('transfers a copy of its own: the switch’s other ports still get the whole frame', async () => {
    const posted: unknown[] = [];
    // Transfers as a MessagePort does: the buffers named are detached from the sender.
    const channel: NetChannel = {
      transfers: true,
      onmessage: null,
      postMessage: (data, transfer) => posted.push(structuredClone(data, { transfer: transfer ?? [] })),
      close: () => undefined,
    };
    const sw = new EthernetSwitch();
    const uplink = new Uplink(sw, channel, { switchId: 'here' });
    expect(uplink.transport).toBe('broadcast'); // a channel that does not say
    // Trunk ports: a tagged frame leaves every port as it came, so the switch hands each the same bytes.
    const sinks = [new RecordingSink(), new RecordingSink()];
    const ports = sinks.map((sink, i) =>
      sw.addPort({ name: `p${i}`, mode: { kind: 'trunk', allowed: 'all' }, sink }),
    );
    const plain = plainFrame(hex('ffffffffffff'), stationMac(5));
    const frame = new Uint8Array(plain.length + 4);
    frame.set(plain.subarray(0, 12));
    frame.set([0x81, 0x00, 0x00, 10], 12); // 802.1Q, VLAN 10
    frame.set(plain.subarray(12), 16);
    ports[0].receive(frame.slice()); // a frame that owns its buffer, flooded: the uplink first, then p1
    await settle();
    expect(posted).toHaveLength(1);
    expect((posted[0] as { frame: Uint8Array }).frame).toEqual(frame);
    expect(sinks[1].frames).toEqual([frame]);
  });
});
