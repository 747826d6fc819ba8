// `close()` from anywhere leaves no timer and no socket behind: a Node
// process that uses the built package (dist/) and closes the client exits on
// its own. Anything left running (a ping interval, a getToken timeout, a
// socket) would keep it alive, and the deadline below would kill it instead.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkGatewayBinary, killAll, mintJwt, startGateway, startRedis, type Gateway } from "./harness.js";

const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const DIST = path.join(PACKAGE_DIR, "dist/index.js");
/** Generous: a process that exits on its own does so in well under a second. */
const EXIT_DEADLINE_MS = 20_000;

/** Runs `script` (an ES module, cwd = the package) and reports how the process ended. */
function runNode(script: string, env: Record<string, string>): Promise<{ exitedOnItsOwn: boolean; code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: PACKAGE_DIR,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    let killed = false;
    const deadline = setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, EXIT_DEADLINE_MS);
    child.once("error", (e) => {
      clearTimeout(deadline);
      reject(e);
    });
    child.once("exit", (code) => {
      clearTimeout(deadline);
      resolve({ exitedOnItsOwn: !killed, code, stdout, stderr });
    });
  });
}

let gateway: Gateway;

beforeAll(async () => {
  if (!existsSync(DIST)) throw new Error(`${DIST} not found: run \`npm run build\` before the tests`);
  checkGatewayBinary();
  const redis = await startRedis();
  gateway = await startGateway({ instanceId: "exit", redis });
});

afterAll(async () => {
  await killAll();
});

describe("a Node process using the built client", () => {
  it("exits on its own after close() inside a `connected` listener", async () => {
    const script = `
      import WebSocket from "ws";
      import { HeraldClient } from "./dist/index.js";
      const client = new HeraldClient({ url: process.env.URL, token: process.env.TOKEN, WebSocket, pingIntervalMs: 500 });
      client.subscribe("news:exit", () => {});
      client.on("state", (s) => {
        if (s.state === "connected") {
          client.close();
          console.log("closed-in-connected-listener");
        }
      });
      client.connect().catch(() => {});
    `;
    const run = await runNode(script, { URL: gateway.ws, TOKEN: mintJwt({ sub: "exit-test" }) });
    expect(run.stderr).toBe("");
    expect(run.stdout).toContain("closed-in-connected-listener");
    expect(run.exitedOnItsOwn).toBe(true);
    expect(run.code).toBe(0);
  });

  // The getToken timeout is far past the deadline: a timer close() left behind would be seen.
  it("exits on its own after close() while getToken has not settled", async () => {
    const script = `
      import WebSocket from "ws";
      import { HeraldClient } from "./dist/index.js";
      const client = new HeraldClient({ url: process.env.URL, WebSocket, getToken: () => new Promise(() => {}), getTokenTimeoutMs: 600_000 });
      client.connect().catch(() => {});
      setTimeout(() => {
        client.close();
        console.log("closed-during-getToken");
      }, 100);
    `;
    const run = await runNode(script, { URL: gateway.ws });
    expect(run.stderr).toBe("");
    expect(run.stdout).toContain("closed-during-getToken");
    expect(run.exitedOnItsOwn).toBe(true);
    expect(run.code).toBe(0);
  });
});
