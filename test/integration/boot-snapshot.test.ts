import { afterAll, describe, expect, it } from 'vitest';
import { nodeThreads } from '../../src/cli/node-threads.ts';
import { Hypervisor, type BootImages, type TabvisorVm } from '../../src/machine/hypervisor.ts';
import type { NicConfig } from '../../src/machine/networks.ts';
import { decodeSnapshot, encodeSnapshot } from '../../src/machine/snapshot.ts';
import { defaultSpec } from '../helpers/guest.ts';

/**
 * The page VMM in Node (worker_threads vCPUs, the page's NetworkHub with its DHCP servers in-process), as the
 * embed uses it: VMs start from a boot snapshot when their GuestBoot carries one.
 */
const spec = await defaultSpec(1, 64);
const images: BootImages = { kernel: spec.kernel, kernelName: spec.kernelName, initrd: spec.initrd };
let imageLoads = 0;
let snapshot: Uint8Array | Blob | undefined;
const hv = new Hypervisor({
  hostRamMiB: 512,
  threads: () => nodeThreads,
  images: async () => ({
    bootargs: spec.bootargs,
    images: async () => {
      imageLoads++;
      return images;
    },
    snapshot,
  }),
});

afterAll(() => hv.dispose());

const lan: NicConfig = { network: 'lab', mode: { kind: 'access', vlan: 10 } };

/**
 * eth0's IPv4 address once the card is the VM's own (its MAC is `mac`: a restored guest first re-probes the card)
 * and DHCP gave it an address.
 */
async function addressOf(vm: TabvisorVm, mac: string): Promise<string> {
  const { output } = await vm.run(
    `for i in $(seq 1 80); do [ "$(cat /sys/class/net/eth0/address 2>/dev/null)" = ${mac} ] && ip -4 addr show eth0 | grep -q 'inet ' && break; sleep 0.25; done; ` +
      "ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'",
    { timeoutMs: 60_000 },
  );
  return output.trim();
}

