// The size a browser app pays for @herald/client: the built ES module (dist/index.js)
// bundled with everything it imports, minified by esbuild (the one vitest's vite brings;
// no bundler of our own), then gzipped (level 9) with Node's zlib. `npm run size` prints
// it (`--json`: as JSON); test/package checks it stays under the budget the README states.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

/** Bytes of dist/index.js bundled and minified, and of that gzipped. */
export async function measure() {
  const esbuild = createRequire(import.meta.url)("esbuild");
  const result = await esbuild.build({
    entryPoints: [fileURLToPath(new URL("../dist/index.js", import.meta.url))],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2020",
    platform: "browser",
    write: false,
    logLevel: "silent",
  });
  const code = result.outputFiles[0].contents;
  return { minified: code.byteLength, gzipped: gzipSync(code, { level: 9 }).byteLength };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { minified, gzipped } = await measure();
  if (process.argv.includes("--json")) console.log(JSON.stringify({ minified, gzipped }));
  else console.log(`dist/index.js bundled + minified: ${minified} B, gzipped: ${gzipped} B (${(gzipped / 1024).toFixed(1)} KiB)`);
}
