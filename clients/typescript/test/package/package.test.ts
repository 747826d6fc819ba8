// The package as npm would publish it: `npm pack` of the built client, unpacked into a
// scratch node_modules, loaded the way users load it — `require` and `import` in a
// separate Node process, typings through TypeScript's NodeNext resolution. What the
// tarball holds is what these tests read, not src/ or dist/ directly.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, posix, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const repoRoot = resolve(pkgDir, "../..");

let scratch = "";
let installed = "";
let packed: string[] = [];

beforeAll(() => {
  if (!existsSync(join(pkgDir, "dist/index.js")) || !existsSync(join(pkgDir, "dist/cjs/index.js"))) {
    throw new Error("the package is not built: run `npm run build` before `npm test`");
  }
  scratch = mkdtempSync(join(tmpdir(), "herald-client-pack-"));
  // --ignore-scripts: test the build that is there, do not rebuild it (prepack) from here.
  const out = execFileSync("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", scratch], {
    cwd: pkgDir,
    encoding: "utf8",
  });
  const [info] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  packed = info!.files.map((f) => f.path);
  mkdirSync(join(scratch, "node_modules/@herald"), { recursive: true });
  execFileSync("tar", ["-xzf", join(scratch, info!.filename), "-C", join(scratch, "node_modules/@herald")]);
  installed = join(scratch, "node_modules/@herald/client");
  renameSync(join(scratch, "node_modules/@herald/package"), installed);
}, 60_000);

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Runs a Node script in the scratch project (where `@herald/client` is installed) and parses what it prints. */
function nodeJson(args: string[]): Record<string, unknown> {
  const r = spawnSync(process.execPath, args, { cwd: scratch, encoding: "utf8" });
  expect(r.stderr, "the child process wrote to stderr").toBe("");
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

const PROBE = `
  const { HeraldClient, CloseCode, closeAction } = m;
  class FakeSocket { readyState = 0; send() {} close() {} }
  const client = new HeraldClient({ url: "ws://127.0.0.1:1/ws", WebSocket: FakeSocket });
  out({
    keys: Object.keys(m).filter((k) => k !== "default" && k !== "__esModule").sort(),
    client: typeof HeraldClient,
    state: client.state.state,
    closeAction: closeAction(CloseCode.ServerShuttingDown),
  });`;

describe("the packed @herald/client", () => {
  it("loads with require() from the CommonJS build", () => {
    const got = nodeJson([
      "-e",
      `const out = (v) => console.log(JSON.stringify({ ...v, file: require.resolve("@herald/client") }));
       const m = require("@herald/client");${PROBE}`,
    ]);
    expect(got.file).toBe(join(installed, "dist/cjs/index.js"));
    expect(got.client).toBe("function");
    expect(typeof got.state).toBe("string");
    expect(got.closeAction).toBe("reconnect-now");
  });

  it("loads with import from the ES module build, exporting the same names as require()", () => {
    const esm = nodeJson([
      "--input-type=module",
      "-e",
      `const out = (v) => console.log(JSON.stringify({ ...v, file: import.meta.resolve("@herald/client") }));
       const m = await import("@herald/client");${PROBE}`,
    ]);
    expect(esm.file).toBe(`file://${join(installed, "dist/index.js")}`);
    const cjs = nodeJson(["-e", `const out = (v) => console.log(JSON.stringify(v)); const m = require("@herald/client");${PROBE}`]);
    expect(esm.keys).toEqual(cjs.keys);
    expect((esm.keys as string[]).length).toBeGreaterThan(5);
    expect(esm).toMatchObject({ client: "function", state: cjs.state, closeAction: cjs.closeAction });
  });

  it("type-checks for both a CommonJS and an ES module consumer (exports map `types`)", () => {
    const consumer = `
      import { HeraldClient, type HeraldClientOptions, type ConnectionState } from "@herald/client";
      const options: HeraldClientOptions = { url: "ws://127.0.0.1/ws" };
      const client: HeraldClient = new HeraldClient(options);
      const state: ConnectionState = client.state;
      export { state };
    `;
    writeFileSync(join(scratch, "consumer.mts"), consumer);
    writeFileSync(join(scratch, "consumer.cts"), consumer);
    writeFileSync(
      join(scratch, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "NodeNext",
          moduleResolution: "NodeNext",
          target: "ES2022",
          lib: ["ES2022", "DOM"],
          strict: true,
          noEmit: true,
          types: [],
          // What the test asserts is how TypeScript resolves the package, not how it reads its .d.ts.
          skipLibCheck: false,
          traceResolution: true,
        },
        files: ["consumer.mts", "consumer.cts"],
      }),
    );
    const tsc = join(pkgDir, "node_modules/typescript/bin/tsc");
    const r = spawnSync(process.execPath, [tsc, "-p", scratch], { cwd: scratch, encoding: "utf8" });
    const errors = r.stdout.split("\n").filter((l) => l.includes("error TS"));
    expect(errors).toEqual([]);
    expect(r.status).toBe(0);
    // Each consumer got the typings of the build it loads.
    expect(r.stdout).toContain(`'@herald/client' was successfully resolved to '${join(installed, "dist/index.d.ts")}'`);
    expect(r.stdout).toContain(`'@herald/client' was successfully resolved to '${join(installed, "dist/cjs/index.d.ts")}'`);
  });

  it("publishes no @internal member in its typings", () => {
    const typings = packed.filter((f) => f.endsWith(".d.ts"));
    expect(typings).toContain("dist/index.d.ts");
    expect(typings).toContain("dist/cjs/index.d.ts");
    for (const file of typings) {
      expect(readFileSync(join(installed, file), "utf8"), file).not.toContain("@internal");
    }
  });

  it("ships source maps whose sources resolve inside the package", () => {
    const maps = packed.filter((f) => f.endsWith(".map"));
    expect(maps).toContain("dist/index.js.map");
    expect(maps).toContain("dist/cjs/index.js.map");
    expect(maps).toContain("dist/index.d.ts.map");
    for (const map of maps) {
      const json = JSON.parse(readFileSync(join(installed, map), "utf8")) as {
        sources: string[];
        sourceRoot?: string;
        sourcesContent?: string[];
      };
      expect(json.sources.length, map).toBeGreaterThan(0);
      for (const source of json.sources) {
        const target = posix.normalize(posix.join(posix.dirname(map), json.sourceRoot ?? "", source));
        expect(packed, `${map} points at ${source}`).toContain(target);
      }
      // The JavaScript maps carry their sources, so a stack trace resolves even if src/ is stripped.
      if (map.endsWith(".js.map")) expect(json.sourcesContent?.length, map).toBe(json.sources.length);
    }
  });

  it("carries its licence (the workspace's), README and CHANGELOG", () => {
    for (const file of ["LICENSE", "README.md", "CHANGELOG.md", "package.json"]) expect(packed).toContain(file);
    const cargo = readFileSync(join(repoRoot, "Cargo.toml"), "utf8");
    const workspaceLicense = /^license\s*=\s*"([^"]+)"/m.exec(cargo)?.[1];
    expect(workspaceLicense).toBeDefined();
    const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8")) as Record<string, unknown>;
    expect(manifest.license).toBe(workspaceLicense);
    expect(readFileSync(join(installed, "LICENSE"), "utf8")).toContain(workspaceLicense!);
    expect(manifest.repository).toMatchObject({ directory: "clients/typescript" });
    expect(manifest.dependencies ?? {}).toEqual({});
  });

  it("stays under 10 KB minified and gzipped (the budget the README states)", () => {
    const r = spawnSync(process.execPath, [join(pkgDir, "scripts/size.mjs"), "--json"], { cwd: pkgDir, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const { gzipped } = JSON.parse(r.stdout) as { minified: number; gzipped: number };
    expect(gzipped).toBeGreaterThan(1000); // it measured the client, not an empty bundle
    expect(gzipped).toBeLessThan(10 * 1024);
  });
});
