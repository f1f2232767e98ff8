import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { UserError } from '../common/errors.ts';
import { maybeGunzip } from '../machine/gzip.ts';

/** The default guest image folder (public/images), next to the sources. */
export const DEFAULT_IMAGES_DIR = fileURLToPath(new URL('../../public/images/', import.meta.url));

/** The part of public/images/manifest.json the CLI uses. */
export interface ImageManifest {
  readonly name: string;
  readonly bootargs: string;
  readonly memoryMiB: { readonly minimum: number; readonly default: number };
  readonly files: readonly { readonly role: string; readonly path: string }[];
}

/** Read and check the default image manifest. */
export async function readManifest(dir = DEFAULT_IMAGES_DIR): Promise<ImageManifest> {
  const path = `${dir}manifest.json`;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new UserError(
      `no default guest image at ${path}; run scripts/build-guest-image.sh or pass --kernel`,
    );
  }
  const manifest = JSON.parse(text) as ImageManifest;
  if (!Array.isArray(manifest.files) || typeof manifest.bootargs !== 'string') {
    throw new UserError(
      `${path} is not a tabvisor image manifest; rebuild it with scripts/build-guest-image.sh`,
    );
  }
  return manifest;
}

/** Path of the file with `role` in the manifest, if any. */
export function manifestFile(
  manifest: ImageManifest,
  role: string,
  dir = DEFAULT_IMAGES_DIR,
): string | undefined {
  const file = manifest.files.find((f) => f.role === role);
  return file ? `${dir}${file.path}` : undefined;
}

/** Read a file the user named, decompressing gzip; a missing file is a UserError naming the option. */
export async function readImageFile(path: string, what: string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`${what} ${path}: no such file; check the path`);
    if (code === 'EISDIR') throw new UserError(`${what} ${path}: is a directory; pass a file`);
    throw new UserError(`${what} ${path}: cannot be read (${code ?? String(error)})`);
  }
  try {
    return await maybeGunzip(bytes);
  } catch {
    throw new UserError(`${what} ${path}: looks gzip-compressed but is corrupt; rebuild or re-download it`);
  }
}
