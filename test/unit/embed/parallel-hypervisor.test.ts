import { describe, expect, it } from 'vitest';
import { ParallelHypervisor } from '../../../src/embed/embed-hypervisor.ts';
import type { GuestBoot, Hypervisor, TabvisorVm, VmConfig } from '../../../src/machine/hypervisor.ts';

type GuestOf = (config: VmConfig) => Promise<GuestBoot>;

/** A guest resolver that counts its calls. */
function countingGuest() {
  const calls: VmConfig[] = [];
  const guest: GuestOf = (config) => {
    calls.push(config);
    return Promise.resolve({
      bootargs: `boot ${calls.length}`,
      images: { kernel: new Uint8Array(1), kernelName: 'Image' },
    });
  };
  return { guest, calls };
}

/**
 * A stand-in for the page VMM: VMs by name, listeners, host RAM figures. Its createVM gets the guest from the
 * function the API's loader passed it (as the real VMM's `images` option does) and names it in `bootargs`.
 */
function fakeVmm() {
  const listeners = new Set<() => void>();
  const vms: TabvisorVm[] = [];
  let disposed = 0;
  let guestOf: GuestOf | undefined;
  const hv = {
    get vms() {
      return vms;
    },
    createVM: async (config: VmConfig = {}) => {
      const guest = await guestOf?.(config);
      const vm = {
        name: config.name ?? 'vm-1',
        id: String(vms.length + 1),
        bootargs: guest?.bootargs,
      } as unknown as TabvisorVm;
      vms.push(vm);
      for (const listener of listeners) listener();
      return vm;
    },
    vm: (name: string) => vms.find((vm) => vm.name === name),
    hostRam: () => ({ totalFrames: 10, freeFrames: 4, committedFrames: 6, frameBytes: 4096 }),
    onChange: (listener: () => void) => {
      const own = (): void => listener();
      listeners.add(own);
      return () => listeners.delete(own);
    },
    networks: () => ['lab'],
    network: () => undefined,
    dispose: async () => {
      disposed++;
    },
  };
  const load = (guest: GuestOf): Hypervisor => {
    guestOf = guest;
    return hv as unknown as Hypervisor;
  };
  return { load, listeners, disposed: () => disposed };
}

describe('the parallel-mode API while its VMM chunk loads', () => {
  it('has no VMs and all host RAM free until the VMM is there, then is the VMM', async () => {
    const vmm = fakeVmm();
    let loaded!: () => void;
    const api = new ParallelHypervisor(
      (guest) => new Promise((resolve) => (loaded = () => resolve(vmm.load(guest)))),
      countingGuest().guest,
    );
    expect(api.vms).toEqual([]);
    expect(api.vm('vm-1')).toBeUndefined();
    expect(api.networks()).toEqual([]);
    const ram = api.hostRam();
    expect(ram.freeFrames).toBe(ram.totalFrames);
    expect(ram.totalFrames * ram.frameBytes).toBe(1024 << 20);
    const early: string[] = [];
    api.onChange(() => early.push('kept'));
    const off = api.onChange(() => early.push('dropped'));
    off();
    const created = api.createVM({ name: 'a' });
    loaded();
    const vm = await created;
    expect(vm.name).toBe('a');
    expect(api.vms).toEqual([vm]);
    expect(api.vm('a')).toBe(vm);
    expect(api.hostRam().freeFrames).toBe(4);
    expect(early).toEqual(['kept']); // attached once the VMM was there, told about the new VM
    await api.dispose();
    expect(vmm.disposed()).toBe(1);
  });

  it('a listener added before the load and removed after it is removed from the VMM', async () => {
    const vmm = fakeVmm();
    const api = new ParallelHypervisor(async (guest) => vmm.load(guest), countingGuest().guest);
    const off = api.onChange(() => undefined);
    await api.createVM();
    expect(vmm.listeners.size).toBe(1);
    off();
    expect(vmm.listeners.size).toBe(0);
  });

  it('a failed load fails createVM with a message naming the chunk, and the next createVM loads again', async () => {
    const vmm = fakeVmm();
    let attempts = 0;
    const api = new ParallelHypervisor(async (guest) => {
      attempts++;
      if (attempts < 3) throw new TypeError('Failed to fetch dynamically imported module');
      return vmm.load(guest);
    }, countingGuest().guest);
    // The load started with the API; the first createVM waits for it and gets its failure.
    await expect(api.createVM()).rejects.toThrow(
      /could not load its VM monitor \(the parallel-hypervisor chunk.*\): Failed to fetch/,
    );
    expect(attempts).toBe(1);
    await expect(api.createVM()).rejects.toThrow(/parallel-hypervisor/);
    expect(attempts).toBe(2);
    const vm = await api.createVM({ name: 'b' });
    expect(vm.name).toBe('b');
    expect(attempts).toBe(3);
  });

  it('resolves a VM’s guest and starts its vCPU workers while the VMM loads; the VMM boots that same guest', async () => {
    const vmm = fakeVmm();
    const { guest, calls } = countingGuest();
    let loaded!: () => void;
    const prepared: number[] = [];
    const api = new ParallelHypervisor(
      (g) => new Promise((resolve) => (loaded = () => resolve(vmm.load(g)))),
      guest,
      (count) => prepared.push(count),
    );
    const config = { name: 'early', cpus: 3 };
    const created = api.createVM(config);
    expect(calls).toEqual([config]); // before the VMM is there
    expect(prepared).toEqual([3]); // and its vCPU workers are loading
    loaded();
    const vm = (await created) as unknown as { bootargs: string };
    expect(vm.bootargs).toBe('boot 1');
    expect(calls).toHaveLength(1); // not resolved a second time
    // A VM created with the same config object later resolves its own guest.
    const again = (await api.createVM(config)) as unknown as { bootargs: string };
    expect(again.bootargs).toBe('boot 2');
  });
});
