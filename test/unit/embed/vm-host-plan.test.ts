import { describe, expect, it } from 'vitest';
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
