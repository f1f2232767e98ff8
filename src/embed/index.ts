/**
 * The tabvisor library (`import { createVM } from 'tabvisor'`): the page API of `window.tabvisor` on one shared
 * hypervisor per page, and the `<tabvisor-vm>` element, registered on import. Works with and without
 * cross-origin isolation ({@link embedMode}).
 */
import { setLibraryBase } from './assets.ts';
import { hypervisor } from './embed-hypervisor.ts';
import { defineTabvisorVm } from './tabvisor-vm-element.ts';
import type { TabvisorApi, TabvisorVm } from '../machine/hypervisor.ts';

export {
  bootSnapshotSaved,
  createVM,
  disposeHypervisor,
  embedMode,
  hypervisor,
  type EmbedMode,
} from './embed-hypervisor.ts';
export type { EmbedVmConfig } from './guest.ts';
export { TabvisorVmElement, defineTabvisorVm, modeLabel } from './tabvisor-vm-element.ts';
export type {
  ConsoleSize,
  HostRamStats,
  RunOptions,
  RunResult,
  TabvisorApi,
  TabvisorConsole,
  TabvisorVm,
  VcpuRunState,
  VcpuStats,
  VmConfig,
  VmState,
  VmStats,
} from '../machine/hypervisor.ts';

/** The VMs of the page's shared hypervisor, in creation order. */
export function vms(): readonly TabvisorVm[] {
  return hypervisor().vms;
}

/** The VM with this id or name. */
export function vm(idOrName: string): TabvisorVm | undefined {
  return hypervisor().vm(idOrName);
}

/** Be told when VMs are added, removed or change state. Returns unsubscribe. */
export const onChange: TabvisorApi['onChange'] = (listener) => hypervisor().onChange(listener);

/** Host RAM figures of the shared hypervisor. */
export const hostRam: TabvisorApi['hostRam'] = () => hypervisor().hostRam();

// Images and the isolation service worker sit next to this module (the library's entry), wherever it is served.
setLibraryBase(import.meta.url);

if (typeof customElements !== 'undefined') defineTabvisorVm();
