/**
 * The limits of a VM's shape and of host RAM, and the check the create form and `createVM` apply. A module of
 * its own (no imports) so that code which only checks a configuration (the single-worker embed's page side)
 * does not bring in the VMM.
 */

/** The most vCPUs a VM may have (PLIC contexts, device tree and NR_CPUS in the default kernel). */
export const MAX_HARTS = 8;

/** A VM's shape when its configuration names none (the page VMM, the single-worker mode, the element). */
export const DEFAULT_CPUS = 2;
export const DEFAULT_MEMORY_MIB = 128;

/** The smallest and largest guest memory we accept, in MiB. */
export const MIN_MEMORY_MIB = 16;
export const MAX_MEMORY_MIB = 2048;

/** Largest host RAM: guest page tables hold host byte offsets as int32, so frames must lie below 2 GiB. */
export const MAX_HOST_RAM_MIB = 2048;

/**
 * Bytes per host RAM frame, as `FRAME_SIZE` in mem/host-ram.ts (a unit test checks they agree), for code that
 * reports host RAM without the VMM (the embed's page side).
 */
export const HOST_FRAME_BYTES = 4096;

/** Longest VM name. */
export const MAX_NAME_LENGTH = 40;

/**
 * Check a VM configuration for the create form and `createVM`: returns a sentence that names the field, the
 * limit and the value, or undefined when it is fine. Uses the same limits as the CLI (`validateVmShape` in vm.ts).
 */
export function checkVmConfig(
  config: { readonly name?: string; readonly cpus: number; readonly memoryMiB: number },
  freeMiB: number,
  takenNames: readonly string[] = [],
): string | undefined {
  const { name, cpus, memoryMiB } = config;
  if (name !== undefined) {
    if (name.trim() === '') return 'the name must not be empty';
    if (name.length > MAX_NAME_LENGTH) return `the name must have at most ${MAX_NAME_LENGTH} characters`;
    if (takenNames.includes(name)) return `a VM named "${name}" exists already; choose another name`;
  }
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_HARTS) {
    return `vCPUs must be a whole number from 1 to ${MAX_HARTS}, not ${cpus}`;
  }
  if (!Number.isInteger(memoryMiB) || memoryMiB < MIN_MEMORY_MIB || memoryMiB > MAX_MEMORY_MIB) {
    return `memory must be a whole number of MiB from ${MIN_MEMORY_MIB} to ${MAX_MEMORY_MIB}, not ${memoryMiB}`;
  }
  if (memoryMiB > freeMiB) {
    return `not enough host memory: ${memoryMiB} MiB asked, ${freeMiB} MiB free; give the VM less memory or delete a VM`;
  }
  return undefined;
}
