// Builds the web page into control_api/web/, the one folder the control API serves it from
// (in a checkout and, as package data, in an installed wheel):
//
//   control_api/web/index.html, style.css   copied from client_demo/
//   control_api/web/dist/app.js (+ .map)     src/main.js bundled with livekit-client by esbuild
//
// `npm run build` runs this (scripts/setup.sh and `make client` / `make wheel` call that). The
// page is written into a scratch folder first and swapped in whole, so a control API that is
// running never serves half of an old build and half of a new one; control_api/web/ is
// gitignored. Sources stay here: edit client_demo/, then rebuild.
import { chmodSync, cpSync, existsSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const client = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.resolve(client, '..', 'control_api', 'web');
const PAGE_FILES = ['index.html', 'style.css'];

const scratch = mkdtempSync(path.join(path.dirname(out), '.web-build-'));
chmodSync(scratch, 0o755); // mkdtemp's 0700 would keep the page from a service's other user
try {
  await build({
    entryPoints: [path.join(client, 'src', 'main.js')],
    outfile: path.join(scratch, 'dist', 'app.js'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    logLevel: 'warning',
  });
  for (const file of PAGE_FILES) cpSync(path.join(client, file), path.join(scratch, file));
  const old = `${out}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(out)) renameSync(out, old);
  renameSync(scratch, out);
  rmSync(old, { recursive: true, force: true });
} catch (error) {
  rmSync(scratch, { recursive: true, force: true });
  throw error;
}
