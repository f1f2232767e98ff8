import { readFile } from 'node:fs/promises';
import { maybeGunzip } from '../../src/machine/gzip.ts';
import type { Vm, VmSpec } from '../../src/machine/vm.ts';

const images = new URL('../../public/images/', import.meta.url);

/** A file of the default guest image (public/images), decompressed. */
export async function defaultImage(name: string): Promise<Uint8Array> {
  return maybeGunzip(new Uint8Array(await readFile(new URL(name, images))));
}

/** The default image's kernel command line (manifest.json): the shell on the virtio console, hvc1. */
export async function defaultBootargs(): Promise<string> {
  const manifest = JSON.parse(await readFile(new URL('manifest.json', images), 'utf8')) as {
    bootargs: string;
  };
  return manifest.bootargs;
}

/**
 * A spec that boots the default kernel and initramfs with `cpus` vCPUs and `memoryMiB` of RAM, with the
 * image's command line (or `bootargs`, e.g. `console=ttyS0` for the shell on the UART).
 */
export async function defaultSpec(cpus: number, memoryMiB = 64, bootargs?: string): Promise<VmSpec> {
  return {
    cpus,
    memoryMiB,
    kernel: await defaultImage('Image.gz'),
    kernelName: 'Image.gz',
    initrd: await defaultImage('initramfs.cpio.gz'),
    bootargs: bootargs ?? (await defaultBootargs()),
  };
}

/** A VM's console output, with a wait for text to appear in it. */
export interface ConsoleWatch {
  text(): string;
  waitFor(needle: string, timeoutMs?: number): Promise<void>;
  type(line: string): void;
}

/** Watch `vm`'s console from now on. */
export function watchConsole(vm: Vm): ConsoleWatch {
  let text = '';
  const decoder = new TextDecoder();
  vm.onOutput((bytes) => (text += decoder.decode(bytes, { stream: true })));
  return {
    text: () => text,
    waitFor: async (needle, timeoutMs = 60_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!text.includes(needle)) {
        if (Date.now() > deadline) throw new Error(`no '${needle}' in the console:\n${text.slice(-1500)}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
    type: (line) => vm.write(new TextEncoder().encode(line + '\n')),
  };
}

/**
 * Run a shell line on a guest console and return the text between `<tag>=` and `-END` it prints. The tag is
 * typed with an empty quote inside, so the echoed command line never matches.
 */
export async function ask(
  c: ConsoleWatch,
  tag: string,
  command: string,
  timeoutMs = 60_000,
): Promise<string> {
  const before = c.text().length;
  c.type(`echo ${tag.slice(0, 1)}''${tag.slice(1)}=$(${command})-END`);
  const pattern = new RegExp(`${tag}=([^\\r\\n]*)-END`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const match = pattern.exec(c.text().slice(before));
    if (match) return match[1];
    if (Date.now() > deadline) throw new Error(`no ${tag} answer:\n${c.text().slice(-1500)}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A shell line that waits (up to 30 s) for eth0 to get its DHCP lease, then prints its IPv4 address. */
export const WAIT_FOR_ADDRESS =
  "for i in $(seq 1 60); do ip -4 addr show eth0 | grep -q 'inet ' && break; sleep 0.5; done; " +
  "ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'";
