/**
 * The page: checks cross-origin isolation, creates the hypervisor (host RAM, browser vCPU workers, the default
 * guest from public/images), publishes it as `window.tabvisor`, mounts the app and boots the default VM.
 *
 * URL parameters: `cpus` and `mem` (MiB) shape the default VM; `hostmem` (MiB) sizes host RAM; `autostart=0`
 * creates no VM; `isolation-worker=0` never registers the isolation service worker; `jit=0` (or `jit=1`) turns the
 * block translator off (on) in every VM.
 */
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { BrowserThreads, prepareBrowserThreads } from '../machine/browser-threads.ts';
import { Hypervisor, MAX_HOST_RAM_MIB, type NicConfig, type TabvisorApi } from '../machine/hypervisor.ts';
import { App } from './app.ts';
import { DefaultGuestLoader, type GuestImages } from './images.ts';
import { pageNetworkEnvironment } from '../machine/networks.ts';
import { diagnoseIsolation, installIsolationWorker } from './isolation.ts';
import { DiskPanel } from './disk-panel.ts';
import { PageStorage } from './page-storage.ts';

declare global {
  interface Window {
    /** The page API (README "The page API"). Undefined until the page is ready or when it cannot run VMs. */
    tabvisor?: TabvisorApi;
  }
}

/** Host RAM reserved when the URL does not say (lazily committed by the OS, so unused frames cost little). */
const DEFAULT_HOST_RAM_MIB = 1024;

function intParam(params: URLSearchParams, name: string, fallback: number): number {
  const text = params.get(name);
  return text === null || text.trim() === '' ? fallback : Number(text);
}

function showNotice(kind: 'error' | 'info', title: string, text: string): HTMLElement {
  const notice = document.createElement('div');
  notice.className = `notice ${kind}`;
  notice.id = 'notice';
  notice.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const heading = document.createElement('strong');
  heading.textContent = title;
  const body = document.createElement('p');
  body.textContent = text;
  notice.append(heading, body);
  document.body.prepend(notice);
  return notice;
}

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const base = new URL(import.meta.env.BASE_URL, location.href);
  const isolation = await diagnoseIsolation();
  if (!isolation.isolated) {
    if (params.get('isolation-worker') !== '0') {
      const result = await installIsolationWorker(new URL('coi-serviceworker.js', base));
      if (result === 'reloading') {
        showNotice(
          'info',
          'Enabling cross-origin isolation',
          'Reloading through the isolation service worker…',
        );
        return;
      }
    }
    showNotice('error', 'This page cannot run VMs yet', isolation.advice);
    document.body.dataset.isolation = 'missing';
    document.body.dataset.missingHeaders = isolation.missing.join('\n');
    return;
  }

  const defaults = { cpus: intParam(params, 'cpus', 2), memoryMiB: intParam(params, 'mem', 128) };
  const hostRamMiB = intParam(params, 'hostmem', Math.min(DEFAULT_HOST_RAM_MIB, MAX_HOST_RAM_MIB));
  // The initramfs is fetched only when a VM boots from it (not for VMs whose root is a disk).
  const guest = new DefaultGuestLoader(new URL('images/', base));
  const images = (_config: unknown, needs: { readonly initrd: boolean }): Promise<GuestImages> =>
    guest.load(needs);
  void guest.load({ initrd: false }).catch(() => {}); // every VM needs the kernel: fetch it while disks open
  // Disks: OPFS, or IndexedDB (`?storage=indexeddb`, or no OPFS sync handles); `?storage=none` attaches none.
  let storage: PageStorage | undefined;
  if (params.get('storage') !== 'none') {
    try {
      storage = await PageStorage.start(new URL('images/', base), params.get('storage'));
    } catch (error) {
      showNotice(
        'error',
        'VM disks are unavailable',
        `${String(error)}; VMs boot from the initramfs, without disks`,
      );
    }
  }
  let hv: Hypervisor;
  try {
    hv = new Hypervisor({
      hostRamMiB,
      threads: (label) => new BrowserThreads(label),
      prepareThreads: prepareBrowserThreads,
      // The app keeps no boot snapshots: every VM boots cold, so the images are loaded up front.
      images: async (config, needs) => {
        const loaded = await images(config, needs);
        return { bootargs: loaded.bootargs, images: loaded };
      },
      defaults,
      network: pageNetworkEnvironment(),
      disks: storage?.hook,
      jit: params.get('jit') === '0' ? false : params.get('jit') === '1' ? true : undefined,
    });
  } catch (error) {
    showNotice(
      'error',
      'Cannot reserve host RAM',
      `${String(error)} (the hostmem URL parameter sets it, in MiB)`,
    );
    return;
  }
  const app = new App(document.body, hv, defaults);
  const diskPanel = storage ? new DiskPanel(document.body, hv, storage) : undefined;
  const pageStorage = storage;
  const stopSaving = pageStorage ? hv.onChange(() => pageStorage.save(hv)) : () => {};
  window.tabvisor = hv;
  window.addEventListener('pagehide', () => {
    stopSaving(); // closing the page removes its VMs from the list, not from the saved configurations
    app.dispose();
    diskPanel?.dispose();
    void hv.dispose();
  });
  // The VMs of the last visit come back with their disks (the ones that were running start again).
  for (const saved of storage?.savedVms ?? []) {
    try {
      const config = {
        name: saved.name,
        cpus: saved.cpus,
        memoryMiB: saved.memoryMiB,
        nics: saved.nics as NicConfig[] | undefined,
        start: saved.running && params.get('autostart') !== '0',
      };
      await storage?.restore(saved, () => hv.createVM(config));
    } catch (error) {
      showNotice(
        'error',
        `VM ${saved.name} could not be restored`,
        error instanceof Error ? error.message : String(error),
      );
    }
  }
  if (params.get('autostart') !== '0' && (storage?.savedVms.length ?? 0) === 0) {
    try {
      // The default VM has one NIC: network 'default', access VLAN 1 (DHCP gives it 10.0.1.x).
      await hv.createVM({ ...defaults, nics: [{}] });
    } catch (error) {
      showNotice(
        'error',
        'The default VM did not start',
        error instanceof Error ? error.message : String(error),
      );
    }
  }
}

void main();
