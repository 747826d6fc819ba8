// The client's decisions, driven through a scripted in-memory WebSocket (the
// real gateway is exercised by test/integration).
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { HandlerError, HeraldClient, UnauthorizedError, type ConnectionState, type HeraldMessage, type WebSocketLike } from "../../src/index.js";

class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: unknown[] = [];
  closedByClient: { code?: number; reason?: string } | undefined;
  onopen: ((e: unknown) => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onclose: ((e: { code: number; reason: string }) => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }
  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }
  // server side
  accept(user: string | null = null): void {
    this.readyState = 1;
    this.onopen?.({});
    this.frame({ type: "connected", protocol: 1, client_id: "c1", instance_id: "a", user, ping_interval_ms: 25000 });
    // A gateway answers the client's first-frame token.
    if (this.authToken() !== undefined) this.frame({ type: "authenticated", user });
  }
  /** The token the client sent in its first frame, if it did. */
  authToken(): string | undefined {
    const first = this.sent[0] as { type?: string; token?: string } | undefined;
    return first?.type === "auth" ? first.token : undefined;
  }
  /** What the client sent after its `auth` frame. */
  afterAuth(): unknown[] {
    return this.authToken() !== undefined ? this.sent.slice(1) : this.sent;
  }
  /** The socket opens; the gateway reads the first frame before answering. */
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  frame(f: object): void {
    this.onmessage?.({ data: JSON.stringify(f) });
  }
  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  static last(): FakeSocket {
    return FakeSocket.all[FakeSocket.all.length - 1]!;
  }
}

function makeClient(extra: Partial<ConstructorParameters<typeof HeraldClient>[0]> = {}) {
  const states: ConnectionState[] = [];
  const client = new HeraldClient({ url: "ws://gw/ws", WebSocket: FakeSocket, random: () => 0.5, ...extra });
  client.on("state", (s) => states.push(s));
  return { client, states };
}

