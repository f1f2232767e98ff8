/**
 * Work a frame still needs before it is a finished Ethernet frame: a checksum to complete and/or TCP
 * segmentation, the way a virtio-net driver hands them to a device that offered checksum and TSO offloads
 * (virtio 1.2 section 5.1.6.2). Shared by the network device (which reads it from and writes it to the
 * guest's `virtio_net_hdr`) and the switch (which validates it, carries it to ports that take it as it is and
 * finishes the frame for the others), so it lives below both.
 *
 * Offsets count from the first byte of the Ethernet frame.
 */
export interface FrameOffload {
  /**
   * Offset where the checksummed region starts (the TCP or UDP header), or -1 when no checksum is pending.
   * When set, the 16-bit field at `csumStart + csumOffset` holds the pseudo-header sum and the rest of the
   * checksum is to be completed over `[csumStart, end of frame)` (RFC 1071 one's-complement sum).
   */
  readonly csumStart: number;
  /** Offset of the checksum field from `csumStart` (16 for TCP, 6 for UDP). */
  readonly csumOffset: number;
  /** Segmentation to perform: none, or TCP over IPv4 / IPv6 into segments of `gsoSize` payload bytes. */
  readonly gso: GsoKind;
  /** Payload bytes per segment (the MSS) when `gso` is not 'none'; 0 otherwise. */
  readonly gsoSize: number;
  /**
   * Every checksum in the frame is known to be right (the host computed or checked it), so a receiver that
   * accepts this hint may skip verifying them. Never set on a frame with a pending checksum.
   */
  readonly dataValid: boolean;
}

/**
 * The largest TCP super-frame anyone takes or gives: an Ethernet header with one VLAN tag, an IPv6 header (40
 * bytes) and 64 KiB of payload (an IPv4 super-frame is smaller still: its total length includes the header).
 */
export const MAX_SUPER_FRAME_BYTES = 14 + 4 + 40 + 0xffff;

/** Segmentation a frame asks for. */
export type GsoKind = 'none' | 'tcp4' | 'tcp6';

/** Which offloads a receiver takes as they are (everything else is finished before it gets the frame). */
export interface OffloadSupport {
  /** Frames with a pending checksum, and the `dataValid` hint. */
  readonly csum: boolean;
  /** TCP/IPv4 super-frames (needs `csum`). */
  readonly tcp4: boolean;
  /** TCP/IPv6 super-frames (needs `csum`). */
  readonly tcp6: boolean;
}

/** A receiver that takes no offload: every frame arrives finished. */
export const NO_OFFLOADS: OffloadSupport = { csum: false, tcp4: false, tcp6: false };
