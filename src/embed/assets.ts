/**
 * Where the embed finds its files. In the library build (vite.lib.config.ts defines
 * `import.meta.env.TABVISOR_LIB`), images sit next to the module (`dist-lib/images/`), so the library works from
 * any path or CDN-like location; in the app and the dev server they are served from the site root.
 */
const moduleUrl = import.meta.url;

/** The folder that holds `images/` (the default guest) and `coi-serviceworker.js`. */
export function assetBase(): URL {
  if (import.meta.env.TABVISOR_LIB) return new URL('./', moduleUrl);
  return new URL(import.meta.env.BASE_URL, location.href);
}

/** The default guest's manifest. */
export function defaultManifestUrl(): URL {
  return new URL('images/manifest.json', assetBase());
}
