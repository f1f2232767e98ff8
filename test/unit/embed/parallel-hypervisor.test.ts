import { describe, expect, it } from 'vitest';
import { ParallelHypervisor } from '../../../src/embed/embed-hypervisor.ts';
import type { Hypervisor, TabvisorVm } from '../../../src/machine/hypervisor.ts';

/** A stand-in for the page VMM: VMs by name, listeners, host RAM figures. */
function fakeVmm() {
  const listeners = new Set<() => void>();
  const vms: TabvisorVm[] = [];
  let disposed = 0;
  const hv = {
    get vms() {
      return vms;
    },
    createVM: async (config?: { name?: string }) => {
      const vm = { name: config?.name ?? 'vm-1', id: String(vms.length + 1) } as TabvisorVm;
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
  return { hv: hv as unknown as Hypervisor, listeners, disposed: () => disposed };
}

describe('the parallel-mode API while its VMM chunk loads', () => {
  it('has no VMs and all host RAM free until the VMM is there, then is the VMM', async () => {
    const vmm = fakeVmm();
    let loaded!: (hv: Hypervisor) => void;
    const api = new ParallelHypervisor(() => new Promise((resolve) => (loaded = resolve)));
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
    loaded(vmm.hv);
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
    const api = new ParallelHypervisor(async () => vmm.hv);
    const off = api.onChange(() => undefined);
    await api.createVM();
    expect(vmm.listeners.size).toBe(1);
    off();
    expect(vmm.listeners.size).toBe(0);
  });

  it('a failed load fails createVM with a message naming the chunk, and the next createVM loads again', async () => {
    const vmm = fakeVmm();
    let attempts = 0;
    const api = new ParallelHypervisor(async () => {
      attempts++;
      if (attempts < 3) throw new TypeError('Failed to fetch dynamically imported module');
      return vmm.hv;
    });
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
});
