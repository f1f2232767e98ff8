/**
 * `<tabvisor-vm>`: a live VM in a docs page. Attributes: `image` (manifest.json or kernel URL), `initrd`,
 * `snapshot` (`auto` | URL | `none`), `memory` (MiB), `cpus`, `append` (kernel command line), `autostart`
 * (`false` creates the VM without starting it), `network`, `vlan`, `readonly` (the console takes no keyboard
 * input; scripts still run), `name`. Changing one of the attributes that shape the VM ({@link VM_ATTRIBUTES})
 * replaces the VM with one built from the new attributes, at once, as a `<video>` loads a new `src`; changes made
 * together (no `await` between them) are applied together. `readonly` applies to the console at once; `autostart` starts a VM that is
 * still waiting when it stops being `false`.
 * Shows an xterm console sized to the element and a toolbar (start, stop, reset, state, mode). `el.vm` is the VM
 * ({@link TabvisorVm}) once created, `el.ready` resolves with it (the terminal follows: see `showTerminal`),
 * `el.run(command)` runs a command. Removing the element deletes the VM and frees its workers, terminal and
 * listeners.
 */
import type { RunOptions, RunResult, TabvisorConsole, TabvisorVm } from '../machine/hypervisor.ts';
import type { NicConfig } from '../machine/networks.ts';
import { DEFAULT_CPUS } from '../machine/vm-limits.ts';
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

/** Attributes that shape the VM: changing one replaces the VM. */
export const VM_ATTRIBUTES = [
  'image',
  'initrd',
  'snapshot',
  'memory',
  'cpus',
  'append',
  'network',
  'vlan',
  'name',
] as const;

/** The element's parts that live while it is connected. */
interface ElementView {
  readonly term: HTMLElement;
  readonly state: HTMLElement;
  readonly mode: HTMLElement;
}

let terminalModule: Promise<typeof import('./terminal-pane.ts')> | undefined;

/**
 * The terminal pane's module (xterm.js, more than half of the library's code), loaded on first use, once an
 * element's VM is there (see `showTerminal`). A failed load is asked for again by the next element, but browsers may keep a module that failed to
 * load failed for the life of the page (Chromium 150 does, without fetching it again): the error says to reload.
 */
function terminalPane(): Promise<typeof import('./terminal-pane.ts')> {
  if (!terminalModule) {
    const loading = import('./terminal-pane.ts').catch((error: unknown) => {
      throw new Error(
        `the terminal's code could not be loaded (${error instanceof Error ? error.message : String(error)}); check that the files beside the tabvisor module are served, then reload the page`,
      );
    });
    terminalModule = loading;
    loading.catch(() => {
      if (terminalModule === loading) terminalModule = undefined;
    });
  }
  return terminalModule;
}

/** The `<tabvisor-vm>` element. */
export class TabvisorVmElement extends ElementBase {
  /** Attributes whose changes the element applies (see the module comment). */
  static get observedAttributes(): string[] {
    return [...VM_ATTRIBUTES, 'readonly', 'autostart'];
  }

  /** The VM, once created (undefined before and after). */
  vm: TabvisorVm | undefined;
  /** Resolves with the VM once it is created; rejects when it cannot be, or it is replaced or removed first. */
  ready: Promise<TabvisorVm>;
  /** How this page runs VMs. */
  readonly mode: EmbedMode = embedMode();
  private resolveReady!: (vm: TabvisorVm) => void;
  private rejectReady!: (error: Error) => void;
  /** Undo what the current VM set up (listeners, terminal). */
  private readonly disposers: (() => void)[] = [];
  private view: ElementView | undefined;
  /** Bumped for every VM the element asks for, so a VM that arrives after it was replaced is deleted. */
  private generation = 0;
  private replacing = false;
  /**
   * Resolves once the VM of the latest generation is deleted (or was never created). A new VM is created only
   * after that: the replacement may reuse the name, and the old one's memory goes back first.
   */
  private previousGone: Promise<void> = Promise.resolve();
  /** Marks the current VM gone (called after its delete()). */
  private markGone: (() => void) | undefined;

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

  /** Put xterm's style sheet (it comes with the terminal's code) first in the shadow root, once. */
  private useXtermStyle(css: string): void {
    const root = this.shadowRoot;
    if (!root || root.querySelector('style[data-xterm]')) return;
    const style = document.createElement('style');
    style.dataset.xterm = '';
    style.textContent = css;
    root.prepend(style);
  }

  connectedCallback(): void {
    const root = this.shadowRoot ?? this.attachShadow({ mode: 'open' });
    root.replaceChildren();
    const style = document.createElement('style');
    style.textContent = STYLE;
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
    this.dataset.mode = this.mode;
    this.view = { term, state, mode };
    this.createVm();
  }

