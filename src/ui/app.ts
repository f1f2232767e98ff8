import {
  MAX_HARTS,
  MAX_MEMORY_MIB,
  MIN_MEMORY_MIB,
  type Hypervisor,
  type TabvisorVm,
  type VmState,
  type VmStats,
} from '../machine/hypervisor.ts';
import { TerminalPane } from './terminal-pane.ts';
import { NetworkView, nicFields } from './network-view.ts';
import { el } from './dom.ts';

/** The lifecycle buttons, and in which states each is enabled. */
const ACTIONS: readonly {
  readonly name: 'start' | 'pause' | 'resume' | 'stop' | 'reset' | 'delete';
  readonly label: string;
  readonly enabled: readonly VmState[];
}[] = [
  { name: 'start', label: 'Start', enabled: ['created', 'stopped', 'crashed'] },
  { name: 'pause', label: 'Pause', enabled: ['running'] },
  { name: 'resume', label: 'Resume', enabled: ['paused'] },
  { name: 'stop', label: 'Stop', enabled: ['created', 'running', 'paused'] },
  { name: 'reset', label: 'Reset', enabled: ['running', 'paused', 'stopped', 'crashed'] },
  { name: 'delete', label: 'Delete', enabled: ['created', 'running', 'paused', 'stopped', 'crashed'] },
];

/** What the page shows for one VM: its row in the list and its card with console and figures. */
interface VmView {
  readonly row: HTMLLIElement;
  readonly state: HTMLElement;
  readonly reason: HTMLElement;
  readonly error: HTMLElement;
  readonly buttons: Map<string, HTMLButtonElement>;
  readonly card: HTMLElement;
  readonly cardState: HTMLElement;
  readonly figures: HTMLElement;
  readonly terminal: TerminalPane;
}

function formatRate(ips: number): string {
  if (ips >= 1e6) return `${(ips / 1e6).toFixed(1)} MIPS`;
  if (ips >= 1e3) return `${(ips / 1e3).toFixed(0)} kIPS`;
  return `${Math.round(ips)} IPS`;
}

/**
 * The hypervisor app: the create-VM form, the VM list with state and controls, and one card per VM with its
 * console and live figures. Everything goes through the page API (`window.tabvisor`), as a script would.
 */
export class App {
  private readonly views = new Map<string, VmView>();
  private readonly list: HTMLUListElement;
  private readonly cards: HTMLElement;
  private readonly hostFigure: HTMLElement;
  private readonly unsubscribe: () => void;
  private readonly networkView: NetworkView;

  constructor(
    root: HTMLElement,
    private readonly hv: Hypervisor,
    defaults: { readonly cpus: number; readonly memoryMiB: number },
  ) {
    this.hostFigure = el('span', { class: 'host-ram', id: 'host-ram' });
    this.list = el('ul', { class: 'vm-list', id: 'vm-list' });
    this.cards = el('section', { class: 'cards', id: 'consoles' });
    const form = this.createForm(defaults);
    this.networkView = new NetworkView(hv);
    root.append(
      el(
        'header',
        { class: 'top' },
        el('h1', {}, 'tabvisor'),
        el('span', { class: 'tagline' }, 'RISC-V VMs in this tab, one worker per vCPU'),
        this.hostFigure,
      ),
      el(
        'main',
        { class: 'layout' },
        el('aside', { class: 'side' }, form, this.list, this.networkView.element),
        this.cards,
      ),
    );
    this.unsubscribe = hv.onChange(() => this.render());
    this.render();
  }

  /** Remove listeners and terminals. */
  dispose(): void {
    this.unsubscribe();
    this.networkView.dispose();
    for (const view of this.views.values()) view.terminal.dispose();
    this.views.clear();
  }

