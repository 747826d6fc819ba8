// The client against real herald gateway processes and a real redis-server:
// no mocks. See harness.ts for how they are started.
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  HeraldClient,
  type ConnectionState,
  type ErrorFrame,
  type GapEvent,
  type HeraldClientOptions,
  type HeraldMessage,
  type RecoveredEvent,
  type SubscribedEvent,
} from "../../src/index.js";
import {
  checkGatewayBinary,
  freePort,
  killAll,
  mintJwt,
  publish,
  startGateway,
  startRedis,
  waitFor,
  type Gateway,
  type Redis,
} from "./harness.js";

let redis: Redis;
let publisher: Gateway; // a gateway the clients never connect to, used to publish while they are away
const clients: HeraldClient[] = [];

function newClient(opts: Omit<HeraldClientOptions, "WebSocket">) {
  const client = new HeraldClient({
    WebSocket,
    minReconnectDelayMs: 50,
    maxReconnectDelayMs: 500,
    reconnectWindowMs: 500,
    ...opts,
  });
  clients.push(client);
  const states: ConnectionState[] = [];
  const recovered: RecoveredEvent[] = [];
  const errors: ErrorFrame[] = [];
  client.on("state", (s) => states.push(s));
  client.on("recovered", (r) => recovered.push(r));
  client.on("error", (e) => {
    if (e.type === "error") errors.push(e);
  });
  return { client, states, recovered, errors };
}

/** Resolves at the subscription's next `subscribed` event. */
function subscribedOnce(sub: { once(e: "subscribed", f: (e: SubscribedEvent) => void): unknown }): Promise<SubscribedEvent> {
  return new Promise((resolve) => sub.once("subscribed", resolve));
}

/** Offsets must be consecutive and data must be 0, 1, 2, … in order: no gap, no duplicate. */
function expectExactSequence(got: HeraldMessage<number>[], count: number) {
  expect(got.map((m) => m.data)).toEqual(Array.from({ length: count }, (_, i) => i));
  const first = got[0]!.offset!;
  expect(got.map((m) => m.offset)).toEqual(Array.from({ length: count }, (_, i) => first + i));
  expect(new Set(got.map((m) => m.epoch)).size).toBe(1);
}

beforeAll(async () => {
  checkGatewayBinary();
  redis = await startRedis();
  publisher = await startGateway({ instanceId: "pub", redis });
});

afterEach(() => {
  while (clients.length > 0) clients.pop()!.close();
});

afterAll(async () => {
  for (const c of clients) c.close();
  await killAll();
});