const flush = () => new Promise((r) => setImmediate(r));

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe("HeraldClient close-code decisions", () => {
  it("reconnects after 1001 within the reconnect window and at once after 4000, to the next url", async () => {
    const { client, states } = makeClient({ url: ["ws://a/ws", "ws://b/ws"] });
    void client.connect();
    await flush();
    FakeSocket.last().accept();
    vi.advanceTimersByTime(5_000); // the connection lasted
    FakeSocket.last().serverClose(1001, "server shutting down");
    await flush();
    // random() = 0.5 in a window of 5 000 ms
    expect(states.slice(-2)).toEqual([
      { state: "disconnected", code: 1001, reason: "server shutting down", willRetry: true },
      { state: "reconnecting", attempt: 1, delayMs: 2500, code: 1001 },
    ]);
    vi.advanceTimersByTime(2499);
    await flush();
    expect(FakeSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(1);
    await flush();
    expect(FakeSocket.all.map((s) => s.url)).toEqual(["ws://a/ws", "ws://b/ws"]);
    FakeSocket.last().accept();
    vi.advanceTimersByTime(5_000);
    FakeSocket.last().serverClose(4000);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 0 });
    client.close();
  });

  it("backs off with growing caps on 1011/4001/4003/4006/1006 and resets after a connection that lasted", async () => {
    const { client, states } = makeClient({ random: () => 0.999999, minReconnectDelayMs: 100, maxReconnectDelayMs: 1000 });
    void client.connect();
    await flush();
    const delays: number[] = [];
    for (const code of [1011, 4001, 4003, 4006, 1006, 1006]) {
      FakeSocket.last().serverClose(code);
      await flush();
      const s = states.at(-1)!;
      expect(s.state).toBe("reconnecting");
      if (s.state === "reconnecting") delays.push(s.delayMs);
      vi.advanceTimersByTime(1000);
      await flush();
    }
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000]);
    FakeSocket.last().accept();
    vi.advanceTimersByTime(5_000); // only a connection that lasted resets the backoff
    FakeSocket.last().serverClose(1011);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", attempt: 1, delayMs: 100 });
    client.close();
  });

  it.each([1011, 1006, 4000, 1001])(
    "never loops on a gateway that accepts and closes at once with %i: the delays grow",
    async (code) => {
      const { client, states } = makeClient({ random: () => 0.5 });
      void client.connect();
      await flush();
      const delays: number[] = [];
      for (let i = 0; i < 10; i++) {
        FakeSocket.last().accept();
        FakeSocket.last().serverClose(code);
        await flush();
        const s = states.at(-1)!;
        expect(s.state).toBe("reconnecting");
        if (s.state === "reconnecting") {
          delays.push(s.delayMs);
          expect(s.attempt).toBe(i + 1);
          vi.advanceTimersByTime(s.delayMs);
        }
        await flush();
      }
      expect(FakeSocket.all).toHaveLength(11);
      // "Reconnect now" codes may take their one immediate (or spread) reconnect; every later one backs off.
      const rest = code === 4000 || code === 1001 ? delays.slice(1) : delays;
      for (let i = 1; i < rest.length; i++) expect(rest[i]).toBeGreaterThan(rest[i - 1]!);
      expect(delays.filter((d) => d === 0).length).toBeLessThanOrEqual(1);
      expect(rest.at(-1)).toBeGreaterThanOrEqual(12_800);
      client.close();
    },
  );

  it("spreads 1001 reconnects of many clients over the reconnect window", async () => {
    const delays: number[] = [];
    for (let i = 0; i < 50; i++) {
      const { client, states } = makeClient({ random: Math.random });
      void client.connect();
      await flush();
      FakeSocket.last().accept();
      vi.advanceTimersByTime(5_000);
      FakeSocket.last().serverClose(1001, "server shutting down");
      await flush();
      const s = states.at(-1)!;
      if (s.state === "reconnecting") delays.push(s.delayMs);
      client.close();
    }
    expect(delays).toHaveLength(50);
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(5_000);
    }
    expect(new Set(delays).size).toBeGreaterThan(10);
    expect(delays.filter((d) => d === 0).length).toBeLessThan(50);
  });

  it.each([1002, 1003, 1007, 1009, 4002])("stops on %i", async (code) => {
    const { client, states } = makeClient();
    const ready = client.connect();
    await flush();
    FakeSocket.last().serverClose(code);
    await expect(ready).rejects.toThrow(String(code));
    expect(states.at(-1)).toEqual({ state: "disconnected", code, reason: "", willRetry: false });
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.all).toHaveLength(1);
  });

  it("stops on 4004 without getToken, or when getToken gives the same token", async () => {
    const a = makeClient({ token: "t1" });
    void a.client.connect();
    await flush();
    FakeSocket.last().serverClose(4004, "unauthorized");
    await flush();
    expect(a.states.at(-1)).toMatchObject({ state: "disconnected", code: 4004, willRetry: false });

    const getToken = vi.fn(async () => "t1");
    const b = makeClient({ token: "t1", getToken });
    void b.client.connect();
    await flush();
    FakeSocket.last().serverClose(4004, "unauthorized");
    await flush();
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(b.states.at(-1)).toMatchObject({ state: "disconnected", code: 4004, willRetry: false });
  });

  it("goes on after 4004 when getToken gives a new token", async () => {
    const { client, states } = makeClient({ token: "bad", getToken: async () => "good" });
    void client.connect();
    await flush();
    FakeSocket.last().serverClose(4004);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 0 });
    vi.advanceTimersByTime(0);
    await flush();
    expect(FakeSocket.last().url).toBe("ws://gw/ws");
    FakeSocket.last().open();
    expect(FakeSocket.last().authToken()).toBe("good");
    client.close();
  });

  it("on 4005 fetches a fresh token and reconnects at once, resubscribing with since", async () => {
    let n = 0;
    const getToken = vi.fn(async () => `tok${++n}`);
    const { client, states } = makeClient({ getToken });
    const got: HeraldMessage[] = [];
    client.subscribe("news:a", (m) => got.push(m));
    void client.connect();
    await flush();
    expect(FakeSocket.last().url).toBe("ws://gw/ws");
    FakeSocket.last().accept("42");
    expect(FakeSocket.last().authToken()).toBe("tok1");
    expect(FakeSocket.last().afterAuth()).toEqual([{ type: "subscribe", id: 1, channels: [{ channel: "news:a" }] }]);
    FakeSocket.last().frame({ type: "subscribed", id: 1, channel: "news:a", position: { offset: 4, epoch: "E" } });
    FakeSocket.last().frame({ type: "message", channel: "news:a", offset: 5, epoch: "E", data: 5, time: 1 });
    FakeSocket.last().serverClose(4005, "token expired");
    await flush();
    expect(states.slice(-2)).toEqual([
      { state: "disconnected", code: 4005, reason: "token expired", willRetry: true },
      { state: "reconnecting", attempt: 1, delayMs: 0, code: 4005 },
    ]);
    vi.advanceTimersByTime(0);
    await flush();
    expect(FakeSocket.last().url).toBe("ws://gw/ws");
    FakeSocket.last().accept("42");
    expect(FakeSocket.last().authToken()).toBe("tok2");
    expect(FakeSocket.last().afterAuth()[0]).toMatchObject({
      type: "subscribe",
      channels: [{ channel: "news:a", since: { offset: 5, epoch: "E" } }],
    });
    client.close();
  });

  it("backs off when fresh tokens keep expiring before connected", async () => {
    const { client, states } = makeClient({ getToken: async () => `t${Math.random()}` });
    void client.connect();
    await flush();
    FakeSocket.last().serverClose(4005);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 0 });
    vi.advanceTimersByTime(0);
    await flush();
    FakeSocket.last().serverClose(4005);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 50 });
    client.close();
  });

  it("close() is clean: no reconnect, state disconnected", async () => {
    const { client, states } = makeClient();
    void client.connect();
    await flush();
    const s = FakeSocket.last();
    s.accept();
    client.close();
    expect(s.closedByClient).toEqual({ code: 1000, reason: "client closed" });
    expect(states.at(-1)).toEqual({ state: "disconnected", code: 1000, reason: "client closed", willRetry: false });
    s.serverClose(1000);
    vi.advanceTimersByTime(60_000);
    await flush();
    expect(FakeSocket.all).toHaveLength(1);
  });
});

