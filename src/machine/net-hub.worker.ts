/**
 * The network relay's SharedWorker (one per origin): every tab's uplink connects here, see {@link NetHub}; it
 * bridges each network to its BroadcastChannel for the uplinks that cannot reach it.
 */
import type { NetChannel } from '../net/uplink.ts';
import { NetHub, presenceChannelName, type HubPort } from './net-hub.ts';

const open = (name: string): NetChannel => new BroadcastChannel(name) as unknown as NetChannel;
const hub = new NetHub((name) => ({ channel: open(name), presence: open(presenceChannelName(name)) }));
const scope = globalThis as unknown as {
  onconnect: ((event: { readonly ports: readonly HubPort[] }) => void) | null;
};
scope.onconnect = (event) => {
  const port = event.ports[0];
  if (port !== undefined) hub.connect(port);
};
