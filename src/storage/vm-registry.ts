/**
 * VM configurations kept across reloads (idb-keyval, one key per VM: `tabvisor/vm/<storageId>`), so the VM
 * list comes back with its disks. Each tab writes only its own VMs' keys, so tabs do not overwrite each
 * other's lists.
 */
import { del, get, getMany, keys, set } from 'idb-keyval';
import type { SavedDisk } from './vm-disks.ts';
import { VM_ID_PATTERN } from './storage-protocol.ts';

/** One VM as saved. */
export interface SavedVm {
  /** Names the VM's storage (OPFS `vms/<storageId>/`, keys `vm/<storageId>/`): unique across tabs. */
  readonly storageId: string;
  readonly name: string;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly disks: readonly SavedDisk[];
  /** Start it when the page loads again (it was running or paused). */
  readonly running: boolean;
  /** When it was created (restore order). */
  readonly createdAt: number;
  /** The VM's NICs as the hypervisor reported them (opaque here). */
  readonly nics?: readonly unknown[];
}

const PREFIX = 'tabvisor/vm/';

function isSavedVm(vm: unknown): vm is SavedVm {
  if (typeof vm !== 'object' || vm === null) return false;
  const v = vm as Record<string, unknown>;
  return (
    typeof v.storageId === 'string' &&
    VM_ID_PATTERN.test(v.storageId) &&
    typeof v.name === 'string' &&
    Number.isInteger(v.cpus) &&
    Number.isInteger(v.memoryMiB) &&
    Array.isArray(v.disks)
  );
}

/** Every saved VM, oldest first (entries that do not look like one are skipped). */
export async function loadSavedVms(): Promise<SavedVm[]> {
  const names = (await keys()).filter((k): k is string => typeof k === 'string' && k.startsWith(PREFIX));
  const values: unknown[] = await getMany(names);
  return values.filter(isSavedVm).sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
}

/** Save (or replace) one VM's configuration. */
export async function saveVm(vm: SavedVm): Promise<void> {
  await set(`${PREFIX}${vm.storageId}`, vm);
}

/** Forget a deleted VM's configuration. */
export async function forgetVm(storageId: string): Promise<void> {
  await del(`${PREFIX}${storageId}`);
}

/** The saved configuration of one VM, if any. */
export async function savedVm(storageId: string): Promise<SavedVm | undefined> {
  const value: unknown = await get(`${PREFIX}${storageId}`);
  return isSavedVm(value) ? value : undefined;
}
