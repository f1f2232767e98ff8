/**
 * The network teaching view (switch ports with their VLAN mode, the MAC table, counters per port, a pcap
 * capture per port) and the NIC fields of the create form. Everything goes through the page API.
 */
import type { NicConfig, TabvisorApi } from '../machine/hypervisor.ts';
import type { NetworkCapture, NetworkPortView } from '../machine/networks.ts';
import { el } from './dom.ts';

function describeMode(port: NetworkPortView): string {
  const mode = port.mode;
  if (mode.kind === 'access') return `access VLAN ${mode.vlan}`;
  const allowed = mode.allowed === 'all' ? 'all' : mode.allowed.join(',');
  return `trunk ${allowed}${mode.native === undefined ? '' : ` (native ${mode.native})`}`;
}

function sumDrops(port: NetworkPortView): number {
  return Object.values(port.counters.drops).reduce((a, b) => a + b, 0);
}

/** Parse a VLAN list such as `10,20` into numbers (validation happens in the VMM, which names the problem). */
function parseVlans(text: string): number[] {
  return text
    .split(/[\s,]+/)
    .filter((part) => part !== '')
    .map(Number);
}

/**
 * The NIC fields of the create form: attach a NIC or not, its network, access VLAN or trunk (allowed VLANs,
 * native VLAN) and an optional MAC. `read()` returns the `nics` of the VM configuration.
 */
export function nicFields(): { readonly element: HTMLFieldSetElement; read(): NicConfig[] } {
  const enabled = el('input', { type: 'checkbox', id: 'vm-nic', checked: true });
  const network = el('input', { id: 'vm-nic-network', value: 'default', maxlength: 64 });
  const mode = el(
    'select',
    { id: 'vm-nic-mode' },
    el('option', { value: 'access' }, 'access'),
    el('option', { value: 'trunk' }, 'trunk'),
  );
  const vlans = el('input', { id: 'vm-nic-vlans', value: '1', placeholder: 'access: 10 · trunk: 10,20' });
  const native = el('input', { id: 'vm-nic-native', placeholder: 'trunk only, e.g. 1' });
  const mac = el('input', { id: 'vm-nic-mac', placeholder: 'random, e.g. 02:00:00:00:00:01' });
  const element = el(
    'fieldset',
    { class: 'nic' },
    el('legend', {}, el('label', {}, enabled, ' NIC (virtio-net)')),
    el('label', {}, 'Network', network),
    el('label', {}, 'VLAN mode', mode),
    el('label', {}, 'VLAN (access) or allowed VLANs (trunk)', vlans),
    el('label', {}, 'Native VLAN', native),
    el('label', {}, 'MAC', mac),
  );
  return {
    element,
    read: () => {
      if (!enabled.checked) return [];
      const list = parseVlans(vlans.value);
      const nic: NicConfig = {
        network: network.value.trim() || undefined,
        mac: mac.value.trim() || undefined,
        mode:
          mode.value === 'trunk'
            ? {
                kind: 'trunk',
                allowed: list,
                native: native.value.trim() === '' ? undefined : Number(native.value),
              }
            : { kind: 'access', vlan: list.length === 1 ? list[0] : NaN },
      };
      return [nic];
    },
  };
}

/** The "Network" panel: one table per network this page uses, refreshed with every stats sample. */
export class NetworkView {
  readonly element: HTMLElement;
  private readonly captures = new Map<string, NetworkCapture>();
  private readonly unsubscribe: () => void;

  constructor(private readonly api: TabvisorApi) {
    this.element = el('section', { class: 'network', id: 'network-view' });
    this.unsubscribe = api.onChange(() => this.render());
    this.render();
  }

  dispose(): void {
    this.unsubscribe();
    for (const capture of this.captures.values()) capture.stop();
    this.captures.clear();
  }

  private render(): void {
    const names = this.api.networks?.() ?? [];
    const blocks = names.map((name) => this.renderNetwork(name));
    this.element.replaceChildren(
      el('h2', {}, 'Network'),
      ...(blocks.length > 0 ? blocks : [el('p', { class: 'hint' }, 'No VM has a NIC yet.')]),
    );
  }

  private renderNetwork(name: string): HTMLElement {
    const network = this.api.network?.(name);
    if (network === undefined) return el('div');
    const rows = network.ports().map((port) => {
      const key = `${name}\u0000${port.name}`;
      const capture = this.captures.get(key);
      const button = el(
        'button',
        { type: 'button', 'data-capture': port.name },
        capture ? `Stop & download (${capture.frames})` : 'Capture',
      );
      button.addEventListener('click', () => {
        const running = this.captures.get(key);
        if (running) {
          this.captures.delete(key);
          download(running.stop(), `${name}-${port.name.replace(/[^A-Za-z0-9_-]/g, '_')}.pcap`);
        } else {
          this.captures.set(key, network.capture(port.name));
        }
        this.render();
      });
      const c = port.counters;
      return el(
        'tr',
        { 'data-port': port.name },
        el('td', {}, port.name),
        el('td', {}, port.role),
        el('td', {}, describeMode(port)),
        el('td', {}, `${c.rxFrames} / ${c.rxBytes}`),
        el('td', {}, `${c.txFrames} / ${c.txBytes}`),
        el('td', {}, String(sumDrops(port))),
        el('td', {}, button),
      );
    });
    const macs = network
      .macTable()
      .map((entry) =>
        el(
          'tr',
          {},
          el('td', {}, String(entry.vlan)),
          el('td', {}, entry.mac),
          el('td', {}, entry.port),
          el('td', {}, `${Math.round(entry.ageMs / 1000)} s`),
        ),
      );
    const dhcp = network
      .dhcp()
      .map(
        (d) =>
          `VLAN ${d.vlan}: ${d.role === 'leader' ? `DHCP server ${d.serverIp ?? ''} here, ${d.leases.length} lease(s)` : 'DHCP served by another tab'}`,
      );
    return el(
      'div',
      { class: 'net', 'data-network': name },
      el('h3', {}, `Switch "${name}"`),
      el(
        'table',
        { class: 'ports' },
        el(
          'tr',
          {},
          ...['port', 'role', 'VLAN mode', 'rx frames / bytes', 'tx frames / bytes', 'drops', 'capture'].map(
            (h) => el('th', {}, h),
          ),
        ),
        ...rows,
      ),
      el(
        'table',
        { class: 'macs' },
        el('tr', {}, ...['VLAN', 'MAC', 'port', 'age'].map((h) => el('th', {}, h))),
        ...macs,
      ),
      el('p', { class: 'dhcp' }, dhcp.join(' · ')),
    );
  }
}

/** Offer `blob` as a file download. */
function download(blob: Blob, fileName: string): void {
  const url = URL.createObjectURL(blob);
  const link = el('a', { href: url, download: fileName });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