  attributeChangedCallback(name: string, oldValue: string | null, newValue: string | null): void {
    // Before the element is connected (parsing, upgrade) the attributes are read when the VM is created.
    if (!this.view || oldValue === newValue) return;
    if (name === 'readonly') return; // the console reads the attribute on every keystroke
    if (name === 'autostart') {
      const vm = this.vm;
      if (vm?.state === 'created' && newValue !== 'false')
        void vm.start().catch((error: unknown) => this.showError(error));
      return;
    }
    // The old VM goes at once (so `el.vm` and `el.ready` already speak of the replacement); the new one is
    // created in a microtask, so changes made together (cpus, then memory, no await between) replace it once.
    if (this.replacing) return;
    this.replacing = true;
    this.dropVm(new Error("the VM was replaced: the <tabvisor-vm> element's attributes changed"));
    const view = this.view;
    view.term.replaceChildren();
    view.state.textContent = 'loading';
    for (const line of this.shadowRoot?.querySelectorAll('.error') ?? []) line.remove();
    queueMicrotask(() => {
      this.replacing = false;
      if (this.view === view) this.createVm();
    });
  }

  disconnectedCallback(): void {
    this.dropVm(new Error('the <tabvisor-vm> element was removed before its VM was ready'));
    this.view = undefined;
    this.shadowRoot?.replaceChildren();
  }

  /** Create the VM the attributes describe and show it in the view. */
  private createVm(): void {
    const view = this.view;
    if (!view) return;
    const generation = ++this.generation;
    const config = this.config();
    view.mode.textContent = modeLabel(this.mode, config.cpus ?? DEFAULT_CPUS);
    view.state.textContent = 'loading';
    delete this.dataset.state;
    delete this.dataset.snapshot;
    let markGone!: () => void;
    const gone = new Promise<void>((resolve) => (markGone = resolve));
    const before = this.previousGone;
    this.previousGone = gone;
    before
      .then(() => createVM(config))
      .then(
        (vm) => {
          if (generation !== this.generation || !this.isConnected || this.view !== view) {
            void vm.delete().then(markGone, markGone);
            return;
          }
          this.vm = vm;
          this.markGone = markGone;
          view.mode.textContent = modeLabel(this.mode, vm.cpus);
          const show = (): void => {
            view.state.textContent = vm.state;
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
          this.showTerminal(vm, view, generation);
        },
        (error: unknown) => {
          markGone();
          if (generation !== this.generation) return;
          view.state.textContent = 'failed';
          this.showError(error);
          this.rejectReady(error instanceof Error ? error : new Error(String(error)));
        },
      );
  }

  /**
   * Load the terminal's code and show `vm`'s console in it. After the VM, not beside it: xterm's module and
   * set-up take the page's thread for ~100 ms, which in parallel mode is the VMM's and in both modes receives
   * the VM's creation; spent while the vCPUs put the snapshot's pages back and the first command runs, they
   * delay neither (the pane replays what the console printed meanwhile). The VM works without it (`run`, the
   * API): a terminal that cannot be loaded leaves an error beside a running VM.
   */
  private showTerminal(vm: TabvisorVm, view: ElementView, generation: number): void {
    const current = (): boolean => generation === this.generation && this.view === view && this.vm === vm;
    terminalPane().then(
      ({ TerminalPane: Pane, xtermCss }) => {
        if (!current()) return;
        this.useXtermStyle(xtermCss);
        const pane = new Pane(view.term, this.keyboard(vm.console));
        this.disposers.push(() => pane.dispose());
      },
      (error: unknown) => {
        if (current()) this.showError(error);
      },
    );
  }

  /** Delete the current VM (or the one being created) and free what it used; `ready` starts afresh. */
  private dropVm(why: Error): void {
    this.generation++;
    for (const dispose of this.disposers.splice(0)) dispose();
    const vm = this.vm;
    const markGone = this.markGone;
    this.vm = undefined;
    this.markGone = undefined;
    // Anyone still waiting for this VM (a pending run) hears that it will not come.
    this.rejectReady(why);
    this.ready = this.freshReady();
    // A VM still being created is deleted when it arrives (the generation changed).
    if (vm) void vm.delete().then(markGone, markGone);
  }

  /** The console as the terminal types into it: keystrokes are dropped while the element is `readonly`; sizes pass. */
  private keyboard(console: TabvisorConsole): TabvisorConsole {
    return {
      write: (text) => {
        if (!this.hasAttribute('readonly')) console.write(text);
      },
      // The terminal still passes its size on while readonly.
      resize: (cols, rows) => console.resize(cols, rows),
      size: () => console.size(),
      transcript: () => console.transcript(),
      waitFor: (pattern, timeoutMs) => console.waitFor(pattern, timeoutMs),
      onOutput: (listener) => console.onOutput(listener),
      onReset: (listener) => console.onReset(listener),
    };
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

/** Register `<tabvisor-vm>` (once; safe to call again). */
export function defineTabvisorVm(tag = 'tabvisor-vm'): void {
  if (!customElements.get(tag)) customElements.define(tag, class extends TabvisorVmElement {});
}

declare global {
  interface HTMLElementTagNameMap {
    'tabvisor-vm': TabvisorVmElement;
  }
}
