import { describe, expect, it } from 'vitest';
import { imageUrl, snapshotKey } from '../../../src/embed/guest.ts';
import { hostPlanOf, hostWorkerName, type HostPlan } from '../../../src/embed/vm-host-plan.ts';

const plan: HostPlan = {
  id: '2',
  config: {
    name: 'first',
    cpus: 2,
    memoryMiB: 128,
    image: '../images/manifest.json',
    nics: [{ network: 'lab', mac: '52:54:00:12:34:56' }],
  },
  base: { pageUrl: 'https://docs.test/guide/', defaultImage: 'https://docs.test/images/manifest.json' },
};

describe("a VM-host worker's plan in its name", () => {
  it('reads back what was written, after a label people see', () => {
    const name = hostWorkerName('first/vcpus', plan);
    expect(name.startsWith('first/vcpus\n')).toBe(true);
    expect(hostPlanOf(name)).toEqual(plan);
    // A label with newlines of its own: the plan is after the last one (JSON has none).
    expect(hostPlanOf(hostWorkerName('odd\nname/vcpus', plan))).toEqual(plan);
  });

  it('is absent from a plain name, and a malformed one is no plan', () => {
    expect(hostWorkerName('first/vcpus')).toBe('first/vcpus');
    expect(hostPlanOf('first/vcpus')).toBeUndefined();
    expect(hostPlanOf('first/vcpus\n{not json')).toBeUndefined();
    expect(hostPlanOf('first/vcpus\nnull')).toBeUndefined();
    expect(hostPlanOf(`x\n${JSON.stringify({ ...plan, id: 2 })}`)).toBeUndefined();
    expect(
      hostPlanOf(`x\n${JSON.stringify({ ...plan, config: { ...plan.config, cpus: '2' } })}`),
    ).toBeUndefined();
    expect(hostPlanOf(`x\n${JSON.stringify({ id: '1', config: plan.config })}`)).toBeUndefined();
  });
});

describe("a VM-host worker resolves a config's URLs against the page's, not its own", () => {
  const base = {
    pageUrl: 'https://docs.test/guide/vms/page.html',
    defaultImage: 'https://docs.test/lib/images/manifest.json',
  };

  it('relative images resolve against the page, and no image means the default one', () => {
    expect(imageUrl({ image: '../img/manifest.json' }, base).href).toBe(
      'https://docs.test/guide/img/manifest.json',
    );
    expect(imageUrl({ image: 'https://cdn.test/m.json' }, base).href).toBe('https://cdn.test/m.json');
    expect(imageUrl({}, base).href).toBe(base.defaultImage);
  });

  it("the boot snapshot's key names the image as the page does, so the worker finds what the page stored", () => {
    const config = { image: '../img/manifest.json', nics: [{ network: 'lab' }] };
    expect(snapshotKey(config, 2, 128, '', base)).toBe(
      'tabvisor:snapshot:v2:https://docs.test/guide/img/manifest.json::2:128:1:',
    );
    // The same config from a page elsewhere is another image, so another key.
    expect(snapshotKey(config, 2, 128, '', { ...base, pageUrl: 'https://docs.test/other/' })).not.toBe(
      snapshotKey(config, 2, 128, '', base),
    );
  });
});
