/**
 * `<tabvisor-vm>`: a live VM in a docs page. Attributes (read when the element is connected):
 * `image` (manifest.json or kernel URL), `initrd`, `snapshot` (`auto` | URL | `none`), `memory` (MiB), `cpus`,
 * `append` (kernel command line), `autostart` (`false` creates the VM without starting it), `network`, `vlan`,
 * `readonly` (the console takes no keyboard input; scripts still run), `name`.
 * Shows an xterm console sized to the element and a toolbar (start, stop, reset, state, mode). `el.vm` is the VM
 * ({@link TabvisorVm}) once created, `el.ready` resolves with it, `el.run(command)` runs a command. Removing the
 * element deletes the VM and frees its workers, terminal and listeners.
 */
import xtermCss from '@xterm/xterm/css/xterm.css?inline';
import type { RunOptions, RunResult, TabvisorConsole, TabvisorVm } from '../machine/hypervisor.ts';
import type { NicConfig } from '../machine/networks.ts';
import { TerminalPane } from '../ui/terminal-pane.ts';
import { bootSnapshotSaved, createVM, embedMode, hypervisor, type EmbedMode } from './embed-hypervisor.ts';
import type { EmbedVmConfig } from './guest.ts';

const STYLE = `
:host { display: block; height: 320px; min-height: 160px; border: 1px solid #2a3038; border-radius: 6px;
  overflow: hidden; background: #101418; color: #d8dee9; font: 12px system-ui, sans-serif; }
.frame { display: flex; flex-direction: column; height: 100%; }
.bar { display: flex; gap: 6px; align-items: center; padding: 4px 6px; background: #1b2129; }
.bar button { font: inherit; padding: 2px 8px; }
.bar .state { margin-left: auto; }
.bar .mode { opacity: 0.75; }
.term { flex: 1; min-height: 0; padding: 4px; }
.error { color: #ff8080; padding: 4px 6px; }
`;

function intAttribute(element: HTMLElement, name: string): number | undefined {
  const text = element.getAttribute(name);
  if (text === null || text.trim() === '') return undefined;
  return Number(text);
}

/** The mode label the toolbar shows. */
export function modeLabel(mode: EmbedMode, cpus: number): string {
  return mode === 'parallel' ? `parallel (${cpus} workers)` : 'single worker';
}

/** HTMLElement, or a stand-in where there is none (server-side rendering, Node), so importing never throws. */
const ElementBase: typeof HTMLElement =
  typeof HTMLElement === 'undefined' ? (class {} as unknown as typeof HTMLElement) : HTMLElement;

/** The `<tabvisor-vm>` element. */
export class TabvisorVmElement extends ElementBase {
  /** The VM, once created (undefined before and after). */
  vm: TabvisorVm | undefined;
  /** Resolves with the VM once it is created; rejects when it cannot be. */
  ready: Promise<TabvisorVm>;
  /** How this page runs VMs. */
  readonly mode: EmbedMode = embedMode();
  private resolveReady!: (vm: TabvisorVm) => void;
  private rejectReady!: (error: Error) => void;
  private readonly disposers: (() => void)[] = [];
  private pane: TerminalPane | undefined;
  private generation = 0;

  constructor() {
    super();
    this.ready = this.freshReady();
  }

  /** Run `command` at the VM's shell (see {@link TabvisorVm.run}); waits for the VM first. */
  async run(command: string, options?: RunOptions): Promise<RunResult> {
    const vm = await this.ready;
    await bootSnapshotSaved(vm);
    return vm.run(command, options);
  }

  /** The configuration the attributes describe. */
  config(): EmbedVmConfig {
    const get = (name: string): string | undefined => this.getAttribute(name) ?? undefined;
    const network = get('network');
    const vlan = intAttribute(this, 'vlan');
    // `network` and/or `vlan` give the VM one NIC: an access port of that network's switch in that VLAN.
    const nics: NicConfig[] =
      network === undefined && vlan === undefined
        ? []
        : [{ network, mode: vlan === undefined ? undefined : { kind: 'access', vlan } }];
    return {
      name: get('name'),
      image: get('image'),
      initrd: get('initrd'),
      snapshot: get('snapshot'),
      memoryMiB: intAttribute(this, 'memory'),
      cpus: intAttribute(this, 'cpus'),
      bootargs: get('append'),
      nics,
      start: this.getAttribute('autostart') !== 'false',
    };
  }

