/** Why the page is or is not cross-origin isolated, in words a person hosting it can act on. */
export interface IsolationReport {
  readonly isolated: boolean;
  /** The headers the page arrived without (or with the wrong value), as `Name: value` lines to add. */
  readonly missing: readonly string[];
  /** One paragraph: what is wrong and how to fix it. Empty when isolated. */
  readonly advice: string;
}

const REQUIRED = [
  { name: 'Cross-Origin-Opener-Policy', accept: ['same-origin'], want: 'same-origin' },
  { name: 'Cross-Origin-Embedder-Policy', accept: ['require-corp', 'credentialless'], want: 'require-corp' },
] as const;

/** Session key that stops the page reloading in a loop when the service worker cannot help. */
const RELOAD_KEY = 'tabvisor.isolation-reload';

/**
 * Find out whether the page is cross-origin isolated and, if not, which response headers are missing: the page
 * asks the server for its own document again (HEAD) and reads the COOP and COEP headers.
 */
export async function diagnoseIsolation(): Promise<IsolationReport> {
  if (globalThis.crossOriginIsolated) {
    sessionStorage.removeItem(RELOAD_KEY);
    return { isolated: true, missing: [], advice: '' };
  }
  const missing: string[] = [];
  let sent: Headers | undefined;
  try {
    sent = (await fetch(location.href, { method: 'HEAD', cache: 'no-store' })).headers;
  } catch {
    sent = undefined;
  }
  for (const header of REQUIRED) {
    const value = sent?.get(header.name)?.trim().toLowerCase();
    if (value === undefined || !(header.accept as readonly string[]).includes(value)) {
      missing.push(`${header.name}: ${header.want}` + (value ? ` (the server sent "${value}")` : ''));
    }
  }
  const lines = REQUIRED.map((h) => `${h.name}: ${h.want}`).join(' and ');
  let advice =
    'This page is not cross-origin isolated, so it cannot use SharedArrayBuffer and cannot run one thread per vCPU. ';
  if (missing.length > 0) {
    advice += `The server must send ${lines} with the page (missing: ${missing.join('; ')}). `;
  } else {
    advice +=
      'The server sends the right headers, so something else breaks isolation: the page may be in an iframe ' +
      'without allow="cross-origin-isolated", or a subresource lacks Cross-Origin-Resource-Policy. ';
  }
  advice += 'npm start and npm run preview send the headers; see "Headers a host must send" in the README. ';
  if (!window.isSecureContext) {
    advice += 'The isolation service worker cannot help here: it needs https or localhost.';
  } else {
    advice += 'Hosts that cannot send headers can serve public/coi-serviceworker.js next to the page.';
  }
  return { isolated: false, missing, advice };
}

/** What {@link installIsolationWorker} did. */
export type IsolationWorkerResult = 'reloading' | 'unavailable' | 'no-effect' | 'failed';

/**
 * On a page that is not isolated, register the isolation service worker (public/coi-serviceworker.js) and
 * reload once through it. Returns 'reloading' when the page is about to reload; 'unavailable' when service
 * workers cannot be used (no secure context); 'no-effect' when the worker already controls the page and
 * isolation still failed; 'failed' when registration failed.
 */
export async function installIsolationWorker(scriptUrl: URL): Promise<IsolationWorkerResult> {
  if (!window.isSecureContext || !('serviceWorker' in navigator)) return 'unavailable';
  if (navigator.serviceWorker.controller || sessionStorage.getItem(RELOAD_KEY) !== null) return 'no-effect';
  try {
    await navigator.serviceWorker.register(scriptUrl, { scope: new URL('./', scriptUrl).pathname });
    await navigator.serviceWorker.ready;
  } catch {
    return 'failed';
  }
  sessionStorage.setItem(RELOAD_KEY, '1');
  location.reload();
  return 'reloading';
}
