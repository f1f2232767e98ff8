/**
 * The parallel-mode hypervisor of embedded VMs (cross-origin isolated pages): the page VMM with one worker per
 * vCPU over one shared host RAM, as the app runs it. Its own chunk of the library, imported only when the page
 * is isolated: a page without isolation runs its VMs in VM-host workers and never downloads this VMM (or the
 * CPU, devices and network code it brings).
 */
import { BrowserThreads } from '../machine/browser-threads.ts';
import { Hypervisor } from '../machine/hypervisor.ts';
import { pageNetworkEnvironment } from '../machine/networks.ts';
import type { GuestBoot, VmConfig } from '../machine/hypervisor.ts';

/**
 * The page's parallel hypervisor with `hostRamMiB` of host RAM reserved; `guest` gives what a VM of `config`
 * boots (its images or boot snapshot), usually already on its way (see `ParallelHypervisor.createVM`).
 */
export function createParallelHypervisor(
  hostRamMiB: number,
  guest: (config: VmConfig) => Promise<GuestBoot>,
): Hypervisor {
  return new Hypervisor({
    hostRamMiB,
    threads: (label) => new BrowserThreads(label),
    // (vCPU workers are started ahead of need by the API in front of this VMM, before this chunk loads.)
    network: pageNetworkEnvironment(),
    images: guest,
  });
}
