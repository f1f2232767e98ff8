import { describe, expect, it } from 'vitest';
import { consoleDevice } from '../../../src/machine/linux-boot.ts';

describe('consoleDevice: which device the kernel makes /dev/console', () => {
  it('is the last console= argument, without its options', () => {
    expect(consoleDevice('console=hvc1 earlycon=sbi keep_bootcon')).toBe('hvc1');
    expect(consoleDevice('console=ttyS0,115200n8 root=/dev/vda')).toBe('ttyS0');
    expect(consoleDevice('console=ttyS0 console=hvc1')).toBe('hvc1');
    expect(consoleDevice('console=hvc1  console=ttyS0')).toBe('ttyS0');
  });

  it('is undefined without a console= argument (the kernel then uses the device tree stdout-path)', () => {
    expect(consoleDevice('earlycon=sbi root=/dev/vda rw')).toBeUndefined();
    expect(consoleDevice('')).toBeUndefined();
    expect(consoleDevice('console= quiet')).toBeUndefined();
    expect(consoleDevice('xconsole=hvc1')).toBeUndefined();
  });
});
