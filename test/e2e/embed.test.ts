import { rmSync } from 'node:fs';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { browserAvailable, buildApp, launchChromium, serveApp } from '../helpers/browser.ts';

const enabled = browserAvailable();
/** Longest the example page's VMs may take to reach their shells on a loaded 2-core machine. */
const READY_TIMEOUT_MS = 90_000;

/** Wait until both `<tabvisor-vm>` elements of the example page have a VM; returns their modes. */
async function waitForVms(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const elements = [...document.querySelectorAll('tabvisor-vm')];
    await Promise.all(elements.map((el) => el.ready));
    return elements.map((el) => el.mode);
  });
}

/** `el.run(command)` on the element with this id. */
function run(page: Page, id: string, command: string): Promise<{ output: string; exitStatus: number }> {
  return page.evaluate(
    async ([elementId, text]) => {
      const el = document.getElementById(elementId) as HTMLElementTagNameMap['tabvisor-vm'];
      return el.run(text, { timeoutMs: 90_000 });
    },
    [id, command] as const,
  );
}

/** Each element's `data-snapshot`: `cold`, `saved` (a cold boot stored its boot snapshot) or `restored`. */
function snapshotStates(page: Page): Promise<(string | undefined)[]> {
  return page.evaluate(() => [...document.querySelectorAll('tabvisor-vm')].map((el) => el.dataset.snapshot));
}

/** Wait until every element's VM has run a first command (`true`). */
function usableShells(page: Page): Promise<void> {
  return page.evaluate(async () => {
    const elements = [...document.querySelectorAll('tabvisor-vm')];
    await Promise.all(elements.map((el) => el.run('true', { timeoutMs: 90_000 })));
  });
}

/**
 * The form of each boot snapshot record in the embed's IndexedDB store (idb-keyval's default `keyval-store`):
 * `blob` or `bytes`; with `to-bytes`, records holding a Blob are rewritten with its bytes (the older form).
 */
function snapshotRecords(page: Page, action: 'read' | 'to-bytes'): Promise<string[]> {
  return page.evaluate(async (mode) => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const open = indexedDB.open('keyval-store');
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const done = (request: IDBRequest | IDBTransaction) =>
      new Promise<void>((resolve, reject) => {
        if (request instanceof IDBTransaction) request.oncomplete = () => resolve();
        else request.onsuccess = () => resolve();
        request.onerror = () => reject(request.error);
      });
    const read = db.transaction('keyval').objectStore('keyval');
    const keys = read.getAllKeys();
    const values = read.getAll();
    await done(values);
    const forms: string[] = [];
    const rewrites: [IDBValidKey, unknown][] = [];
    for (const [i, value] of (
      values.result as { identity?: string; blob?: Blob; bytes?: Uint8Array }[]
    ).entries()) {
      if (typeof value?.identity !== 'string') continue;
      forms.push(value.blob instanceof Blob ? 'blob' : value.bytes instanceof Uint8Array ? 'bytes' : 'other');
      if (mode === 'to-bytes' && value.blob instanceof Blob)
        rewrites.push([
          keys.result[i],
          { identity: value.identity, bytes: new Uint8Array(await value.blob.arrayBuffer()) },
        ]);
    }
    if (rewrites.length > 0) {
      const tx = db.transaction('keyval', 'readwrite');
      for (const [key, value] of rewrites) tx.objectStore('keyval').put(value, key);
      await done(tx);
    }
    db.close();
    return forms;
  }, action);
}

/** Remove every `<tabvisor-vm>` and wait until the page has no workers left. */
async function removeAllAndCountWorkers(page: Page): Promise<number> {
  await page.evaluate(() => {
    for (const el of document.querySelectorAll('tabvisor-vm')) el.remove();
  });
  await expect.poll(() => page.workers().length, { timeout: 10_000 }).toBe(0);
  return page.workers().length;
}