describe("HeraldClient subscriptions", () => {
  it("drops duplicates, remembers positions, reports recovery and errors", async () => {
    const { client } = makeClient();
    const got: number[] = [];
    const sub = client.subscribe<number>("news:a", (m) => got.push(m.data));
    const subscribed: unknown[] = [];
    sub.on("subscribed", (e) => subscribed.push(e));
    const recovered: unknown[] = [];
    client.on("recovered", (e) => recovered.push(e));
    void client.connect();
    await flush();
    let s = FakeSocket.last();
    s.accept();
    s.frame({ type: "subscribed", id: 1, channel: "news:a", position: { offset: 2, epoch: "E" } });
    for (const o of [3, 4, 4, 3, 5]) s.frame({ type: "message", channel: "news:a", offset: o, epoch: "E", data: o, time: 1 });
    expect(got).toEqual([3, 4, 5]);
    expect(client.duplicatesDropped("news:a")).toBe(2);
    s.serverClose(1006);
    await flush();
    vi.advanceTimersByTime(1000);
    await flush();
    s = FakeSocket.last();
    s.accept();
    expect(s.sent[0]).toMatchObject({ channels: [{ channel: "news:a", since: { offset: 5, epoch: "E" } }] });
    s.frame({ type: "subscribed", id: 2, channel: "news:a", position: { offset: 8, epoch: "E" }, recovered: true });
    for (const o of [5, 6, 7, 8, 8, 9]) s.frame({ type: "message", channel: "news:a", offset: o, epoch: "E", data: o, time: 1 });
    expect(got).toEqual([3, 4, 5, 6, 7, 8, 9]);
    expect(recovered).toEqual([{ channel: "news:a", recovered: true, missed: 3 }]);
    expect(subscribed).toEqual([
      { channel: "news:a", position: { offset: 2, epoch: "E" } },
      { channel: "news:a", position: { offset: 8, epoch: "E" }, recovered: true },
    ]);

    const errors: unknown[] = [];
    const forbidden = client.subscribe("user:7", () => {});
    forbidden.on("error", (e) => errors.push(e));
    expect(s.sent.at(-1)).toMatchObject({ type: "subscribe", channels: [{ channel: "user:7" }] });
    const id = (s.sent.at(-1) as { id: number }).id;
    s.frame({ type: "error", id, channel: "user:7", code: "forbidden", message: "no" });
    expect(errors).toEqual([{ type: "error", id, channel: "user:7", code: "forbidden", message: "no" }]);

    sub.unsubscribe();
    expect(s.sent.at(-1)).toMatchObject({ type: "unsubscribe", channels: ["news:a"] });
    s.frame({ type: "message", channel: "news:a", offset: 10, epoch: "E", data: 10, time: 1 });
    expect(got).toHaveLength(7);

    // after a reconnect the forbidden channel is not asked again with the same token
    s.serverClose(1001);
    await flush();
    vi.advanceTimersByTime(5_000);
    await flush();
    FakeSocket.last().accept();
    expect(FakeSocket.last().sent).toEqual([]);
    client.close();
  });

  it("sends application pings when asked and drops a silent connection", async () => {
    const { client, states } = makeClient({ pingIntervalMs: 1000, pongTimeoutMs: 500 });
    void client.connect();
    await flush();
    const s = FakeSocket.last();
    s.accept();
    vi.advanceTimersByTime(1000);
    expect(s.sent.at(-1)).toMatchObject({ type: "ping" });
    s.frame({ type: "pong", id: 1 });
    vi.advanceTimersByTime(1000);
    vi.advanceTimersByTime(500);
    await flush();
    expect(s.closedByClient).toBeDefined();
    expect(states.find((x) => x.state === "disconnected")).toMatchObject({ code: 4001, willRetry: true });
    client.close();
  });

  it("on a gap frame resets the channel's position, emits `gap`, and resumes from the new epoch", async () => {
    const { client } = makeClient();
    const got: Array<[number, string | undefined]> = [];
    const sub = client.subscribe<number>("news:a", (m) => got.push([m.data, m.epoch]));
    const subGaps: unknown[] = [];
    sub.on("gap", (e) => subGaps.push(e));
    const gaps: unknown[] = [];
    client.on("gap", (e) => gaps.push(e));
    void client.connect();
    await flush();
    let s = FakeSocket.last();
    s.accept();
    s.frame({ type: "subscribed", id: 1, channel: "news:a", position: { offset: 3, epoch: "A" } });
    s.frame({ type: "message", channel: "news:a", offset: 4, epoch: "A", data: 4, time: 1 });
    // Redis restarted empty: the gateway says so before the new epoch's first message.
    s.frame({ type: "gap", channel: "news:a", reason: "epoch_changed", position: { offset: 0, epoch: "B" } });
    const reset = { channel: "news:a", reason: "epoch_changed", position: { offset: 0, epoch: "B" } };
    expect(gaps).toEqual([reset]);
    expect(subGaps).toEqual([reset]);
    expect(client.positionOf("news:a")).toEqual({ offset: 0, epoch: "B" });
    for (const o of [1, 2]) s.frame({ type: "message", channel: "news:a", offset: o, epoch: "B", data: o, time: 1 });
    expect(got).toEqual([
      [4, "A"],
      [1, "B"],
      [2, "B"],
    ]);
    // A reconnect resumes from the new epoch, not the void one.
    s.serverClose(1001);
    await flush();
    vi.advanceTimersByTime(5_000);
    await flush();
    s = FakeSocket.last();
    s.accept();
    expect(s.sent[0]).toMatchObject({ channels: [{ channel: "news:a", since: { offset: 2, epoch: "B" } }] });
    s.frame({ type: "subscribed", id: 2, channel: "news:a", position: { offset: 2, epoch: "B" }, recovered: true });

    // An unfillable gap ahead in the same epoch: what lies at or before its position is stale.
    s.frame({ type: "gap", channel: "news:a", reason: "unrecoverable", position: { offset: 9, epoch: "B" } });
    s.frame({ type: "message", channel: "news:a", offset: 8, epoch: "B", data: 8, time: 1 });
    s.frame({ type: "message", channel: "news:a", offset: 10, epoch: "B", data: 10, time: 1 });
    expect(got.at(-1)).toEqual([10, "B"]);
    expect(got).toHaveLength(4);
    // An unknown position forgets the stored one: the next subscribe asks for no recovery.
    s.frame({ type: "gap", channel: "news:a", reason: "unrecoverable", position: null });
    expect(client.positionOf("news:a")).toBeUndefined();
    expect(gaps).toHaveLength(3);
    // A gap on a channel the client does not hold is ignored.
    s.frame({ type: "gap", channel: "news:other", reason: "unrecoverable", position: null });
    expect(gaps).toHaveLength(3);
    client.close();
  });
});

