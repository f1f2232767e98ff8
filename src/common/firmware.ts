/**
 * The boundary between a hart and firmware the emulator provides itself (our SBI implementation). cpu/ calls
 * it; devices/ implements it; neither imports the other.
 */

/** What an SBI call may see and do on the calling hart. */
export interface SbiCallContext {
  /** The calling hart's id (mhartid). */
  readonly hartId: number;
  /** The calling hart's integer registers; a0 = x[10] ... a7 = x[17]. Results go to x[10] (error), x[11] (value). */
  readonly x: Int32Array;
  /** Flush this hart's address translation caches (local SFENCE.VMA). */
  flushTlb(): void;
  /** Make this hart's instruction fetch see every store made before (local FENCE.I). */
  flushInstructionCache(): void;
  /** Read a 32-bit word at guest-virtual `gva` as the calling S-mode would; undefined when not readable. */
  loadVirtualU32(gva: number): number | undefined;
  /**
   * Stop the calling hart after this call returns (HSM hart_stop, or SRST): it leaves the run loop and waits
   * for an HSM start.
   */
  stopAfterCall(): void;
  /** Sleep like WFI after this call returns (HSM retentive suspend). */
  waitAfterCall(): void;
}

/** Firmware that handles ECALLs from S-mode in place of M-mode software. */
export interface Firmware {
  /** Handle the ECALL; write results to ctx.x. The hart then resumes at the next instruction. */
  ecall(ctx: SbiCallContext): void;
}
