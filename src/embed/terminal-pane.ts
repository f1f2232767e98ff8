/**
 * What `<tabvisor-vm>` loads beside its VM (a chunk of its own): the terminal pane (xterm.js) and xterm's
 * style sheet, which the element puts into its shadow root once the pane is there.
 */
export { TerminalPane } from '../ui/terminal-pane.ts';
export { default as xtermCss } from '@xterm/xterm/css/xterm.css?inline';
