/**
 * Network figures for `npm run bench`: two VMs (1 vCPU each) on one in-process switch (the page's code path
 * without the BroadcastChannel), addresses by DHCP. Ping round-trip time as the guest's ping reports it, and
 * TCP throughput of an `nc` stream: 10 MiB of frames into the receiving NIC (headers included), timed on the host.
 */
import { nodeThreads } from '../src/cli/node-threads.ts';
import { NetworkHub, resolveNic } from '../src/machine/networks.ts';
import { Vm } from '../src/machine/vm.ts';
import {
  ask,
  defaultSpec,
  watchConsole,
  WAIT_FOR_ADDRESS,
  type ConsoleWatch,
} from '../test/helpers/guest.ts';

/** Bytes sent per throughput run. */
const STREAM_BYTES = 10 << 20;

/**
 * The receiving guest's share of a ping: from an echo request leaving the switch into its NIC to its echo
 * reply entering the switch, per exchange (ms, high-resolution host clock). RTT minus this is the sender's
 * stack plus the host path both ways.
 */
function watchTurnaround(hub: NetworkHub, network: string, port: string): { take(): number[]; stop(): void } {
  const target = hub.switchOf(network).ports.find((p) => p.name === port);
  if (target === undefined) throw new Error(`no port ${port}`);
  const turns: number[] = [];
  let requestAt = -1;
  const icmpType = (frame: Uint8Array): number =>
    frame.length > 34 && frame[12] === 0x08 && frame[13] === 0x00 && frame[23] === 1 ? frame[34] : -1;
  const stop = target.capture((frame, direction) => {
    const type = icmpType(frame);
    if (direction === 'tx' && type === 8) requestAt = performance.now();
    else if (direction === 'rx' && type === 0 && requestAt >= 0) {
      turns.push(performance.now() - requestAt);
      requestAt = -1;
    }
  });
  return { take: () => turns.splice(0), stop };
}

/**
 * Median ping RTT (ms), the receiving guest's part of it (ms) and TCP throughput (MB/s) runs between two VMs on
 * one in-process switch.
 */
export async function nodeNetworkFigures(
  runs: number,
): Promise<{ rttMs: number[]; turnaroundMs: number[]; tcpMBps: number[] }> {
  const hub = new NetworkHub();
  const vms: Vm[] = [];
  const consoles: ConsoleWatch[] = [];
  for (const name of ['sender', 'receiver']) {
    const nic = hub.nic(
      `${name}/eth0`,
      resolveNic({ network: 'bench', mode: { kind: 'access', vlan: 1 } }, 0),
    );
    const vm = Vm.create({ ...(await defaultSpec(1, 64)), nics: [nic] }, nodeThreads);
    const console = watchConsole(vm);
    vm.start();
    vms.push(vm);
    consoles.push(console);
  }
  try {
    await Promise.all(consoles.map((c) => c.waitFor('# ', 60_000)));
    const [sender, receiver] = consoles;
    await ask(sender, 'ADDR', WAIT_FOR_ADDRESS);
    const target = await ask(receiver, 'ADDR', WAIT_FOR_ADDRESS);
    const rttMs: number[] = [];
    const turnaroundMs: number[] = [];
    const tcpMBps: number[] = [];
    await ask(sender, 'WARM', `ping -c 2 ${target} >/dev/null; echo warm`);
    const turnaround = watchTurnaround(hub, 'bench', 'receiver/eth0');
    for (let i = 0; i < runs; i++) {
      turnaround.take();
      const avg = await ask(
        sender,
        'RTT',
        `ping -c 10 -i 0.2 ${target} | sed -n 's|.*= [0-9.]*/\\([0-9.]*\\)/.*|\\1|p'`,
      );
      rttMs.push(Number(avg));
      const turns = turnaround.take();
      turnaroundMs.push(turns.reduce((sum, t) => sum + t, 0) / Math.max(1, turns.length));
      const port = 5000 + i;
      // The receiver discards the stream; the run ends when its NIC has taken STREAM_BYTES of frames (busybox
      // nc keeps the connection open after its input ends, so nothing in the guest marks the end).
      receiver.type(`nc -l -p ${port} > /dev/null`);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const rx0 = vms[1].nicStats()[0].rxBytes;
      const start = performance.now();
      const instret0 = vms.map((vm) => vm.stats().vcpus[0].instret);
      sender.type(
        `dd if=/dev/zero bs=65536 count=${(STREAM_BYTES >> 16) + 4} 2>/dev/null | nc ${target} ${port}`,
      );
      const deadline = Date.now() + Number(process.env.BENCH_NC_TIMEOUT_MS ?? 120_000);
      while (vms[1].nicStats()[0].rxBytes - rx0 < STREAM_BYTES) {
        if (Date.now() > deadline)
          throw new Error(
            `nc stream did not finish:\n${receiver.text().slice(-300)}\n--- sender:\n${sender.text().slice(-600)}`,
          );
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const seconds = (performance.now() - start) / 1000;
      if (process.env.BENCH_DEBUG) {
        const mips = vms.map((vm, k) =>
          ((vm.stats().vcpus[0].instret - instret0[k]) / seconds / 1e6).toFixed(0),
        );
        console.log(
          `stream ${seconds.toFixed(2)} s, guest MIPS sender/receiver ${mips.join('/')}`,
          vms.map((vm) => vm.nicStats()[0]),
        );
      }
      tcpMBps.push(STREAM_BYTES / 1e6 / seconds);
      // Interrupt both nc processes (Ctrl-C) and wait for the prompts.
      for (const c of [sender, receiver]) c.type('\x03');
      await Promise.all([sender, receiver].map((c) => ask(c, 'IDLE', 'echo idle', 20_000)));
    }
    turnaround.stop();
    return { rttMs, turnaroundMs, tcpMBps };
  } finally {
    await Promise.all(vms.map((vm) => vm.stop()));
    hub.dispose();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await nodeNetworkFigures(Number(process.env.BENCH_RUNS ?? 3)));
}
