/**
 * The parallel-mode hypervisor of embedded VMs (cross-origin isolated pages): the page VMM with one worker per
 * vCPU over one shared host RAM, as the app runs it. Its own chunk of the library, imported only when the page
 * is isolated: a page without isolation runs its VMs in VM-host workers and never downloads this VMM (or the
 * CPU, devices and network code it brings).
 */
import { BrowserThreads, prepareBrowserThreads } from '../machine/browser-threads.ts';
import { Hypervisor } from '../machine/hypervisor.ts';
import { pageNetworkEnvironment } from '../machine/networks.ts';
import { resolveGuest, type EmbedVmConfig } from './guest.ts';

/** The page's parallel hypervisor with `hostRamMiB` of host RAM reserved. */
export function createParallelHypervisor(hostRamMiB: number): Hypervisor {
  return new Hypervisor({
    hostRamMiB,
    threads: (label) => new BrowserThreads(label),
    prepareThreads: prepareBrowserThreads,
    network: pageNetworkEnvironment(),
    images: async (config) => {
      const { cpus = 2, memoryMiB = 128 } = config;
      return resolveGuest(config as EmbedVmConfig, cpus, memoryMiB);
    },
  });
}
