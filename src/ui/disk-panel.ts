/**
 * Disk controls for each VM row of the app: where its disks live, reset the root disk, attach a raw image,
 * download a disk, the last disk problem, and a confirmation before Delete erases the VM's storage. Also shows
 * whether the browser granted persistent storage. It adds itself to the rows the app renders.
 */
import type { Hypervisor, TabvisorVm } from '../machine/hypervisor.ts';
import type { PageStorage } from './page-storage.ts';

/** States in which the disks may change under the VM (it has no machine running). */
const IDLE_STATES = new Set(['created', 'stopped', 'crashed']);

interface PanelView {
  readonly box: HTMLElement;
  readonly summary: HTMLElement;
  readonly message: HTMLElement;
  readonly reset: HTMLButtonElement;
  readonly attach: HTMLButtonElement;
  readonly downloads: HTMLElement;
  shown: string;
}

function button(label: string, action: string): HTMLButtonElement {
  const element = document.createElement('button');
  element.type = 'button';
  element.textContent = label;
  element.dataset.diskAction = action;
  return element;
}

/** The per-VM disk controls and the storage status in the page header. */
export class DiskPanel {
  private readonly views = new Map<string, PanelView>();
  private readonly unsubscribe: (() => void)[] = [];

  constructor(
    root: HTMLElement,
    private readonly hv: Hypervisor,
    private readonly storage: PageStorage,
  ) {
    const status = document.createElement('span');
    status.className = 'storage-status';
    status.id = 'storage-status';
    status.dataset.persist = storage.persist;
    status.dataset.store = storage.store.kind;
    status.textContent =
      `disks in ${storage.store.kind === 'opfs' ? 'OPFS' : 'IndexedDB'} · persistent storage ` +
      (storage.persist === 'granted'
        ? 'granted'
        : storage.persist === 'denied'
          ? 'not granted (the browser may evict disks under storage pressure)'
          : 'unsupported');
    if (storage.usage) {
      const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
      status.textContent += ` · ${mib(storage.usage.usedBytes)} used of ${mib(storage.usage.quotaBytes)} allowed`;
    }
    if (storage.elsewhere > 0) {
      status.textContent +=
        ` · ${storage.elsewhere} saved VM${storage.elsewhere === 1 ? ' is' : 's are'} open in another tab of this ` +
        'site (a disk has one writer); close that tab and reload this one to get them here';
    }
    (root.querySelector('header.top') ?? root).append(status);
    this.unsubscribe.push(hv.onChange(() => this.render()));
    this.unsubscribe.push(storage.onChange(() => this.render()));
    this.render();
  }

  /** Remove listeners. */
  dispose(): void {
    for (const off of this.unsubscribe.splice(0)) off();
  }

  private render(): void {
    for (const vm of this.hv.vms) {
      const row = document.querySelector<HTMLElement>(`.vm-row[data-vm="${vm.id}"]`);
      if (!row) continue;
      let view = this.views.get(vm.id);
      if (!view || !row.contains(view.box)) view = this.createView(vm, row);
      this.update(view, vm);
    }
    for (const id of this.views.keys()) if (!this.hv.vm(id)) this.views.delete(id);
  }

  private createView(vm: TabvisorVm, row: HTMLElement): PanelView {
    const box = document.createElement('div');
    box.className = 'disks';
    const summary = document.createElement('div');
    summary.className = 'disk-summary';
    const message = document.createElement('p');
    message.className = 'disk-message';
    message.setAttribute('role', 'status');
    const reset = button('Reset disk', 'reset');
    const attach = button('Attach image…', 'attach');
    const file = document.createElement('input');
    file.type = 'file';
    file.hidden = true;
    file.dataset.diskAction = 'attach-file';
    const downloads = document.createElement('span');
    downloads.className = 'disk-downloads';
    box.append(summary, reset, attach, file, downloads, message);
    row.append(box);
    const say = (text: string) => (message.textContent = text);

    reset.addEventListener('click', () => {
      const disks = this.storage.disks(vm.id);
      if (!disks || !confirm(`Return ${vm.name}'s root disk to the original image? Its changes are lost.`))
        return;
      disks.resetRoot().then(
        () => say('the root disk is the original image again'),
        (error: unknown) => say(`reset failed: ${String(error)}`),
      );
    });
    attach.addEventListener('click', () => file.click());
    file.addEventListener('change', () => {
      const chosen = file.files?.[0];
      const disks = this.storage.disks(vm.id);
      file.value = '';
      if (!chosen || !disks) return;
      say(`copying ${chosen.name}…`);
      disks.attachImage(chosen, chosen.name).then(
        (saved) => {
          this.storage.save(this.hv);
          say(
            `${chosen.name} attached as disk ${saved.index}; it appears as a /dev/vd* device at the next start`,
          );
          this.render();
        },
        (error: unknown) =>
          say(`cannot attach ${chosen.name}: ${error instanceof Error ? error.message : String(error)}`),
      );
    });
    // Delete erases the VM's disks: ask first (capture phase, so the app's handler never sees a cancelled click).
    row.addEventListener(
      'click',
      (event) => {
        const target = (event.target as HTMLElement).closest('button[data-action="delete"]');
        if (!target || !this.storage.disks(vm.id)) return;
        if (!confirm(`Delete ${vm.name} and erase its disks? This cannot be undone.`)) {
          event.stopImmediatePropagation();
          event.preventDefault();
        }
      },
      { capture: true },
    );
    const view: PanelView = { box, summary, message, reset, attach, downloads, shown: '' };
    this.views.set(vm.id, view);
    return view;
  }

  private update(view: PanelView, vm: TabvisorVm): void {
    const disks = this.storage.disks(vm.id);
    const idle = IDLE_STATES.has(vm.state);
    view.reset.disabled = !idle || !disks?.rootOnFirstDisk;
    view.attach.disabled = !idle || !disks;
    const problem = this.storage.problem(vm.id);
    if (problem && view.message.dataset.problem !== problem) {
      view.message.dataset.problem = problem;
      view.message.textContent = problem;
      view.message.classList.add('error');
    }
    const saved = disks?.saved ?? [];
    const key = saved.map((d) => `${d.index}:${d.label}`).join(',');
    if (key === view.shown) return;
    view.shown = key;
    view.summary.textContent =
      saved.length === 0
        ? 'no disks'
        : `disks (${disks?.storeKind}): ` +
          saved.map((d) => `${d.label} ${(d.sizeBytes / 2 ** 20).toFixed(0)} MiB`).join(', ');
    view.downloads.replaceChildren(
      ...saved.map((d, position) => {
        const download = button(`Download ${d.label}`, 'download');
        download.addEventListener('click', () => {
          const open = this.storage.disks(vm.id);
          if (!open) return;
          view.message.textContent = `reading ${d.label}…`;
          open.exportDisk(position).then(
            (blob) => {
              const link = document.createElement('a');
              link.href = URL.createObjectURL(blob);
              link.download = `${vm.name}-${d.label === 'root' ? 'root.ext2' : d.label}`;
              link.click();
              setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
              view.message.textContent = `${d.label} downloaded (${blob.size} bytes)`;
            },
            (error: unknown) => (view.message.textContent = `download failed: ${String(error)}`),
          );
        });
        return download;
      }),
    );
  }
}
