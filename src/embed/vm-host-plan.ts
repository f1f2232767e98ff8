/**
 * What a single-worker VM host is told in its worker's name, so that it can read its guest (boot snapshot,
 * manifest) and create and start its VM as soon as its first module runs, before any message from the page can
 * reach it (a message waits until the page's thread is free, see vm-host.worker.ts). The name is a label for
 * people (devtools) and, after its last newline, the plan as JSON (which has no raw newline). Type imports
 * only: the worker's small entry module reads it.
 */
import type { VmConfig } from '../machine/hypervisor.ts';
import type { EmbedVmConfig, GuestBase } from './guest.ts';

/** A VM the host creates on its own. JSON-safe. */
export interface HostPlan {
  /** The page's id of the VM. */
  readonly id: string;
  /** Its whole configuration, shape included (as `VmHostApi.create` gets it). */
  readonly config: EmbedVmConfig & Required<Pick<VmConfig, 'name' | 'cpus' | 'memoryMiB'>>;
  /** Where the config's URLs resolve (the page's). */
  readonly base: GuestBase;
}

/** The worker name for a host labelled `label` (with a plan, when given). */
export function hostWorkerName(label: string, plan?: HostPlan): string {
  return plan ? `${label}\n${JSON.stringify(plan)}` : label;
}

/** The plan in a host worker's `name`, or undefined (none, or not one this version wrote). */
export function hostPlanOf(name: string): HostPlan | undefined {
  const at = name.lastIndexOf('\n');
  if (at < 0) return undefined;
  try {
    const plan = JSON.parse(name.slice(at + 1)) as Partial<HostPlan> | null;
    const config = plan?.config;
    const base = plan?.base;
    if (
      typeof plan?.id !== 'string' ||
      typeof config?.name !== 'string' ||
      typeof config.cpus !== 'number' ||
      typeof config.memoryMiB !== 'number' ||
      typeof base?.pageUrl !== 'string' ||
      typeof base.defaultImage !== 'string'
    ) {
      return undefined;
    }
    return plan as HostPlan;
  } catch {
    return undefined;
  }
}