describe.skipIf(!enabled)('<tabvisor-vm> on the example docs page in Chromium', () => {
  let outDir = '';
  let isolated: { url: string; close: () => Promise<void> } | undefined;
  let plain: { url: string; close: () => Promise<void> } | undefined;
  let browser: { context: BrowserContext; close: () => Promise<void> } | undefined;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    outDir = await buildApp();
    isolated = await serveApp(outDir, true);
    plain = await serveApp(outDir, false);
    browser = await launchChromium();
  }, READY_TIMEOUT_MS);

  afterAll(async () => {
    await browser?.close();
    await isolated?.close();
    await plain?.close();
    if (outDir) rmSync(outDir, { recursive: true, force: true });
  });

  async function open(url: string): Promise<Page> {
    const page = await browser!.context.newPage();
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    await page.goto(`${url}examples/`);
    return page;
  }

  /** Remove the example's elements and add one `<tabvisor-vm>` with this id and these attributes. */
  function onlyElement(page: Page, id: string, attributes: Record<string, string>): Promise<void> {
    return page.evaluate(
      ([elementId, attrs]) => {
        for (const el of document.querySelectorAll('tabvisor-vm')) el.remove();
        const el = document.createElement('tabvisor-vm');
        el.id = elementId;
        for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
        document.body.append(el);
      },
      [id, attributes] as const,
    );
  }

  it('with isolation: two tags boot two VMs, one worker per vCPU, and vm.run returns output and exit status', async () => {
    const page = await open(isolated!.url);
    const started = Date.now();
    expect(await waitForVms(page)).toEqual(['parallel', 'parallel']);
    const sample = await run(page, 'first', 'uname -s; nproc');
    console.log(`isolated, cold: page load to first run done ${Date.now() - started} ms`);
    expect(sample).toEqual({ output: 'Linux\n2\n', exitStatus: 0 });
    expect(await run(page, 'second', 'echo $((6 * 7))')).toEqual({ output: '42\n', exitStatus: 0 });
    const failed = await run(page, 'first', 'ls /nonexistent');
    expect(failed.exitStatus).not.toBe(0);
    expect(failed.output).toContain('No such file');
    // A "run" button beside a sample shows the output (the page wires it to el.run).
    await page.locator('.sample button').first().click();
    await expect
      .poll(() => page.locator('.sample output').first().textContent(), { timeout: 60_000 })
      .toContain('(exit status 0)');
    // The toolbar says how the VMs run; 2 + 1 vCPU workers.
    const labels = await page.evaluate(() =>
      [...document.querySelectorAll('tabvisor-vm')].map(
        (el) => el.shadowRoot?.querySelector('.mode')?.textContent,
      ),
    );
    expect(labels).toEqual(['parallel (2 workers)', 'parallel (1 workers)']);
    expect(page.workers()).toHaveLength(3);
    // The console is an xterm in the element's shadow root, showing the guest's shell.
    const screen = await page.evaluate(
      () => document.getElementById('first')?.shadowRoot?.querySelector('.xterm-rows')?.textContent ?? '',
    );
    expect(screen).toContain('# ');
    // Each cold boot saved a boot snapshot (IndexedDB) at its first prompt, before the first command was typed.
    expect(await snapshotStates(page)).toEqual(['saved', 'saved']);
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    await page.close();
    expect(pageErrors).toEqual([]);
  });

  it('with isolation: the next page load starts both VMs from their boot snapshots', async () => {
    // How fast is a figure of `npm run bench` (bench/embed.ts), not an assertion here.
    const page = await open(isolated!.url);
    await usableShells(page);
    expect(await snapshotStates(page)).toEqual(['restored', 'restored']);
    expect(await run(page, 'first', 'uname -s; nproc')).toEqual({ output: 'Linux\n2\n', exitStatus: 0 });
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    // Boot snapshots are stored as Blobs (read off the main thread). Records in the older form (the bytes
    // themselves) are still used: rewrite them so, and the next load restores from them too.
    expect(await snapshotRecords(page, 'to-bytes')).toEqual(['blob', 'blob']);
    await page.close();
    const again = await open(isolated!.url);
    await usableShells(again);
    expect(await snapshotStates(again)).toEqual(['restored', 'restored']);
    expect(await snapshotRecords(again, 'read')).toEqual(['bytes', 'bytes']);
    expect(await removeAllAndCountWorkers(again)).toBe(0);
    await again.close();
    expect(pageErrors).toEqual([]);
  });

  it('without COOP/COEP: each VM runs in one worker (all vCPUs time-sliced), the guest sees the same CPUs, and vm.run works', async () => {
    const page = await open(plain!.url);
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);
    const started = Date.now();
    expect(await waitForVms(page)).toEqual(['single-worker', 'single-worker']);
    expect(await run(page, 'first', 'uname -s; nproc')).toEqual({ output: 'Linux\n2\n', exitStatus: 0 });
    console.log(`not isolated, cold: page load to first run done ${Date.now() - started} ms`);
    expect(await run(page, 'second', 'echo $((6 * 7)); false')).toEqual({ output: '42\n', exitStatus: 1 });
    const labels = await page.evaluate(() =>
      [...document.querySelectorAll('tabvisor-vm')].map(
        (el) => el.shadowRoot?.querySelector('.mode')?.textContent,
      ),
    );
    expect(labels).toEqual(['single worker', 'single worker']);
    expect(page.workers()).toHaveLength(2);
    expect(page.workers().every((w) => w.url().includes('vm-host.worker'))).toBe(true);
    expect(await snapshotStates(page)).toEqual(['saved', 'saved']);
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    await page.close();
    expect(pageErrors).toEqual([]);
  });

  it('without COOP/COEP: the next page load starts from the boot snapshots in single-worker mode', async () => {
    const page = await open(plain!.url);
    await usableShells(page);
    expect(await snapshotStates(page)).toEqual(['restored', 'restored']);
    expect(await run(page, 'first', 'nproc')).toEqual({ output: '2\n', exitStatus: 0 });
    // The element's terminal tells the guest in the worker its size, and again when the element is resized.
    const size = () =>
      page.evaluate(() =>
        document.querySelector<HTMLElementTagNameMap['tabvisor-vm']>('#first')!.vm!.console.size(),
      );
    const rowsShown = () =>
      page.evaluate(
        () => document.getElementById('first')!.shadowRoot!.querySelector('.xterm-rows')!.childElementCount,
      );
    const before = await size();
    expect(before.rows).toBe(await rowsShown());
    expect(await run(page, 'first', 'stty size')).toEqual({
      output: `${before.rows} ${before.cols}\n`,
      exitStatus: 0,
    });
    await page.evaluate(() => {
      document.getElementById('first')!.style.height = '200px';
    });
    await expect.poll(async () => (await size()).rows).toBeLessThan(before.rows);
    const after = await size();
    expect(after.rows).toBe(await rowsShown());
    expect(await run(page, 'first', 'stty size')).toEqual({
      output: `${after.rows} ${after.cols}\n`,
      exitStatus: 0,
    });
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    await page.close();
    expect(pageErrors).toEqual([]);
  });

  it('the terminal code loads after the VMs; when it fails to load, the element says so beside a VM that still runs, and a reload loads it', async () => {
    const page = await browser!.context.newPage();
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    // The page's first chunk does not hold xterm.js: it is fetched once the VMs are there.
    const scripts: string[] = [];
    page.on('request', (request) => {
      if (request.resourceType() === 'script') scripts.push(new URL(request.url()).pathname);
    });
    let refused = 0;
    await page.route('**/terminal-pane-*.js', (route) => {
      refused++;
      return route.abort('connectionrefused');
    });
    await page.goto(`${isolated!.url}examples/`);
    // The VMs do not need their terminal: they are ready, and run commands.
    expect(await run(page, 'second', 'echo ok')).toEqual({ output: 'ok\n', exitStatus: 0 });
    await expect.poll(() => refused, { timeout: 30_000 }).toBeGreaterThan(0);
    expect(scripts.some((path) => /\/terminal-pane-[^/]*\.js$/.test(path))).toBe(true);
    const shown = (): Promise<{ error: string; terminal: boolean; state: string | undefined }[]> =>
      page.evaluate(() =>
        [...document.querySelectorAll('tabvisor-vm')].map((el) => ({
          error: el.shadowRoot?.querySelector('.error')?.textContent ?? '',
          terminal: Boolean(el.shadowRoot?.querySelector('.xterm')),
          state: el.vm?.state,
        })),
      );
    await expect
      .poll(async () => (await shown()).every((el) => el.error !== ''), { timeout: 30_000 })
      .toBe(true);
    for (const el of await shown()) {
      expect(el.error).toContain("the terminal's code could not be loaded");
      expect(el.error).toContain('reload the page');
      expect(el.terminal).toBe(false);
      expect(el.state).toBe('running');
    }
    // Served again: a reload loads it (a failed module import may stay failed for the page's life).
    await page.unroute('**/terminal-pane-*.js');
    await page.reload();
    expect(await run(page, 'second', 'echo ok')).toEqual({ output: 'ok\n', exitStatus: 0 });
    await expect
      .poll(async () => (await shown()).map((el) => el.terminal), { timeout: 30_000 })
      .toEqual([true, true]);
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    await page.close();
    expect(pageErrors).toEqual([]);
  });

  it('the terminal is set up once its VM exists, and shows what the VM printed before; a VM that cannot be created leaves its error and no terminal', async () => {
    const page = await browser!.context.newPage();
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    // The guest's manifest is held back: no VM can be created before it arrives.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route('**/images/manifest.json', async (route) => {
      await held;
      await route.continue();
    });
    await page.goto(`${plain!.url}examples/`);
    const terminals = (): Promise<{ terminal: boolean; vm: boolean }[]> =>
      page.evaluate(() =>
        [...document.querySelectorAll('tabvisor-vm')].map((el) => ({
          terminal: Boolean(el.shadowRoot?.querySelector('.xterm')),
          vm: el.vm !== undefined,
        })),
      );
    // Nothing to show yet: no VM, so no terminal either.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await terminals()).toEqual([
      { terminal: false, vm: false },
      { terminal: false, vm: false },
    ]);
    release();
    expect(await run(page, 'second', 'echo ok')).toEqual({ output: 'ok\n', exitStatus: 0 });
    await expect.poll(terminals, { timeout: 30_000 }).toEqual([
      { terminal: true, vm: true },
      { terminal: true, vm: true },
    ]);
    // The pane came after the command ran, and shows it (replayed from the console's transcript).
    await expect
      .poll(
        () =>
          page.evaluate(
            () =>
              document.getElementById('second')?.shadowRoot?.querySelector('.xterm-rows')?.textContent ?? '',
          ),
        { timeout: 30_000 },
      )
      .toContain('ok');
    await page.unroute('**/images/manifest.json');
    await page.route('**/no-such-image/**', (route) => route.fulfill({ status: 404, body: 'not here' }));
    const failure = await page.evaluate(async () => {
      const el = document.createElement('tabvisor-vm');
      el.id = 'broken';
      el.setAttribute('image', '/no-such-image/manifest.json');
      el.setAttribute('cpus', '1');
      el.setAttribute('memory', '64');
      document.body.append(el);
      const why = await el.ready.then(
        () => 'ready',
        (error: unknown) => String(error),
      );
      return {
        why,
        terminal: Boolean(el.shadowRoot?.querySelector('.xterm')),
        error: el.shadowRoot?.querySelector('.error')?.textContent ?? '',
      };
    });
    expect(failure.why).toMatch(/404/);
    expect(failure.error).toMatch(/404/);
    expect(failure.terminal).toBe(false);
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    await page.close();
    expect(pageErrors).toEqual([]);
  });

  for (const [mode, url] of [
    ['with isolation', () => isolated!.url],
    ['without COOP/COEP', () => plain!.url],
  ] as const) {
    it(`${mode}: a corrupt snapshot file falls back to a cold boot with a note on the console`, async () => {
      const page = await open(url());
      // The snapshot is not one. Without isolation the VM's worker fetches it, finds it unusable and boots cold
      // with the images the page serves it.
      await onlyElement(page, 'broken', { cpus: '1', memory: '64', snapshot: '/images/manifest.json' });
      expect(await run(page, 'broken', 'echo ok')).toEqual({ output: 'ok\n', exitStatus: 0 });
      const transcript = await page.evaluate(
        () =>
          (
            document.getElementById('broken') as HTMLElementTagNameMap['tabvisor-vm']
          ).vm?.console.transcript() ?? '',
      );
      expect(transcript).toContain(
        '[tabvisor] boot snapshot not used: this is not a usable tabvisor snapshot',
      );
      expect(await snapshotStates(page)).toEqual(['cold']);
      expect(await removeAllAndCountWorkers(page)).toBe(0);
      await page.close();
      expect(pageErrors).toEqual([]);
    });
  }

  it('without COOP/COEP: two tags on one network and VLAN, each VM in its own worker, get DHCP addresses and ping each other', async () => {
    const page = await open(plain!.url);
    await page.evaluate(() => {
      for (const el of document.querySelectorAll('tabvisor-vm')) el.remove();
      for (const id of ['lan-a', 'lan-b']) {
        const el = document.createElement('tabvisor-vm');
        el.id = id;
        el.setAttribute('cpus', '1');
        el.setAttribute('memory', '64');
        el.setAttribute('network', 'docs-lan');
        el.setAttribute('vlan', '7');
        el.setAttribute('snapshot', 'none');
        document.body.append(el);
      }
    });
    expect(await waitForVms(page)).toEqual(['single-worker', 'single-worker']);
    // The guest's init runs udhcpc in the background; poll until eth0 has its lease.
    const addressOf = async (id: string): Promise<string> => {
      for (let attempt = 0; attempt < 30; attempt++) {
        const { output } = await run(page, id, 'ip -4 -o a s eth0');
        const address = /inet (\d+\.\d+\.\d+\.\d+)/.exec(output)?.[1];
        if (address) return address;
        await run(page, id, 'sleep 1');
      }
      return 'no address';
    };
    const a = await addressOf('lan-a');
    const b = await addressOf('lan-b');
    expect(a).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(b).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(a).not.toBe(b);
    const ping = await run(page, 'lan-a', `ping -c 2 -W 5 ${b}`);
    expect(ping.exitStatus).toBe(0);
    expect(ping.output).toContain('2 packets received');
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    await page.close();
    expect(pageErrors).toEqual([]);
  });

  for (const isolation of ['with isolation', 'without COOP/COEP'] as const) {
    it(`${isolation}: two VMs restored from one boot snapshot on one network take their own MACs and DHCP addresses and ping each other`, async () => {
      const page = await open(isolation === 'with isolation' ? isolated!.url : plain!.url);
      const add = (ids: string[]): Promise<void> =>
        page.evaluate((list) => {
          for (const id of list) {
            const el = document.createElement('tabvisor-vm');
            el.id = id;
            el.setAttribute('cpus', '1');
            el.setAttribute('memory', '64');
            el.setAttribute('network', 'docs-clones');
            el.setAttribute('vlan', '9');
            document.body.append(el);
          }
        }, ids);
      await page.evaluate(() => {
        for (const el of document.querySelectorAll('tabvisor-vm')) el.remove();
      });
      // A cold boot with a NIC saves the boot snapshot at its first prompt.
      await add(['seed']);
      await waitForVms(page);
      const seedMac = (await run(page, 'seed', 'cat /sys/class/net/eth0/address')).output.trim();
      expect(await snapshotStates(page)).toEqual(['saved']);
      await removeAllAndCountWorkers(page);
      await add(['clone-a', 'clone-b']);
      await waitForVms(page);
      expect(await snapshotStates(page)).toEqual(['restored', 'restored']);
      // A clone first re-probes its card (new MAC) and then asks for an address: wait for both.
      const identity = async (id: string): Promise<{ mac: string; ip: string }> => {
        const { output } = await run(
          page,
          id,
          `for i in $(seq 1 120); do m=$(cat /sys/class/net/eth0/address 2>/dev/null); ` +
            `[ -n "$m" ] && [ "$m" != ${seedMac} ] && ip -4 addr show eth0 | grep -q 'inet ' && break; sleep 0.5; done; ` +
            `echo "$m $(ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p')"`,
        );
        const [mac, ip] = output.trim().split(' ');
        return { mac, ip };
      };
      const a = await identity('clone-a');
      const b = await identity('clone-b');
      for (const clone of [a, b]) {
        expect(clone.mac).toMatch(/^02(:[0-9a-f]{2}){5}$/);
        expect(clone.ip).toMatch(/^10\.0\.9\.1\d\d$/);
      }
      expect(new Set([seedMac, a.mac, b.mac]).size).toBe(3);
      expect(a.ip).not.toBe(b.ip);
      const ping = await run(page, 'clone-a', `ping -c 2 -W 5 ${b.ip}`);
      expect(ping.exitStatus).toBe(0);
      expect(ping.output).toContain('2 packets received');
      expect(await removeAllAndCountWorkers(page)).toBe(0);
      await page.close();
      expect(pageErrors).toEqual([]);
    });
  }

  it('attributes: autostart and readonly apply at once; cpus and memory replace the VM (once for both)', async () => {
    const page = await open(isolated!.url);
    await onlyElement(page, 'attrs', { cpus: '1', memory: '64', autostart: 'false', readonly: '' });
    const state = (): Promise<string | undefined> =>
      page.evaluate(() => document.getElementById('attrs')?.dataset.state);
    await waitForVms(page);
    expect(await state()).toBe('created');
    await page.evaluate(() => document.getElementById('attrs')?.setAttribute('autostart', 'true'));
    await expect.poll(state, { timeout: 10_000 }).toBe('running');
    expect(await run(page, 'attrs', 'true')).toEqual({ output: '', exitStatus: 0 });
    // Keystrokes into the terminal reach the guest only while the element is not readonly.
    const typeInTerminal = async (text: string): Promise<void> => {
      await page.locator('#attrs .xterm').click();
      await page.keyboard.type(text);
      await page.keyboard.press('Enter');
    };
    const transcript = (): Promise<string> =>
      page.evaluate(
        () =>
          (
            document.getElementById('attrs') as HTMLElementTagNameMap['tabvisor-vm']
          ).vm?.console.transcript() ?? '',
      );
    await typeInTerminal('echo typed-$((1+1))-while-readonly');
    await page.evaluate(() => document.getElementById('attrs')?.removeAttribute('readonly'));
    await typeInTerminal('echo typed-$((2+2))-after');
    await expect.poll(transcript, { timeout: 30_000 }).toContain('typed-4-after');
    expect(await transcript()).not.toContain('while-readonly');
    // Two shaping attributes in one task: one replacement VM, with both.
    const firstId = await page.evaluate(
      () => (document.getElementById('attrs') as HTMLElementTagNameMap['tabvisor-vm']).vm?.id,
    );
    const replaced = await page.evaluate(async () => {
      const el = document.getElementById('attrs') as HTMLElementTagNameMap['tabvisor-vm'];
      const events: string[] = [];
      el.addEventListener('tabvisor-ready', (event) =>
        events.push((event as CustomEvent<{ id: string }>).detail.id),
      );
      el.setAttribute('cpus', '2');
      el.setAttribute('memory', '96');
      const goneAtOnce = el.vm === undefined;
      const vm = await el.ready;
      return { goneAtOnce, id: vm.id, cpus: vm.cpus, memoryMiB: vm.memoryMiB, events };
    });
    expect(replaced.goneAtOnce).toBe(true);
    expect(replaced.id).not.toBe(firstId);
    expect(replaced).toMatchObject({ cpus: 2, memoryMiB: 96 });
    expect(replaced.events).toEqual([replaced.id]);
    expect(await run(page, 'attrs', 'nproc')).toEqual({ output: '2\n', exitStatus: 0 });
    // The old VM is gone: only the new VM's two vCPU workers are left.
    await expect.poll(() => page.workers().length, { timeout: 10_000 }).toBe(2);
    expect(await removeAllAndCountWorkers(page)).toBe(0);
    await page.close();
    expect(pageErrors).toEqual([]);
  });
});