  connectedCallback(): void {
    const generation = ++this.generation;
    const root = this.shadowRoot ?? this.attachShadow({ mode: 'open' });
    root.replaceChildren();
    const style = document.createElement('style');
    style.textContent = `${xtermCss}\n${STYLE}`;
    const frame = document.createElement('div');
    frame.className = 'frame';
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.setAttribute('part', 'toolbar');
    const button = (label: string, action: (vm: TabvisorVm) => Promise<void>): HTMLButtonElement => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = label;
      b.dataset.action = label.toLowerCase();
      b.addEventListener('click', () => {
        if (this.vm) void action(this.vm).catch((error: unknown) => this.showError(error));
      });
      return b;
    };
    const state = document.createElement('span');
    state.className = 'state';
    const mode = document.createElement('span');
    mode.className = 'mode';
    bar.append(
      button('Start', (vm) => vm.start()),
      button('Stop', (vm) => vm.stop()),
      button('Reset', (vm) => vm.reset()),
      state,
      mode,
    );
    const term = document.createElement('div');
    term.className = 'term';
    frame.append(bar, term);
    root.append(style, frame);
    const config = this.config();
    mode.textContent = modeLabel(this.mode, config.cpus ?? 2);
    this.dataset.mode = this.mode;
    state.textContent = 'loading';
    createVM(config).then(
      (vm) => {
        if (generation !== this.generation || !this.isConnected) {
          void vm.delete();
          return;
        }
        this.vm = vm;
        const console = this.hasAttribute('readonly') ? readOnly(vm.console) : vm.console;
        this.pane = new TerminalPane(term, console);
        mode.textContent = modeLabel(this.mode, vm.cpus);
        const show = (): void => {
          state.textContent = vm.state;
          this.dataset.state = vm.state;
        };
        show();
        this.disposers.push(hypervisor().onChange(show));
        this.dataset.snapshot = vm.stats().bootedFrom === 'snapshot' ? 'restored' : 'cold';
        void bootSnapshotSaved(vm).then((saved) => {
          if (saved && this.vm === vm) this.dataset.snapshot = 'saved';
        });
        this.resolveReady(vm);
        this.dispatchEvent(new CustomEvent('tabvisor-ready', { detail: vm }));
      },
      (error: unknown) => {
        if (generation !== this.generation) return;
        state.textContent = 'failed';
        this.showError(error);
        this.rejectReady(error instanceof Error ? error : new Error(String(error)));
      },
    );
  }

  disconnectedCallback(): void {
    this.generation++;
    for (const dispose of this.disposers.splice(0)) dispose();
    this.pane?.dispose();
    this.pane = undefined;
    const vm = this.vm;
    this.vm = undefined;
    // Anyone still waiting for this VM (a pending run) hears that it will not come.
    this.rejectReady(new Error('the <tabvisor-vm> element was removed before its VM was ready'));
    this.ready = this.freshReady();
    this.shadowRoot?.replaceChildren();
    if (vm) void vm.delete();
  }

  private freshReady(): Promise<TabvisorVm> {
    const ready = new Promise<TabvisorVm>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    ready.catch(() => undefined); // a page that never awaits it sees no unhandled rejection
    return ready;
  }

  private showError(error: unknown): void {
    const root = this.shadowRoot;
    if (!root) return;
    const line = document.createElement('div');
    line.className = 'error';
    line.setAttribute('role', 'alert');
    line.textContent = error instanceof Error ? error.message : String(error);
    root.querySelector('.frame')?.insertBefore(line, root.querySelector('.term'));
  }
}

/** A console view that ignores typing (the `readonly` attribute); the terminal still passes its size on. */
function readOnly(console: TabvisorConsole): TabvisorConsole {
  return {
    write: () => undefined,
    resize: (cols, rows) => console.resize(cols, rows),
    size: () => console.size(),
    transcript: () => console.transcript(),
    waitFor: (pattern, timeoutMs) => console.waitFor(pattern, timeoutMs),
    onOutput: (listener) => console.onOutput(listener),
    onReset: (listener) => console.onReset(listener),
  };
}

/** Register `<tabvisor-vm>` (once; safe to call again). */
export function defineTabvisorVm(tag = 'tabvisor-vm'): void {
  if (!customElements.get(tag)) customElements.define(tag, class extends TabvisorVmElement {});
}

declare global {
  interface HTMLElementTagNameMap {
    'tabvisor-vm': TabvisorVmElement;
  }
}
