// Real processes for the integration tests: a redis-server and herald gateways
// on free loopback ports, an HTTP publisher, and HS256 JWTs minted with node:crypto.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The gateway binary: `../../target/debug/herald` from clients/typescript (or $HERALD_BIN). */
export const HERALD_BIN = process.env.HERALD_BIN ?? path.resolve(PACKAGE_DIR, "../../target/debug/herald");
export const REDIS_BIN = process.env.REDIS_SERVER_BIN ?? "/usr/bin/redis-server";

// The gateway refuses HS256 secrets shorter than 16 bytes.
export const JWT_SECRET = "test-secret-0123456789";
export const API_KEY = "test-key";

/** Flags of docs/protocol.md these tests start the gateway with. */
const REQUIRED_FLAGS = ["--jwt-secret", "--public-channel", "--history", "--api-key"];

/** Fails with a clear message when the binary is missing or predates the flags the tests need. */
export function checkGatewayBinary(): void {
  if (!existsSync(HERALD_BIN)) {
    throw new Error(`herald binary not found at ${HERALD_BIN}: build it with cargo build -p herald`);
  }
  if (!existsSync(REDIS_BIN)) {
    throw new Error(`redis-server not found at ${REDIS_BIN}: install it (apt-get install redis-server)`);
  }
  const help = spawnSync(HERALD_BIN, ["gateway", "--help"], { encoding: "utf8" });
  const text = `${help.stdout ?? ""}${help.stderr ?? ""}`;
  const missing = REQUIRED_FLAGS.filter((f) => !text.includes(f));
  if (help.status !== 0 || missing.length > 0) {
    throw new Error(
      `${HERALD_BIN} gateway lacks ${missing.join(", ") || "a working --help"}: ` +
        "build the current gateway with cargo build -p herald",
    );
  }
}

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Kills every process the harness started (afterAll). */
export async function killAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopProcess(c, "SIGKILL")));
}

function stopProcess(child: ChildProcess, signal: NodeJS.Signals, timeoutMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      children.delete(child);
      resolve();
    });
    child.kill(signal);
  });
}

/** A free loopback TCP port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function spawnLogged(cmd: string, args: string[], name: string): { child: ChildProcess; output: () => string } {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_BACKTRACE: "0" } });
  children.add(child);
  child.once("exit", () => children.delete(child));
  let out = "";
  const keep = (chunk: Buffer) => {
    out += chunk.toString("utf8");
    if (out.length > 64_000) out = out.slice(-32_000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  child.once("error", (err) => {
    out += `\n[${name}] spawn error: ${err.message}`;
  });
  return { child, output: () => out };
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- redis

export interface Redis {
  port: number;
  url: string;
  stop(): Promise<void>;
}

function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    let buf = "";
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.on("error", () => done(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => {
      buf += d.toString();
      if (buf.includes("\r\n")) done(buf.startsWith("+PONG"));
    });
  });
}

/** Starts an empty redis-server, on `port` when given (e.g. to restart one in place). */
export async function startRedis(port?: number): Promise<Redis> {
  port ??= await freePort();
  const { child, output } = spawnLogged(
    REDIS_BIN,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    "redis",
  );
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited: ${output()}`);
      return redisPing(port!);
    },
    10_000,
    "redis-server to answer PING",
  );
  return { port, url: `redis://127.0.0.1:${port}`, stop: () => stopProcess(child, "SIGTERM") };
}

// ---------------------------------------------------------------- gateway

export interface Gateway {
  instanceId: string;
  port: number;
  http: string;
  ws: string;
  output(): string;
  /** SIGTERM (graceful: clients get 1001) or SIGKILL (connections just drop). */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Sends a signal and returns at once: SIGSTOP freezes the gateway (its sockets stay open, nothing answers), SIGCONT thaws it. */
  signal(signal: NodeJS.Signals): void;
}

export async function startGateway(opts: { instanceId: string; redis: Redis; port?: number; extraArgs?: string[] }): Promise<Gateway> {
  const port = opts.port ?? (await freePort());
  const args = [
    "gateway",
    "--listen",
    `127.0.0.1:${port}`,
    "--broker",
    opts.redis.url,
    "--instance-id",
    opts.instanceId,
    "--jwt-secret",
    JWT_SECRET,
    "--public-channel",
    "news:*",
    "--history",
    "news:*=1000/1h",
    "--api-key",
    API_KEY,
    "--log",
    "warn",
    ...(opts.extraArgs ?? []),
  ];
  const { child, output } = spawnLogged(HERALD_BIN, args, `gateway ${opts.instanceId}`);
  const http = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`gateway ${opts.instanceId} exited (${child.exitCode ?? child.signalCode}):\n${output()}`);
      }
      try {
        const res = await fetch(`${http}/readyz`);
        return res.status === 200;
      } catch {
        return false;
      }
    },
    20_000,
    `gateway ${opts.instanceId} GET /readyz = 200`,
  );
  return {
    instanceId: opts.instanceId,
    port,
    http,
    ws: `ws://127.0.0.1:${port}/ws`,
    output,
    stop: (signal: NodeJS.Signals = "SIGTERM") => stopProcess(child, signal),
    signal: (signal: NodeJS.Signals) => {
      child.kill(signal);
    },
  };
}

// ---------------------------------------------------------------- publishing

export interface PublishResult {
  channel: string;
  offset: number | null;
  epoch: string | null;
  duplicate: boolean;
}

export async function publish(gateway: Gateway, channel: string, data: unknown, idempotencyKey?: string): Promise<PublishResult> {
  const body: Record<string, unknown> = { channel, data };
  if (idempotencyKey !== undefined) body.idempotency_key = idempotencyKey;
  const res = await fetch(`${gateway.http}/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== 200) {
    throw new Error(`POST /api/publish ${JSON.stringify(body)} → ${res.status} ${text}`);
  }
  return JSON.parse(text) as PublishResult;
}

// ---------------------------------------------------------------- JWT

const b64url = (s: string | Buffer) => Buffer.from(s).toString("base64url");

/** An HS256 JWT. `expInSeconds` is relative to now (negative: already expired). */
export function mintJwt(claims: { sub: string; expInSeconds?: number; channels?: string[] }, secret = JWT_SECRET): string {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = { sub: claims.sub, iat: now, exp: now + (claims.expInSeconds ?? 3600) };
  if (claims.channels) payload.channels = claims.channels;
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(payload));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}