describe("HeraldClient against a real gateway", () => {
  it("subscribes and receives messages in publish order, with positions and times", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      const { client, states } = newClient({ url: gw.ws });
      const got: HeraldMessage<number>[] = [];
      const sub = client.subscribe<number>("news:order", (m) => got.push(m));
      const subscribed: SubscribedEvent[] = [];
      sub.on("subscribed", (e) => subscribed.push(e));
      await client.connect();
      expect(states.find((s) => s.state === "connected")).toMatchObject({ instanceId: "a", user: null });
      await waitFor(() => subscribed.length === 1, 5000, "subscribed");
      expect(subscribed[0]!.recovered).toBeUndefined();

      const results = [];
      for (let i = 0; i < 50; i++) results.push(await publish(gw, "news:order", i));
      await waitFor(() => got.length >= 50, 10_000, "50 messages");
      expectExactSequence(got, 50);
      expect(got.map((m) => m.offset)).toEqual(results.map((r) => r.offset));
      expect(got[0]!.epoch).toBe(results[0]!.epoch);
      for (const m of got) {
        expect(m.channel).toBe("news:order");
        expect(typeof m.time).toBe("number");
        expect(Math.abs(m.time - Date.now())).toBeLessThan(60_000);
      }
      expect(client.duplicatesDropped("news:order")).toBe(0);
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("fails over to gateway B and recovers exactly the 100 messages it missed, then live ones", async () => {
    const a = await startGateway({ instanceId: "a", redis });
    const bPort = await freePort();
    let b: Gateway | undefined;
    try {
      const { client, states, recovered } = newClient({ url: [a.ws, `ws://127.0.0.1:${bPort}/ws`] });
      const got: HeraldMessage<number>[] = [];
      const ready = subscribedOnce(client.subscribe<number>("news:failover", (m) => got.push(m)));
      await client.connect();
      await ready;
      for (let i = 0; i < 5; i++) await publish(publisher, "news:failover", i);
      await waitFor(() => got.length === 5, 10_000, "the first 5 messages");

      // Gateway A shuts down (B is not up yet): the client must not get anything until B is.
      await a.stop("SIGTERM");
      await waitFor(() => states.some((s) => s.state === "disconnected"), 10_000, "the client to see A go");
      const closed = states.find((s) => s.state === "disconnected");
      expect(closed, "a SIGTERMed gateway closes its clients with 1001 (docs/protocol.md)").toMatchObject({
        code: 1001,
        willRetry: true,
      });
      for (let i = 5; i < 105; i++) await publish(publisher, "news:failover", i);
      expect(got).toHaveLength(5);

      b = await startGateway({ instanceId: "b", redis, port: bPort });
      await waitFor(() => got.length === 105, 20_000, "the 100 missed messages from B");
      const connected = states.filter((s) => s.state === "connected");
      expect(connected.at(-1)).toMatchObject({ instanceId: "b" });
      expect(recovered).toEqual([{ channel: "news:failover", recovered: true, missed: 100 }]);

      for (let i = 105; i < 115; i++) await publish(publisher, "news:failover", i);
      await waitFor(() => got.length === 115, 10_000, "live messages after the recovery");
      await new Promise((r) => setTimeout(r, 200));
      expectExactSequence(got, 115);
    } finally {
      await a.stop("SIGKILL");
      await b?.stop("SIGKILL");
    }
  });

  it("recovers after its gateway is killed and restarted on the same address, across the history/live seam", async () => {
    let a = await startGateway({ instanceId: "a", redis });
    const port = a.port;
    try {
      const { client, states, recovered } = newClient({ url: a.ws });
      const got: HeraldMessage<number>[] = [];
      const other: HeraldMessage<number>[] = [];
      // news:quiet has history, but the client sees none of its messages before the drop:
      // it must resume from the position of its `subscribed` frame.
      await publish(publisher, "news:quiet", "before");
      const ready = subscribedOnce(client.subscribe<number>("news:restart", (m) => got.push(m)));
      const quietReady = subscribedOnce(client.subscribe<number>("news:quiet", (m) => other.push(m)));
      await client.connect();
      await ready;
      expect((await quietReady).position).not.toBeNull();
      expect(client.positionOf("news:quiet")).toBeDefined();
      for (let i = 0; i < 3; i++) await publish(publisher, "news:restart", i);
      await waitFor(() => got.length === 3, 10_000, "the first 3 messages");

      await a.stop("SIGKILL"); // connections just drop: 1006, reconnect with backoff
      await waitFor(() => states.some((s) => s.state === "reconnecting"), 10_000, "a reconnect to be scheduled");
      expect(states.find((s) => s.state === "disconnected")).toMatchObject({ code: 1006, willRetry: true });
      for (let i = 3; i < 103; i++) await publish(publisher, "news:restart", i);
      for (let i = 0; i < 7; i++) await publish(publisher, "news:quiet", i);

      a = await startGateway({ instanceId: "a", redis, port });
      // Live messages published while the recovery is being replayed must come after it, once.
      const live = (async () => {
        await waitFor(() => got.length > 3, 20_000, "recovery to start");
        for (let i = 103; i < 123; i++) await publish(publisher, "news:restart", i);
      })();
      await live;
      await waitFor(() => got.length === 123 && other.length === 7, 20_000, "recovered and live messages");
      await new Promise((r) => setTimeout(r, 200));
      expectExactSequence(got, 123);
      expectExactSequence(other, 7);
      expect(recovered).toContainEqual({ channel: "news:restart", recovered: true, missed: 100 });
      expect(recovered).toContainEqual({ channel: "news:quiet", recovered: true, missed: 7 });
    } finally {
      await a.stop("SIGKILL");
    }
  });

  it("on 4005 (token expired) gets a fresh token from getToken and reconnects at once, missing nothing", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      let calls = 0;
      const getToken = async () => {
        calls += 1;
        return mintJwt({ sub: "42", expInSeconds: 3600 });
      };
      const { client, states, recovered } = newClient({
        url: gw.ws,
        token: mintJwt({ sub: "42", expInSeconds: 3 }),
        getToken,
      });
      const got: HeraldMessage<number>[] = [];
      const mine: HeraldMessage[] = [];
      const ready = subscribedOnce(client.subscribe<number>("news:token", (m) => got.push(m)));
      client.subscribe("user:42", (m) => mine.push(m));
      await client.connect();
      expect(client.connection?.user).toBe("42");
      await ready;
      await publish(publisher, "news:token", 0);
      await waitFor(() => got.length === 1, 5000, "the first message");

      await waitFor(() => states.some((s) => s.state === "disconnected"), 10_000, "the token to expire (4005)");
      const closed = states.find((s) => s.state === "disconnected");
      expect(closed).toMatchObject({ code: 4005, willRetry: true });
      const next = states[states.indexOf(closed!) + 1];
      expect(next).toMatchObject({ state: "reconnecting", delayMs: 0 });
      await waitFor(() => states.filter((s) => s.state === "connected").length === 2, 10_000, "the reconnect");
      expect(calls).toBe(1);

      await publish(publisher, "news:token", 1);
      await publish(publisher, "user:42", { hello: "me" });
      await waitFor(() => got.length === 2 && mine.length === 1, 5000, "messages after the refresh");
      expectExactSequence(got, 2);
      expect(mine[0]).toMatchObject({ channel: "user:42", data: { hello: "me" } });
      expect(recovered).toContainEqual(expect.objectContaining({ channel: "news:token", recovered: true }));
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("after 4005, a getToken that throws and then never settles is retried with backoff, and the client comes back missing nothing", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      let calls = 0;
      const getToken = async (): Promise<string> => {
        calls += 1;
        if (calls === 1) throw new Error("token service down");
        if (calls === 2) return new Promise<string>(() => {});
        return mintJwt({ sub: "42", expInSeconds: 3600 });
      };
      const { client, states } = newClient({ url: gw.ws, token: mintJwt({ sub: "42", expInSeconds: 2 }), getToken, getTokenTimeoutMs: 500 });
      const got: HeraldMessage<number>[] = [];
      const ready = subscribedOnce(client.subscribe<number>("news:token-retry", (m) => got.push(m)));
      await client.connect();
      await ready;
      await publish(publisher, "news:token-retry", 0);
      await waitFor(() => got.length === 1, 5000, "the first message");
      await waitFor(() => states.filter((s) => s.state === "connected").length === 2, 15_000, "the reconnect after 4005");
      expect(calls).toBe(3);
      // Both failures were retried (never a stop), each after a backoff.
      const closed = states.find((s) => s.state === "disconnected")!;
      expect(closed).toMatchObject({ code: 4005, willRetry: true });
      expect(states.filter((s) => s.state === "disconnected" && !s.willRetry)).toEqual([]);
      expect(states.filter((s) => s.state === "reconnecting")).toHaveLength(2);
      await publish(publisher, "news:token-retry", 1);
      await waitFor(() => got.length === 2, 5000, "the message after the refresh");
      expectExactSequence(got, 2);
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("stops after maxTokenRejections when the gateway rejects every fresh token (4004), backing off in between", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      let calls = 0;
      // A different token each time (another subject), each signed with the wrong secret.
      const forged = () => mintJwt({ sub: `forged-${calls}` }, "not-the-gateway-secret-0123");
      const { client, states } = newClient({
        url: gw.ws,
        token: forged(),
        getToken: async () => {
          calls += 1;
          return forged();
        },
        maxTokenRejections: 3,
        random: () => 0.999,
      });
      await expect(client.connect()).rejects.toThrow("4004");
      expect(states.at(-1)).toMatchObject({ state: "disconnected", code: 4004, willRetry: false });
      expect(calls).toBe(3);
      const delays = states.flatMap((s) => (s.state === "reconnecting" ? [s.delayMs] : []));
      expect(delays).toHaveLength(2);
      expect(delays[0]).toBe(0);
      expect(delays[1]).toBeGreaterThan(0);
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("an already expired token is refused with 4005 and replaced through getToken", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      const { client, states } = newClient({
        url: gw.ws,
        token: mintJwt({ sub: "42", expInSeconds: -60 }),
        getToken: async () => mintJwt({ sub: "42" }),
      });
      await client.connect();
      expect(states.find((s) => s.state === "disconnected")).toMatchObject({ code: 4005, willRetry: true });
      expect(client.connection?.user).toBe("42");
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("a badly signed token is refused with 4004 and the client stops", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      const { client, states } = newClient({ url: gw.ws, token: mintJwt({ sub: "42" }, "wrong-secret") });
      await expect(client.connect()).rejects.toThrow(/4004/);
      expect(states.at(-1)).toMatchObject({ state: "disconnected", code: 4004, willRetry: false });
      expect(states.filter((s) => s.state === "connecting")).toHaveLength(1);
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("sends the token in the first frame, never in the URL; ?token= stays available", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      const { client, states } = newClient({ url: gw.ws, token: mintJwt({ sub: "42" }) });
      const authenticated: unknown[] = [];
      client.on("authenticated", (e) => authenticated.push(e));
      const mine: HeraldMessage[] = [];
      const ready = subscribedOnce(client.subscribe("user:42", (m) => mine.push(m)));
      await client.connect();
      expect(states.filter((s) => s.state === "connecting").map((s) => (s as { url: string }).url)).toEqual([gw.ws]);
      expect(client.connection?.user).toBe("42");
      expect(authenticated).toEqual([expect.objectContaining({ user: "42" })]);
      await ready;
      await publish(gw, "user:42", "in-band");
      await waitFor(() => mine.length === 1, 5000, "the personal message");

      const old = newClient({ url: gw.ws, token: mintJwt({ sub: "7" }), tokenTransport: "query" });
      await old.client.connect();
      expect(old.client.connection?.user).toBe("7");
      expect((old.states.find((s) => s.state === "connecting") as { url: string }).url).toBe(gw.ws);
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("gets a forbidden error for another user's channel and keeps its other subscriptions", async () => {
    const gw = await startGateway({ instanceId: "a", redis });
    try {
      const { client, errors } = newClient({ url: gw.ws, token: mintJwt({ sub: "42" }) });
      const subErrors: ErrorFrame[] = [];
      const theirs = client.subscribe("user:7", () => {
        throw new Error("must not receive user:7");
      });
      theirs.on("error", (e) => subErrors.push(e));
      const mine: HeraldMessage[] = [];
      const own = client.subscribe("user:42", (m) => mine.push(m));
      const ownSubscribed: SubscribedEvent[] = [];
      own.on("subscribed", (e) => ownSubscribed.push(e));
      await client.connect();
      await waitFor(() => subErrors.length === 1 && ownSubscribed.length === 1, 5000, "forbidden + subscribed");
      expect(subErrors[0]).toMatchObject({ type: "error", channel: "user:7", code: "forbidden" });
      expect(typeof subErrors[0]!.message).toBe("string");
      expect(errors).toEqual(subErrors);
      expect(ownSubscribed[0]).toMatchObject({ channel: "user:42", position: null });

      await publish(publisher, "user:7", "secret");
      await publish(publisher, "user:42", "hello");
      await waitFor(() => mine.length === 1, 5000, "own message");
      expect(mine[0]).toMatchObject({ channel: "user:42", data: "hello" });
      expect(mine[0]!.offset).toBeUndefined();

      // anonymous clients may only have public channels
      const anon = newClient({ url: gw.ws });
      const anonErrors: ErrorFrame[] = [];
      anon.client.subscribe("private:x", () => {}).on("error", (e) => anonErrors.push(e));
      await anon.client.connect();
      await waitFor(() => anonErrors.length === 1, 5000, "anonymous forbidden");
      expect(anonErrors[0]).toMatchObject({ channel: "private:x", code: "forbidden" });
    } finally {
      await gw.stop("SIGKILL");
    }
  });

  it("stays connected across Redis restarting empty: a gap resets its position before the new epoch's messages", async () => {
    const own = await startRedis();
    const gw = await startGateway({ instanceId: "a", redis: own, extraArgs: ["--broker-reconnect-max", "300ms"] });
    try {
      const { client, states } = newClient({ url: gw.ws });
      const seen: Array<HeraldMessage<number> | GapEvent> = [];
      const sub = client.subscribe<number>("news:reset", (m) => seen.push(m));
      sub.on("gap", (g) => seen.push(g));
      const ready = subscribedOnce(sub);
      await client.connect();
      await ready;
      const old = await publish(gw, "news:reset", 0);
      await waitFor(() => seen.length === 1, 5000, "the old epoch's message");

      const isReady = async () => (await fetch(`${gw.http}/readyz`)).status === 200;
      await own.stop();
      await waitFor(async () => !(await isReady()), 10_000, "the gateway to notice Redis is gone");
      const again = await startRedis(own.port);
      try {
        // The gateway fills its own gap before it is ready again; publishing after that
        // means its fill found the channel with no epoch yet, so its gap carries no position.
        await waitFor(isReady, 10_000, "the gateway to be ready on the empty Redis");
        // Publish with idempotency keys, so that a retry of a publish that landed is harmless.
        const results = [];
        for (let i = 1; i <= 3; i++) {
          for (let attempt = 0; ; attempt++) {
            try {
              results.push(await publish(gw, "news:reset", i, `reset-${i}`));
              break;
            } catch (err) {
              if (attempt > 200) throw err;
              await new Promise((r) => setTimeout(r, 50));
            }
          }
        }
        const epoch = results[0]!.epoch!;
        expect(epoch).not.toBe(old.epoch);
        await waitFor(() => seen.length === 5, 10_000, "the gap and the new epoch's 3 messages");
        expect(seen[1]).toEqual({ channel: "news:reset", reason: "epoch_changed", position: null });
        const fresh = seen.slice(2) as HeraldMessage<number>[];
        expect(fresh.map((m) => [m.data, m.offset, m.epoch])).toEqual([
          [1, 1, epoch],
          [2, 2, epoch],
          [3, 3, epoch],
        ]);
        expect(client.positionOf("news:reset")).toEqual({ offset: 3, epoch });
        // It never had to reconnect: the gap reached it on its live connection.
        expect(states.filter((s) => s.state === "connected")).toHaveLength(1);
      } finally {
        await again.stop();
      }
    } finally {
      await gw.stop("SIGKILL");
    }
  });
});

describe("HeraldClient liveness against a real gateway", () => {
  it("pings with the protocol's ping frame at the gateway's interval, and replaces the socket of a frozen gateway", async () => {
    const gw = await startGateway({ instanceId: "live", redis, extraArgs: ["--ping-interval", "500ms"] });
    const sent: Array<{ type: string; id?: number }> = [];
    const received: Array<{ type: string; id?: number }> = [];
    // The `ws` socket, spied on: what the client sends and what the gateway answers.
    class SpyWebSocket extends WebSocket {
      constructor(url: string) {
        super(url);
        this.addEventListener("message", (e) => received.push(JSON.parse(String(e.data))));
      }
      override send(data: string): void {
        sent.push(JSON.parse(data));
        super.send(data);
      }
    }
    try {
      // No pingIntervalMs: liveness is on by default and follows the gateway's ping_interval_ms.
      const client = new HeraldClient({
        url: gw.ws,
        WebSocket: SpyWebSocket,
        minReconnectDelayMs: 50,
        maxReconnectDelayMs: 500,
        connectTimeoutMs: 1_000,
      });
      clients.push(client);
      const states: ConnectionState[] = [];
      client.on("state", (s) => states.push(s));
      await client.connect();
      expect(client.connection?.ping_interval_ms).toBe(500);
      await waitFor(() => received.filter((f) => f.type === "pong").length >= 3, 10_000, "three pongs");
      const pings = sent.filter((f) => f.type === "ping").map((f) => f.id);
      const pongs = received.filter((f) => f.type === "pong").map((f) => f.id);
      expect(pings.length).toBeGreaterThanOrEqual(3);
      for (const id of pongs) expect(pings).toContain(id);
      expect(states.filter((s) => s.state === "disconnected")).toEqual([]);

      // Frozen: the TCP connection stays open but nothing answers, as after a sleep or a network change.
      gw.signal("SIGSTOP");
      await waitFor(() => states.some((s) => s.state === "disconnected"), 10_000, "the ping deadline to pass");
      expect(states.find((s) => s.state === "disconnected")).toMatchObject({
        code: 4001,
        reason: "ping timeout (client)",
        willRetry: true,
      });
      // The next attempt's upgrade is never answered either: the connect timeout fails it.
      await waitFor(
        () => states.some((s) => s.state === "disconnected" && s.reason === "connect timeout (client)"),
        10_000,
        "the connect timeout",
      );
      gw.signal("SIGCONT");
      await waitFor(() => states.filter((s) => s.state === "connected").length === 2, 20_000, "the reconnect");
    } finally {
      gw.signal("SIGCONT");
      await gw.stop("SIGKILL");
    }
  });
});
