import { UserError } from '../common/errors.ts';
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
/**
 * The longest line `run` types. The default image's shell edits at most 1023 characters per line
 * (busybox FEATURE_EDITING_MAX_LEN 1024) and silently cuts longer lines; run adds 2 to the first line.
 */
export const MAX_RUN_LINE = 960;

let serial = 0;

/** Two random base-36 characters. Every typed character costs the guest 15,000-20,000 instructions: ids stay short. */
function randomTag(): string {
  return Math.floor(Math.random() * 36 * 36)
    .toString(36)
    .padStart(2, '0');
}

/** What a line editor may put between two echoed characters when it wraps or redraws: CR, LF, " \b", CSI. */
const ECHO_BREAK = String.raw`(?:[ \b\r\n]|\x1b\[[0-9;?]*[A-Za-z])*`;

/** A pattern for the terminal's echo of `text` (no spaces in it), however the line editor wrapped it. */
function echoOf(text: string): string {
  return [...text].map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join(ECHO_BREAK);
}

/**
 * Type `command` at the guest's shell and wait for it to finish. What it types is
 *
 *     { <command>
 *     };echo _D""<id>_$?
 *
 * and the output is exactly what the shell printed after the echo of the second line and before
 * `_D<id>_<status>` (`<id>` is unique per run: a counter in base 36 (per module instance: the page's and a
 * single-worker VM host's each count from 0) and two random base-36 characters). The shell runs nothing before
 * it has read (and its line editor echoed) the whole brace group and the `echo` after it, so the output starts
 * right after that echo. The lines are short because the guest's line editor echoes every typed character,
 * 15,000-20,000 guest instructions each (busybox reads one byte per system call): on a VM just restored from a
 * snapshot, whose vCPU threads are not warmed up yet, typing is most of the first command's time. The end marker
 * contains an empty quote pair as typed, so its echo never matches it; the echo is found however the line editor
 * wraps or redraws it on a narrow terminal, and without echo ({@link printedWithoutEcho}) the output starts where
 * typing did. The braces run the command as one list whose status `$?` reports; the newline before `}` ends a
 * trailing comment or `&` of the command. Assumes a shell prompt is showing or about to show; runs on one
 * console must not overlap (callers queue them).
 */
export async function runCommand(
  console: TabvisorConsole,
  command: string,
  options: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS;
  const id = `${(serial++).toString(36)}${randomTag()}`;
  const body = command.replace(/\s+$/, '');
  if (body.trim() === '') throw new UserError('run() needs a command to type; it was given only white space');
  const typed = `{ ${body}\n};echo _D""${id}_$?\n`;
  const longest = Math.max(...typed.split('\n').map((line) => line.length));
  if (longest > MAX_RUN_LINE) {
    throw new UserError(
      `a line of this command is too long for the guest's shell: ${longest} characters with run()'s markers, at most ${MAX_RUN_LINE}; split it across lines or write it to a script file first`,
    );
  }
  // A guest still booting (or just restored, before its fresh prompt): wait for the shell first, so the typed
  // line is not echoed in the middle of boot messages.
  if (!SHELL_SEEN.test(console.transcript())) await console.waitFor(PROMPT, timeoutMs);
  const endEcho = new RegExp(`${echoOf(`_D""${id}_$?`)}\\r?\\n`);
  const doneMarker = new RegExp(`_D${id}_(\\d+)\\r?\\n`);
  const typedAt = console.transcript().length;
  console.write(typed);
  const text = await console.waitFor(doneMarker, timeoutMs);
  const done = doneMarker.exec(text);
  const echoed = endEcho.exec(text);
  const exitStatus = done ? Number(done[1]) : -1;
  const end = done ? done.index : text.length;
  const raw =
    echoed && echoed.index < end
      ? text.slice(echoed.index + echoed[0].length, end)
      : (printedWithoutEcho(console.transcript(), typedAt, `_D${id}_`) ?? text.slice(0, end));
  const output = raw.replace(/\r\n/g, '\n').replace(/\r/g, '');
  // Let the next prompt print, so a following run's echo is not mixed with it.
  await console.waitFor(PROMPT, 2000).catch(() => undefined);
  return { output, exitStatus };
}

/**
 * The output of a run whose typed lines the terminal did not echo (`stty -echo`: busybox then prints its prompts
 * and reads whole lines): everything printed after the lines were typed (transcript offset `typedAt`) up to
 * `marker`, without the continuation prompt printed before the second line. Undefined when `marker` is not found
 * from there. If the transcript dropped its oldest text meanwhile (past 1 Mi characters, so only for a command
 * that printed about that much), the offset has moved and the output may start late.
 */
function printedWithoutEcho(transcript: string, typedAt: number, marker: string): string | undefined {
  const at = transcript.indexOf(marker, typedAt);
  if (at < 0) return undefined;
  return transcript.slice(typedAt, at).replace(/^> /, '');
}