describe('boot snapshots in the page VMM (Node)', () => {
  it('vm.run types a command far wider than the 80-column console and returns exactly its output and status', async () => {
    const vm = await hv.createVM({ name: 'runner', cpus: 1, memoryMiB: 64 });
    const words = Array.from({ length: 30 }, (_, i) => `w${i}-${'x'.repeat(i % 5)}`);
    const command = `for w in ${words.join(' ')}; do echo "$w"; done | tail -n 3; printf 'no newline'; (exit 7)`;
    expect(command.length).toBeGreaterThan(200);
    expect(await vm.run(command, { timeoutMs: 60_000 })).toEqual({
      output: `${words.slice(-3).join('\n')}\nno newline`,
      exitStatus: 7,
    });
    // A trailing comment and a trailing `&` stay inside the command.
    expect(await vm.run('echo done # a comment')).toEqual({ output: 'done\n', exitStatus: 0 });
    expect(await vm.run('true &')).toEqual({ output: '', exitStatus: 0 });
    // A console so narrow that the line editor wraps even the short marker line, and one without echo.
    vm.console.resize(9, 24);
    expect(await vm.run('echo; echo narrow')).toEqual({ output: '\nnarrow\n', exitStatus: 0 });
    vm.console.resize(80, 24);
    await vm.run('stty -echo');
    expect(await vm.run('echo quiet; (exit 4)')).toEqual({ output: 'quiet\n', exitStatus: 4 });
    await vm.run('stty echo');
    expect(await vm.run('echo loud')).toEqual({ output: 'loud\n', exitStatus: 0 });
    await vm.delete();
  }, 120_000);

  it("a VM restored from a boot snapshot shows the snapshot's prompt before its guest runs and takes a command at once; an older snapshot without that line gets a fresh prompt", async () => {
    const origin = await hv.createVM({ name: 'prompted', cpus: 1, memoryMiB: 64 });
    await origin.run('true');
    const taken = await origin.snapshot();
    await origin.delete();
    const screen = decodeSnapshot(taken).screen;
    expect(screen).toMatch(/:\/root# $/);

    snapshot = taken;
    const restored = await hv.createVM({ name: 'restored', cpus: 1, memoryMiB: 64, start: false });
    expect(restored.stats().bootedFrom).toBe('snapshot');
    expect(restored.console.transcript()).toBe(screen); // shown before a single guest instruction ran
    await restored.start();
    expect(await restored.run('echo at-$((40+2))')).toEqual({ output: 'at-42\n', exitStatus: 0 });
    // No Enter was typed for it: the only prompts are the restored one and those after each command's lines.
    expect(restored.console.transcript().startsWith(`${screen}{ echo at-`)).toBe(true);
    await restored.delete();

    const { screen: _dropped, ...older } = decodeSnapshot(taken);
    snapshot = encodeSnapshot(older);
    const fresh = await hv.createVM({ name: 'older', cpus: 1, memoryMiB: 64 });
    expect(fresh.stats().bootedFrom).toBe('snapshot');
    await fresh.console.waitFor(/# $/, 30_000); // the Enter the VMM typed made the shell print one
    expect(await fresh.run('echo older')).toEqual({ output: 'older\n', exitStatus: 0 });
    await fresh.delete();
    snapshot = undefined;
  }, 120_000);

  it('two VMs with NICs restored from one snapshot take their own MACs and DHCP addresses, ping each other, and load no images', async () => {
    const loadsBefore = imageLoads;
    const origin = await hv.createVM({ name: 'origin', cpus: 1, memoryMiB: 64, nics: [lan] });
    expect(origin.stats().bootedFrom).toBe('cold');
    expect(imageLoads).toBe(loadsBefore + 1);
    const originMac = origin.nics![0].mac;
    // The worst case for clones: the snapshot holds a guest that already has its DHCP lease.
    const originIp = await addressOf(origin, originMac);
    expect(originIp).toMatch(/^10\.0\.10\.1\d\d$/);
    // As the embed stores it: a Blob, whose pages each clone's vCPU threads read and copy.
    snapshot = new Blob([new Uint8Array(await origin.snapshot())]);

    const [a, b] = await Promise.all([
      hv.createVM({ name: 'clone-a', cpus: 1, memoryMiB: 64, nics: [lan] }),
      hv.createVM({ name: 'clone-b', cpus: 1, memoryMiB: 64, nics: [lan] }),
    ]);
    expect([a.stats().bootedFrom, b.stats().bootedFrom]).toEqual(['snapshot', 'snapshot']);
    expect(imageLoads).toBe(loadsBefore + 1); // a start from the snapshot fetches and unpacks no kernel
    const macs = [originMac, a.nics![0].mac, b.nics![0].mac];
    expect(new Set(macs).size).toBe(3);
    const [ipA, ipB] = await Promise.all([addressOf(a, macs[1]), addressOf(b, macs[2])]);
    expect(new Set([originIp, ipA, ipB]).size).toBe(3);
    for (const ip of [ipA, ipB]) expect(ip).toMatch(/^10\.0\.10\.1\d\d$/);
    // The guest kernel uses the new MAC, not the one in the snapshot's RAM.
    expect((await a.run('cat /sys/class/net/eth0/address')).output).toBe(`${macs[1]}\n`);
    const ping = (from: TabvisorVm, to: string) => from.run(`ping -c 2 -W 3 ${to} >/dev/null`);
    expect((await ping(a, ipB)).exitStatus).toBe(0);
    expect((await ping(b, ipA)).exitStatus).toBe(0);
    expect((await ping(a, originIp)).exitStatus).toBe(0);
    // The switch learned each MAC on its own port.
    const table = hv.network('lab')!.macTable();
    for (const [i, port] of ['origin/eth0', 'clone-a/eth0', 'clone-b/eth0'].entries())
      expect(table.filter((m) => m.port === port).map((m) => m.mac)).toEqual([macs[i]]);
    // The DHCP server leased one address per MAC.
    const leases = hv.network('lab')!.dhcp()[0].leases;
    expect(new Set(leases.map((l) => l.mac))).toEqual(new Set(macs));

    // A guest reboot boots cold: now the clone loads the images.
    a.console.write('reboot\n');
    await expect.poll(() => a.stats().bootedFrom, { timeout: 60_000 }).toBe('cold');
    await a.console.waitFor('Linux version', 90_000);
    await a.console.waitFor(/# $/, 90_000);
    expect(imageLoads).toBe(loadsBefore + 2);
    await Promise.all([origin.delete(), a.delete(), b.delete()]);
  }, 240_000);
});
