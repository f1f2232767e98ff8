/**
 * Where the embed finds its files. In the library build (vite.lib.config.ts defines
 * `import.meta.env.TABVISOR_LIB`), images sit next to the library's entry module (`dist-lib/images/` beside
 * `dist-lib/tabvisor.js`), so the library works from any path or CDN-like location; in the app and the dev
 * server they are served from the site root.
 */

/**
 * The entry module's folder, set by the entry (`index.ts`) as it loads. This module's own `import.meta.url`
 * will not do: the build may put this code in a chunk under `assets/`.
 */
let libraryBase: URL | undefined;

/** Called by the library's entry with its own `import.meta.url`. */
export function setLibraryBase(entryModuleUrl: string): void {
  libraryBase = new URL('./', entryModuleUrl);
}

/** The folder that holds `images/` (the default guest) and `coi-serviceworker.js`. */
export function assetBase(): URL {
  if (import.meta.env.TABVISOR_LIB) {
    if (!libraryBase) throw new Error('tabvisor: the library entry did not say where it was loaded from');
    return libraryBase;
  }
  return new URL(import.meta.env.BASE_URL, location.href);
}

/** The default guest's manifest. */
export function defaultManifestUrl(): URL {
  return new URL('images/manifest.json', assetBase());
}