describe("HeraldClient token transport", () => {
  it("sends the token in the first frame, never in the URL, and is connected once the gateway answers it", async () => {
    const { client, states } = makeClient({ token: "jwt-1" });
    const authenticated: unknown[] = [];
    client.on("authenticated", (e) => authenticated.push(e));
    client.subscribe("user:42", () => {});
    const ready = client.connect();
    await flush();
    const s = FakeSocket.last();
    expect(s.url).toBe("ws://gw/ws");
    s.open();
    expect(s.sent).toEqual([{ type: "auth", token: "jwt-1" }]);
    // A gateway with public channels says `connected` (anonymous) before reading the frame.
    s.frame({ type: "connected", protocol: 1, client_id: "c1", instance_id: "a", user: null });
    expect(states.at(-1)?.state).toBe("connecting");
    s.frame({ type: "authenticated", user: "42", expires_in_ms: 60000 });
    await ready;
    expect(authenticated).toEqual([{ user: "42", expiresInMs: 60000 }]);
    expect(states.at(-1)).toMatchObject({ state: "connected", user: "42" });
    expect(client.connection?.user).toBe("42");
    // Subscribes follow the auth frame, so the gateway handles them as user 42.
    expect(s.sent.slice(1)).toEqual([{ type: "subscribe", id: 1, channels: [{ channel: "user:42" }] }]);
    client.close();
  });

  it("an anonymous client sends no auth frame and is connected at once", async () => {
    const { client, states } = makeClient();
    void client.connect();
    await flush();
    FakeSocket.last().accept();
    expect(FakeSocket.last().sent).toEqual([]);
    expect(states.at(-1)).toMatchObject({ state: "connected", user: null });
    client.close();
  });

  it("keeps the old ?token= way on request", async () => {
    const { client, states } = makeClient({ token: "jwt 1", tokenTransport: "query" });
    void client.connect();
    await flush();
    expect(FakeSocket.last().url).toBe("ws://gw/ws?token=jwt+1");
    FakeSocket.last().accept("42");
    expect(FakeSocket.last().sent).toEqual([]);
    expect(states.at(-1)).toMatchObject({ state: "connected", user: "42" });
    client.close();
  });

  it("backs off after 4007 (no auth frame in time)", async () => {
    const { client, states } = makeClient();
    void client.connect();
    await flush();
    FakeSocket.last().open();
    FakeSocket.last().serverClose(4007, "auth timeout");
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", code: 4007 });
    expect((states.at(-1) as { delayMs: number }).delayMs).toBeGreaterThan(0);
    client.close();
  });
});

describe("HeraldClient and exceptions thrown by application code", () => {
  it("catches a throwing handler and listener, reports them as `error` events and the hook, and keeps delivering", async () => {
    const hooked: HandlerError[] = [];
    const { client, states } = makeClient({ onHandlerError: (e) => hooked.push(e) });
    const errors: unknown[] = [];
    client.on("error", (e) => errors.push(e));
    client.on("state", (s) => {
      if (s.state === "connected") throw new Error("state listener bug");
    });
    const got: number[] = [];
    const sub = client.subscribe<number>("news:a", (m) => {
      if (m.data === 2) throw new TypeError("handler bug");
      got.push(m.data);
    });
    sub.on("subscribed", () => {
      throw "not even an Error";
    });
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown) => uncaught.push(e);
    process.on("uncaughtException", onUncaught);
    try {
      void client.connect();
      await flush();
      const s = FakeSocket.last();
      s.accept();
      s.frame({ type: "subscribed", id: 1, channel: "news:a", position: { offset: 0, epoch: "E" } });
      for (const o of [1, 2, 3]) s.frame({ type: "message", channel: "news:a", offset: o, epoch: "E", data: o, time: 1 });
      // Whatever was scheduled (the old code rethrew from a timer) runs now.
      vi.runOnlyPendingTimers();
      await flush();
      expect(got).toEqual([1, 3]);
      expect(states.at(-1)).toMatchObject({ state: "connected" });
      expect(uncaught).toEqual([]);
      const reported = errors.filter((e): e is HandlerError => e instanceof HandlerError);
      expect(reported.map((e) => [e.type, e.source, e.channel])).toEqual([
        ["handler_error", "state", undefined],
        ["handler_error", "subscribed", "news:a"],
        ["handler_error", "message", "news:a"],
      ]);
      expect(reported[2]!.error).toBeInstanceOf(TypeError);
      expect(reported[1]!.error).toBe("not even an Error");
      expect(hooked).toEqual(reported);
    } finally {
      process.off("uncaughtException", onUncaught);
      client.close();
    }
  });

  it("an `error` listener that throws does not recurse; without any listener or hook the error is logged", async () => {
    const logged = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      const bare = makeClient();
      bare.client.subscribe("news:a", () => {
        throw new Error("boom");
      });
      void bare.client.connect();
      await flush();
      FakeSocket.last().accept();
      FakeSocket.last().frame({ type: "message", channel: "news:a", data: 1, time: 1 });
      expect(logged).toHaveBeenCalledTimes(1);
      expect(bare.client.state.state).toBe("connected");
      bare.client.close();

      const { client } = makeClient();
      let calls = 0;
      client.on("error", () => {
        calls += 1;
        throw new Error("error listener bug");
      });
      client.subscribe("news:a", () => {
        throw new Error("boom");
      });
      void client.connect();
      await flush();
      FakeSocket.last().accept();
      FakeSocket.last().frame({ type: "message", channel: "news:a", data: 1, time: 1 });
      expect(calls).toBe(1);
      expect(logged).toHaveBeenCalledTimes(2);
      expect(client.state.state).toBe("connected");
      client.close();
    } finally {
      logged.mockRestore();
    }
  });
});

