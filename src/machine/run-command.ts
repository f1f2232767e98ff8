import type { TabvisorConsole } from './vm-console.ts';

/** What {@link runCommand} resolves with. */
export interface RunResult {
  /** What the command printed (stdout and stderr as the terminal showed them), without the echoed command line or the prompt; `\r\n` becomes `\n`. */
  readonly output: string;
  /** The shell's `$?` after the command. */
  readonly exitStatus: number;
}

/** Options for {@link runCommand}. */
export interface RunOptions {
  /** Give up after this long (default 60 s); the command keeps running in the guest. */
  readonly timeoutMs?: number;
}

/**
 * The end of a shell prompt (`# `, `$ `), as the default image's busybox shell prints it. When the terminal is
 * resized (SIGWINCH), busybox redraws its line as `\r` + prompt + ESC [ J (clear to the end of the screen), so a
 * prompt may end in that sequence.
 */
const PROMPT = /[#$] (?:\x1b\[J)?$/;
/** A prompt anywhere in the transcript: the shell has started. */
const SHELL_SEEN = /[#$] /;
/** The default time a command may take. */
const DEFAULT_RUN_TIMEOUT_MS = 60_000;

let serial = 0;

/**
 * Type `command` at the guest's shell and wait for it to finish: appends `echo <marker>$?` and reads the exit
 * status from the marker line. The marker is written with an empty quote pair inside it (`__TV_D""ONE...`), so the
 * shell's echo of the typed line never matches; only the real `echo` output does. Assumes a shell prompt is
 * showing or about to show; runs on one console must not overlap (callers queue them).
 */
export async function runCommand(
  console: TabvisorConsole,
  command: string,
  options: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS;
  // A guest still booting (or just restored, before its fresh prompt): wait for the shell first, so the typed
  // line is not echoed in the middle of boot messages.
  if (!SHELL_SEEN.test(console.transcript())) await console.waitFor(PROMPT, timeoutMs);
  const id = `${Date.now().toString(36)}${(serial++).toString(36)}`;
  const typedMarker = `__TV_D""ONE_${id}__`;
  const doneMarker = new RegExp(`__TV_DONE_${id}__(\\d+)\\r?\\n`);
  const body = command.replace(/\s+$/, '');
  // `cmd &; echo` is a syntax error: after a trailing `&` the echo needs no separator.
  const separator = body.endsWith('&') ? ' ' : '; ';
  const line = `${body}${separator}echo ${typedMarker}$?\n`;
  console.write(line);
  const text = await console.waitFor(doneMarker, timeoutMs);
  const match = doneMarker.exec(text);
  const exitStatus = match ? Number(match[1]) : -1;
  const end = match ? match.index : text.length;
  // Output starts after the line that echoed the typed marker.
  const echoed = text.lastIndexOf(typedMarker, end);
  const newline = echoed < 0 ? -1 : text.indexOf('\n', echoed);
  const start = newline < 0 || newline > end ? 0 : newline + 1;
  const output = text.slice(start, end).replace(/\r\n/g, '\n').replace(/\r/g, '');
  // Let the next prompt print, so a following run's echo is not mixed with it.
  await console.waitFor(PROMPT, 2000).catch(() => undefined);
  return { output, exitStatus };
}