  private createForm(defaults: { readonly cpus: number; readonly memoryMiB: number }): HTMLFormElement {
    const name = el('input', { name: 'name', id: 'vm-name', placeholder: 'vm-N', maxlength: 40 });
    const cpus = el('input', { name: 'cpus', id: 'vm-cpus', type: 'number', value: defaults.cpus });
    const memory = el('input', {
      name: 'memory',
      id: 'vm-memory',
      type: 'number',
      value: defaults.memoryMiB,
    });
    const error = el('p', { class: 'form-error', id: 'create-error', role: 'alert' });
    const submit = el('button', { type: 'submit', id: 'create-vm' }, 'Create VM');
    const nic = nicFields();
    const form = el(
      'form',
      { class: 'create', id: 'create-form', novalidate: true },
      el('h2', {}, 'New VM'),
      el('label', {}, 'Name', name),
      el('label', {}, `vCPUs (1-${MAX_HARTS})`, cpus),
      el('label', {}, `Memory, MiB (${MIN_MEMORY_MIB}-${MAX_MEMORY_MIB})`, memory),
      nic.element,
      submit,
      error,
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const config = {
        name: name.value.trim() === '' ? undefined : name.value.trim(),
        cpus: Number(cpus.value),
        memoryMiB: Number(memory.value),
        nics: nic.read(),
      };
      const problem = this.hv.check(config);
      error.textContent = problem ?? '';
      if (problem !== undefined) return;
      submit.disabled = true;
      this.hv
        .createVM(config)
        .then(() => {
          name.value = '';
        })
        .catch((reason: unknown) => {
          error.textContent = reason instanceof Error ? reason.message : String(reason);
        })
        .finally(() => {
          submit.disabled = false;
        });
    });
    return form;
  }

  private render(): void {
    const host = this.hv.hostRam();
    const usedMiB = ((host.totalFrames - host.freeFrames) * host.frameBytes) >> 20;
    const totalMiB = (host.totalFrames * host.frameBytes) >> 20;
    const committedMiB = ((host.committedFrames ?? host.totalFrames) * host.frameBytes) >> 20;
    this.hostFigure.textContent = `host RAM ${usedMiB} MiB in use, ${committedMiB} MiB committed, ${totalMiB} MiB maximum`;
    const vms = this.hv.vms;
    for (const [id, view] of this.views) {
      if (vms.some((vm) => vm.id === id)) continue;
      view.terminal.dispose();
      view.row.remove();
      view.card.remove();
      this.views.delete(id);
    }
    for (const vm of vms) {
      const view = this.views.get(vm.id) ?? this.createView(vm);
      this.update(view, vm.stats());
    }
  }

  private createView(vm: TabvisorVm): VmView {
    const state = el('span', { class: 'state' });
    const reason = el('p', { class: 'reason' });
    const error = el('p', { class: 'row-error', role: 'alert' });
    const buttons = new Map<string, HTMLButtonElement>();
    const controls = el('div', { class: 'controls' });
    for (const action of ACTIONS) {
      const button = el('button', { type: 'button', 'data-action': action.name }, action.label);
      button.addEventListener('click', () => {
        error.textContent = '';
        vm[action.name]().catch((problem: unknown) => {
          error.textContent = problem instanceof Error ? problem.message : String(problem);
        });
      });
      buttons.set(action.name, button);
      controls.append(button);
    }
    const row = el(
      'li',
      { class: 'vm-row', 'data-vm': vm.id },
      el('div', { class: 'row-head' }, el('strong', {}, vm.name), state),
      el('div', { class: 'shape' }, `${vm.cpus} vCPU · ${vm.memoryMiB} MiB`),
      controls,
      reason,
      error,
    );
    const cardState = el('span', { class: 'state' });
    const screen = el('div', { class: 'screen' });
    const figures = el('div', { class: 'figures' });
    const card = el(
      'article',
      { class: 'card', 'data-vm': vm.id },
      el('header', {}, el('strong', {}, vm.name), cardState),
      screen,
      figures,
    );
    row.addEventListener('click', (event) => {
      if ((event.target as HTMLElement).closest('button')) return;
      card.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
      view.terminal.focus();
    });
    this.list.append(row);
    this.cards.append(card);
    const view: VmView = {
      row,
      state,
      reason,
      error,
      buttons,
      card,
      cardState,
      figures,
      terminal: new TerminalPane(screen, vm.console),
    };
    this.views.set(vm.id, view);
    return view;
  }

  private update(view: VmView, stats: VmStats): void {
    for (const target of [view.state, view.cardState]) {
      target.textContent = stats.state;
      target.dataset.state = stats.state;
    }
    view.row.dataset.state = stats.state;
    view.card.dataset.state = stats.state;
    view.reason.textContent = stats.reason ?? '';
    for (const action of ACTIONS) {
      const button = view.buttons.get(action.name);
      if (button) button.disabled = !action.enabled.includes(stats.state);
    }
    const vcpus = stats.vcpus.map((vcpu) =>
      el(
        'div',
        { class: 'vcpu', 'data-state': vcpu.state },
        el('span', { class: 'vcpu-id' }, `vCPU ${vcpu.hartId}`),
        el('span', { class: 'vcpu-state' }, vcpu.state),
        el('span', { class: 'vcpu-rate' }, formatRate(vcpu.ips)),
      ),
    );
    const memory = el(
      'div',
      { class: 'memory' },
      `guest RAM ${stats.memoryMiB} MiB · ${stats.hostFrames} host frames of ${stats.frameBytes >> 10} KiB · ` +
        `${stats.threads} worker${stats.threads === 1 ? '' : 's'}`,
    );
    view.figures.replaceChildren(...vcpus, memory);
  }
}
