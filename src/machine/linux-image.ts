import { UserError } from '../common/errors.ts';

/**
 * The RISC-V Linux kernel Image header (Documentation/riscv/boot-image-header.rst): 64 bytes at the start of
 * arch/riscv/boot/Image.
 *
 *   0  code0, code1   u32 x2   executable code
 *   8  text_offset    u64      image load offset from the start of RAM
 *   16 image_size     u64      effective image size (including bss), little endian
 *   24 flags          u64
 *   32 version        u32
 *   36 res1           u32
 *   40 res2           u64
 *   48 magic          u64      "RISCV\0\0\0" (deprecated)
 *   56 magic2         u32      "RSC\x05"
 *   60 res3           u32
 */
export interface LinuxImageHeader {
  readonly textOffset: number;
  readonly imageSize: number;
}

const HEADER_SIZE = 64;
const MAGIC2 = 0x0543_5352; // "RSC\x05" little endian

/** Parse and validate a Linux Image; throws a UserError naming the problem and the fix. */
export function parseLinuxImage(bytes: Uint8Array, fileName: string): LinuxImageHeader {
  if (bytes.length < HEADER_SIZE) {
    throw new UserError(
      `${fileName}: only ${bytes.length} bytes, too short for a Linux Image; pass arch/riscv/boot/Image`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(56, true) !== MAGIC2) {
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
      throw new UserError(
        `${fileName}: is gzip-compressed but was not decompressed; name it *.gz or gunzip it`,
      );
    }
    if (bytes[0] === 0x7f && bytes[1] === 0x45) {
      throw new UserError(
        `${fileName}: is an ELF file (vmlinux?); pass the raw arch/riscv/boot/Image instead`,
      );
    }
    throw new UserError(
      `${fileName}: not a RISC-V Linux Image (no "RSC\\x05" magic at offset 56); pass arch/riscv/boot/Image`,
    );
  }
  const textOffset = Number(view.getBigUint64(8, true));
  const imageSize = Number(view.getBigUint64(16, true));
  if (imageSize < bytes.length || imageSize > 1 << 30) {
    throw new UserError(
      `${fileName}: Image header says image_size=${imageSize}, which cannot be right; rebuild the kernel`,
    );
  }
  return { textOffset, imageSize };
}