describe("HeraldClient connect timeout", () => {
  it("counts a socket that never opens as a failed attempt and backs off", async () => {
    const { client, states } = makeClient({ connectTimeoutMs: 10_000, random: () => 0.999999 });
    void client.connect();
    await flush();
    const first = FakeSocket.last();
    vi.advanceTimersByTime(9_999);
    expect(states.at(-1)).toMatchObject({ state: "connecting" });
    vi.advanceTimersByTime(1);
    await flush();
    expect(first.closedByClient).toBeDefined();
    expect(states.slice(-2)).toEqual([
      { state: "disconnected", code: 1006, reason: "connect timeout (client)", willRetry: true },
      { state: "reconnecting", attempt: 1, delayMs: 100, code: 1006 },
    ]);
    vi.advanceTimersByTime(100);
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    // The second silent attempt backs off further; a late event of the first changes nothing.
    first.serverClose(1006);
    vi.advanceTimersByTime(10_000);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", attempt: 2, delayMs: 200 });
    client.close();
  });

  it("counts a socket that opens but never gets `connected` (or `authenticated`) as failed", async () => {
    const { client, states } = makeClient({ token: "t", connectTimeoutMs: 3_000 });
    void client.connect();
    await flush();
    const s = FakeSocket.last();
    s.open();
    s.frame({ type: "connected", protocol: 1, client_id: "c1", instance_id: "a", user: null });
    vi.advanceTimersByTime(3_000);
    await flush();
    expect(s.closedByClient).toBeDefined();
    expect(states.find((x) => x.state === "disconnected")).toMatchObject({ code: 1006, reason: "connect timeout (client)" });
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", attempt: 1 });
    client.close();
  });

  it("does not fire once connected", async () => {
    const { client, states } = makeClient({ connectTimeoutMs: 1_000, pingIntervalMs: 0 });
    void client.connect();
    await flush();
    FakeSocket.last().accept();
    vi.advanceTimersByTime(60_000);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "connected" });
    expect(FakeSocket.all).toHaveLength(1);
    client.close();
  });
});

class FakeTarget {
  listeners = new Map<string, Set<() => void>>();
  visibilityState = "visible";
  addEventListener(type: string, f: () => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(f);
  }
  removeEventListener(type: string, f: () => void): void {
    this.listeners.get(type)?.delete(f);
  }
  dispatch(type: string): void {
    for (const f of [...(this.listeners.get(type) ?? [])]) f();
  }
  count(): number {
    return [...this.listeners.values()].reduce((n, s) => n + s.size, 0);
  }
}

