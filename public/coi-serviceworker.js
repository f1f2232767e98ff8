/*
 * tabvisor isolation service worker, for static hosts that cannot send headers.
 *
 * SharedArrayBuffer (one thread per vCPU) needs a cross-origin isolated page: the document must arrive with
 * Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp. This worker answers the
 * page's own requests from the network and adds those headers (and Cross-Origin-Resource-Policy, so the page's
 * subresources pass its own embedder policy). The page registers it only when it is not isolated and runs in a
 * secure context (https or localhost), then reloads once so the next load goes through it.
 */
const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

self.addEventListener('install', () => {
  self.skipWaiting();
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

/** A copy of `response` with the isolation headers set; opaque and error responses pass unchanged. */
function withIsolationHeaders(response) {
  if (response.type === 'opaque' || response.type === 'opaqueredirect' || response.status === 0)
    return response;
  const headers = new Headers(response.headers);
  for (const [name, value] of Object.entries(ISOLATION_HEADERS)) headers.set(name, value);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener('fetch', (event) => {
  const request = event.request;
  // Only this origin's requests: another origin's resources must carry their own CORP or CORS headers.
  if (new URL(request.url).origin !== self.location.origin) return;
  // A request the browser may only answer from cache (devtools) cannot be refetched here.
  if (request.cache === 'only-if-cached' && request.mode !== 'same-origin') return;
  event.respondWith(fetch(request).then(withIsolationHeaders));
});
