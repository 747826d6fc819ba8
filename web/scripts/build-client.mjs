// Builds ../clients/typescript (@herald/client) before this app is built or served.
// The app depends on the package as it is published ("file:../clients/typescript",
// whose exports point at its built dist/), so a fresh clone, `herald demo`'s own
// `npm ci && npm run build` here and the Dockerfile all need that build first; it
// always runs (a few seconds), so the app never bundles a stale client.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const client = fileURLToPath(new URL("../../clients/typescript/", import.meta.url));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const run = (...args) => {
  console.log(`$ (cd ${client} && npm ${args.join(" ")})`);
  execFileSync(npm, args, { cwd: client, stdio: "inherit" });
};

if (!existsSync(`${client}package.json`)) {
  throw new Error(`@herald/client is not at ${client}: the web app builds against the repository's client`);
}
// Its build needs its dev dependencies (TypeScript).
if (!existsSync(`${client}node_modules/typescript`)) run("ci", "--no-audit", "--no-fund");
run("run", "build");