describe("HeraldClient liveness", () => {
  it("is on by default: pings at the gateway's ping_interval_ms and drops a socket that does not answer", async () => {
    const { client, states } = makeClient({ random: () => 0.999999 });
    void client.connect();
    await flush();
    const s = FakeSocket.last();
    s.accept(); // ping_interval_ms: 25000
    vi.advanceTimersByTime(24_999);
    expect(s.sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(s.sent).toEqual([{ type: "ping", id: 1 }]);
    s.frame({ type: "pong", id: 1 });
    vi.advanceTimersByTime(25_000);
    expect(s.sent.at(-1)).toEqual({ type: "ping", id: 2 });
    // No answer within min(10 s, interval): the socket is dropped and replaced.
    vi.advanceTimersByTime(9_999);
    expect(s.closedByClient).toBeUndefined();
    vi.advanceTimersByTime(1);
    await flush();
    expect(s.closedByClient).toBeDefined();
    expect(states.slice(-2)).toEqual([
      { state: "disconnected", code: 4001, reason: "ping timeout (client)", willRetry: true },
      { state: "reconnecting", attempt: 1, delayMs: 100, code: 4001 },
    ]);
    vi.advanceTimersByTime(100);
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    client.close();
  });

  it("follows a shorter server interval, and can be turned off", async () => {
    const a = makeClient();
    void a.client.connect();
    await flush();
    let s = FakeSocket.last();
    s.open();
    s.frame({ type: "connected", protocol: 1, client_id: "c1", instance_id: "a", user: null, ping_interval_ms: 2_000 });
    vi.advanceTimersByTime(2_000);
    expect(s.sent).toEqual([{ type: "ping", id: 1 }]);
    vi.advanceTimersByTime(2_000);
    await flush();
    expect(s.closedByClient).toBeDefined();
    a.client.close();

    const b = makeClient({ pingIntervalMs: 0 });
    void b.client.connect();
    await flush();
    s = FakeSocket.last();
    s.accept();
    vi.advanceTimersByTime(600_000);
    expect(s.sent).toEqual([]);
    expect(b.client.state.state).toBe("connected");
    b.client.close();
  });

  it("reconnectNow() replaces a live connection at once, and ends a backoff wait at once", async () => {
    const { client, states } = makeClient({ random: () => 0.999999, minReconnectDelayMs: 10_000 });
    void client.connect();
    await flush();
    const first = FakeSocket.last();
    first.accept();
    client.reconnectNow();
    await flush();
    expect(first.closedByClient).toEqual({ code: 1000, reason: "reconnect requested (client)" });
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 0, code: 1000 });
    vi.advanceTimersByTime(0);
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.last().serverClose(1006);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 10_000 });
    client.reconnectNow();
    await flush();
    expect(FakeSocket.all).toHaveLength(3);
    expect(states.at(-1)).toMatchObject({ state: "connecting" });
    // The abandoned wait does not fire later.
    vi.advanceTimersByTime(10_000);
    await flush();
    expect(FakeSocket.all).toHaveLength(3);
    client.close();
    client.reconnectNow(); // not running: nothing
    expect(FakeSocket.all).toHaveLength(3);
  });

  it("reconnects at once when the page comes back with a stale connection (the machine slept)", async () => {
    vi.useRealTimers();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    const win = new FakeTarget();
    const doc = new FakeTarget();
    const { client, states } = makeClient({ lifecycleEvents: { network: win, document: doc } });
    void client.connect();
    await flush();
    const s = FakeSocket.last();
    s.accept();
    doc.visibilityState = "hidden";
    doc.dispatch("visibilitychange");
    // Asleep: the clock moves on, the timers do not run.
    vi.setSystemTime(Date.now() + 10 * 60_000);
    doc.visibilityState = "visible";
    doc.dispatch("visibilitychange");
    await flush();
    expect(s.closedByClient).toEqual({ code: 1000, reason: "reconnect requested (client)" });
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 0 });
    vi.advanceTimersByTime(0);
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    client.close();
    expect(win.count() + doc.count()).toBe(0);
  });

  it("probes a fresh connection when the page comes back or the network changes, and ends a backoff wait when it is back", async () => {
    vi.useRealTimers();
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    const win = new FakeTarget();
    const doc = new FakeTarget();
    const { client, states } = makeClient({ random: () => 0.999999, minReconnectDelayMs: 20_000, lifecycleEvents: { network: win, document: doc } });
    void client.connect();
    await flush();
    const s = FakeSocket.last();
    s.accept();
    doc.dispatch("visibilitychange");
    expect(s.sent).toEqual([{ type: "ping", id: 1 }]);
    s.frame({ type: "pong", id: 1 });
    win.dispatch("offline");
    expect(s.sent.at(-1)).toEqual({ type: "ping", id: 2 });
    // Offline: no answer comes, the probe's deadline drops the socket.
    vi.advanceTimersByTime(10_000);
    await flush();
    expect(s.closedByClient).toBeDefined();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", delayMs: 20_000, code: 4001 });
    win.dispatch("online");
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    client.close();
    expect(win.count() + doc.count()).toBe(0);
  });

  it("close() in a `connected` listener starts no ping timer", async () => {
    const { client } = makeClient({ pingIntervalMs: 1_000 });
    client.on("state", (st) => {
      if (st.state === "connected") client.close();
    });
    void client.connect();
    await flush();
    FakeSocket.last().accept();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("HeraldClient tokens", () => {
  it("a getToken that fails after 4005 is retried with backoff until it gives a token", async () => {
    const answers: Array<() => string> = [
      () => "t1",
      () => {
        throw new Error("token service down");
      },
      () => "",
      () => "t2",
    ];
    const getToken = vi.fn(async () => answers.shift()!());
    const { client, states } = makeClient({ getToken });
    void client.connect();
    await flush();
    FakeSocket.last().accept("u");
    expect(FakeSocket.last().authToken()).toBe("t1");
    FakeSocket.last().serverClose(4005, "token expired");
    await flush();
    // The service threw: temporary, so a backoff (cap 100 ms × random 0.5), not a stop.
    expect(states.at(-1)).toEqual({ state: "reconnecting", attempt: 1, delayMs: 50, code: 4005 });
    vi.advanceTimersByTime(50);
    await flush();
    // It gave nothing: a failure again, with a larger cap; still no socket without a token.
    expect(states.at(-1)).toMatchObject({ state: "reconnecting", attempt: 2, delayMs: 100 });
    expect(FakeSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(100);
    await flush();
    expect(getToken).toHaveBeenCalledTimes(4);
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.last().accept("u");
    expect(FakeSocket.last().authToken()).toBe("t2");
    expect(states.at(-1)).toMatchObject({ state: "connected" });
    client.close();
  });

  it("stops with a clear state when getToken throws UnauthorizedError, and connect() rejects with it", async () => {
    const refused = new UnauthorizedError("account disabled");
    const a = makeClient({ getToken: async () => Promise.reject(refused) });
    const ready = a.client.connect();
    await flush();
    await expect(ready).rejects.toBe(refused);
    expect(a.states.at(-1)).toEqual({ state: "disconnected", code: 4004, reason: "unauthorized (getToken): account disabled", willRetry: false });
    expect(FakeSocket.all).toHaveLength(0);
    expect(vi.getTimerCount()).toBe(0);

    // After a 4005 on an open connection too.
    let n = 0;
    const b = makeClient({
      getToken: () => {
        if (++n > 1) throw new UnauthorizedError();
        return "t1";
      },
    });
    void b.client.connect();
    await flush();
    FakeSocket.last().accept("u");
    FakeSocket.last().serverClose(4005, "token expired");
    await flush();
    expect(b.states.at(-1)).toEqual({ state: "disconnected", code: 4005, reason: "token expired", willRetry: false });
    vi.advanceTimersByTime(60_000);
    await flush();
    expect(FakeSocket.all).toHaveLength(1); // a's getToken refused before any socket
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a getToken that never settles times out: the state leaves `connected` at once and the call is retried", async () => {
    let n = 0;
    const getToken = vi.fn(() => (++n === 1 ? "t1" : new Promise<string>(() => {})));
    const { client, states } = makeClient({ getToken, getTokenTimeoutMs: 2_000 });
    void client.connect();
    await flush();
    FakeSocket.last().accept("u");
    FakeSocket.last().serverClose(4005, "token expired");
    await flush();
    expect(states.at(-1)).toEqual({ state: "disconnected", code: 4005, reason: "token expired", willRetry: true });
    expect(client.connection).toBeUndefined();
    vi.advanceTimersByTime(1_999);
    await flush();
    expect(states.at(-1)!.state).toBe("disconnected");
    vi.advanceTimersByTime(1);
    await flush();
    expect(states.at(-1)).toEqual({ state: "reconnecting", attempt: 1, delayMs: 50, code: 4005 });
    vi.advanceTimersByTime(50);
    await flush();
    expect(getToken).toHaveBeenCalledTimes(3);
    // The default timeout is 10 s.
    const d = makeClient({ getToken: () => new Promise<string>(() => {}) });
    void d.client.connect();
    await flush();
    vi.advanceTimersByTime(9_999);
    await flush();
    expect(d.states).toHaveLength(0);
    vi.advanceTimersByTime(1);
    await flush();
    expect(d.states.at(-1)).toMatchObject({ state: "reconnecting", attempt: 1 });
    client.close();
    d.client.close();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("after 4004, fresh tokens that keep being rejected back off, then stop after maxTokenRejections", async () => {
    let n = 0;
    const getToken = vi.fn(async () => `t${++n}`);
    const { client, states } = makeClient({ token: "t0", getToken, random: () => 0.999999 });
    const ready = client.connect();
    await flush();
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      FakeSocket.last().open();
      FakeSocket.last().serverClose(4004, "unauthorized");
      await flush();
      const s = states.at(-1)!;
      expect(s.state).toBe("reconnecting");
      if (s.state === "reconnecting") delays.push(s.delayMs);
      vi.advanceTimersByTime(s.state === "reconnecting" ? s.delayMs : 0);
      await flush();
    }
    // The first new token is tried at once, the next ones after growing backoffs: never a tight loop.
    expect(delays).toEqual([0, 100, 200, 400]);
    FakeSocket.last().open();
    FakeSocket.last().serverClose(4004, "unauthorized");
    await flush();
    expect(states.at(-1)).toEqual({ state: "disconnected", code: 4004, reason: "unauthorized", willRetry: false });
    await expect(ready).rejects.toThrow("4004");
    expect(getToken).toHaveBeenCalledTimes(5);
    expect(FakeSocket.all).toHaveLength(5);
    vi.advanceTimersByTime(600_000);
    await flush();
    expect(FakeSocket.all).toHaveLength(5);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("counts rejections only in a row: an accepted token starts them over", async () => {
    let n = 0;
    const { client, states } = makeClient({ token: "t0", getToken: async () => `t${++n}`, maxTokenRejections: 2 });
    void client.connect();
    await flush();
    FakeSocket.last().serverClose(4004);
    await flush();
    vi.advanceTimersByTime(0);
    await flush();
    FakeSocket.last().accept("u"); // t1 accepted
    FakeSocket.last().serverClose(4004);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "reconnecting" });
    const s = states.at(-1)!;
    vi.advanceTimersByTime(s.state === "reconnecting" ? s.delayMs : 0);
    await flush();
    FakeSocket.last().serverClose(4004);
    await flush();
    expect(states.at(-1)).toMatchObject({ state: "disconnected", code: 4004, willRetry: false });
  });

  it("setToken() is used by the next connection; reconnectNow() uses it at once", async () => {
    const { client } = makeClient({ token: "old" });
    void client.connect();
    await flush();
    FakeSocket.last().accept("u");
    expect(FakeSocket.last().authToken()).toBe("old");
    client.setToken("new");
    expect(FakeSocket.last().closedByClient).toBeUndefined(); // the open connection keeps its token
    client.reconnectNow();
    vi.advanceTimersByTime(0);
    await flush();
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.last().accept("u");
    expect(FakeSocket.last().authToken()).toBe("new");
    expect(() => client.setToken("")).toThrow(TypeError);
    client.close();
  });
});

describe("HeraldClient tokens after 4005", () => {
  it("stops without getToken; backs off and asks again when getToken gives the expired token", async () => {
    const a = makeClient({ token: "t1" });
    void a.client.connect();
    await flush();
    FakeSocket.last().accept("u");
    FakeSocket.last().serverClose(4005, "token expired");
    await flush();
    expect(a.states.at(-1)).toEqual({ state: "disconnected", code: 4005, reason: "token expired", willRetry: false });

    const answers = ["t1", "t1", "t2"];
    const getToken = vi.fn(async () => answers.shift());
    const b = makeClient({ getToken });
    void b.client.connect();
    await flush();
    FakeSocket.last().accept("u");
    FakeSocket.last().serverClose(4005, "token expired");
    await flush();
    expect(b.states.at(-1)).toEqual({ state: "reconnecting", attempt: 1, delayMs: 50, code: 4005 });
    vi.advanceTimersByTime(50);
    await flush();
    expect(getToken).toHaveBeenCalledTimes(3);
    FakeSocket.last().accept("u");
    expect(FakeSocket.last().authToken()).toBe("t2");
    b.client.close();
  });
});

describe("HeraldClient close() from anywhere", () => {
  it("leaves no timer and no socket: during getToken, in a `reconnecting` listener, during a backoff, before the socket opens", async () => {
    // During a getToken that has not settled (its timeout timer must go too).
    const a = makeClient({ getToken: () => new Promise<string>(() => {}) });
    void a.client.connect();
    await flush();
    expect(vi.getTimerCount()).toBe(1);
    a.client.close();
    expect(vi.getTimerCount()).toBe(0);
    await flush();
    expect(FakeSocket.all).toHaveLength(0);

    // In a `reconnecting` listener.
    const b = makeClient();
    b.client.on("state", (s) => {
      if (s.state === "reconnecting") b.client.close();
    });
    void b.client.connect();
    await flush();
    FakeSocket.last().accept();
    FakeSocket.last().serverClose(1011);
    await flush();
    expect(vi.getTimerCount()).toBe(0);

    // During a backoff wait, and while a socket is still connecting.
    const c = makeClient();
    void c.client.connect();
    await flush();
    const connecting = FakeSocket.last();
    FakeSocket.last().serverClose(1006);
    await flush();
    expect(vi.getTimerCount()).toBe(1);
    c.client.close();
    expect(vi.getTimerCount()).toBe(0);
    expect(connecting.readyState).toBe(3);
    const d = makeClient();
    void d.client.connect();
    await flush();
    d.client.close();
    expect(FakeSocket.last().closedByClient).toEqual({ code: 1000, reason: "client closed" });
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("HeraldClient debug", () => {
  it("logs state changes, frames in and out and reconnect decisions, and never a token", async () => {
    const lines: string[] = [];
    let n = 0;
    const { client } = makeClient({ token: "secret-first", getToken: async () => `secret-${++n}`, debug: (l) => lines.push(l) });
    client.subscribe("news:a", () => {});
    void client.connect();
    await flush();
    FakeSocket.last().accept("u");
    // A gateway (or proxy) echoing the token back must not get it into the log either.
    FakeSocket.last().frame({ type: "error", code: "bad_request", message: "bad token secret-first" });
    FakeSocket.last().serverClose(4005, "token expired");
    await flush();
    vi.advanceTimersByTime(0);
    await flush();
    FakeSocket.last().accept("u");
    client.close();
    const q = makeClient({ token: "secret-query", tokenTransport: "query", debug: (l) => lines.push(l) });
    void q.client.connect();
    await flush();
    expect(FakeSocket.last().url).toContain("secret-query");
    FakeSocket.last().accept();
    q.client.close();

    const all = lines.join("\n");
    expect(all).not.toContain("secret-");
    expect(all).toContain("[redacted]");
    expect(lines.some((l) => l.startsWith("[herald] state ") && l.includes('"connected"'))).toBe(true);
    expect(lines.some((l) => l.startsWith("[herald] out ") && l.includes('"auth"'))).toBe(true);
    expect(lines.some((l) => l.startsWith("[herald] out ") && l.includes('"subscribe"'))).toBe(true);
    expect(lines.some((l) => l.startsWith("[herald] in ") && l.includes('"connected"'))).toBe(true);
    expect(lines.some((l) => l.startsWith("[herald] decision ") && l.includes('"reconnect"') && l.includes("4005"))).toBe(true);
  });

  it("is off by default, and `true` logs with console.debug", async () => {
    const spy = vi.spyOn(console, "debug").mockImplementation(() => {});
    try {
      const a = makeClient({ token: "secret-x" });
      void a.client.connect();
      await flush();
      FakeSocket.last().accept();
      a.client.close();
      expect(spy).not.toHaveBeenCalled();
      const b = makeClient({ token: "secret-x", debug: true });
      void b.client.connect();
      await flush();
      FakeSocket.last().accept();
      b.client.close();
      expect(spy).toHaveBeenCalled();
      expect(spy.mock.calls.flat().join("\n")).not.toContain("secret-x");
    } finally {
      spy.mockRestore();
    }
  });
});
