// Builds the package twice from src/: ES modules in dist/ (tsconfig.build.json) and
// CommonJS in dist/cjs/ (tsconfig.cjs.json), so both `import` and `require` load it
// on every Node the package supports (require() of an ES module needs Node >= 20.19).
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const run = (project) => execFileSync(process.execPath, [tsc, "-p", project], { stdio: "inherit" });

// A stale file from a renamed module must not ship.
rmSync("dist", { recursive: true, force: true });
run("tsconfig.build.json");
run("tsconfig.cjs.json");
// The package is "type": "module"; this marks dist/cjs/*.js (and its .d.ts) as CommonJS.
writeFileSync("dist/cjs/package.json", '{\n  "type": "commonjs"\n}\n');
