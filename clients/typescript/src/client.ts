/**
 * `HeraldClient`: one WebSocket connection to a Herald gateway's `/ws`
 * endpoint (protocol version 1, docs/protocol.md), kept alive across
 * disconnects, with every subscription recovered without gaps or duplicates.
 */
import { Backoff } from "./backoff.js";
import { CloseCode, closeAction, closeNeedsNewToken } from "./closeCodes.js";
import { Emitter, callSafely, logListenerError } from "./emitter.js";
import {
  encodeClientFrame,
  parseServerFrame,
  FrameError,
  type AuthenticatedFrame,
  type ClientFrame,
  type ConnectedFrame,
  type ErrorFrame,
  type GapFrame,
  type GapReason,
  type MessageFrame,
  type Position,
  type ServerFrame,
  type SubscribedFrame,
  type SubscribeEntry,
} from "./frames.js";
import { ChannelPositions } from "./positions.js";
import { ReconnectPolicy, type ReconnectCause } from "./reconnect.js";

// ---------------------------------------------------------------- WebSocket

/**
 * The part of the WHATWG `WebSocket` the client uses. The browser's and
 * Node ≥ 22's global `WebSocket`, and the `ws` package's, all fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // Event parameters are `any` so that both the DOM's and `ws`'s event types fit.
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

// ---------------------------------------------------------------- public types

export interface HeraldClientOptions {
  /**
   * The gateway's `/ws` URL (`wss://host/ws`), or several: each reconnect
   * attempt moves on to the next one, round robin.
   */
  url: string | string[];
  /** The JWT to connect with (see `tokenTransport`). Anonymous without one. */
  token?: string;
  /**
   * How the token reaches the gateway. `"frame"` (the default): in the first
   * frame, `{"type":"auth","token":…}`, so it never appears in a URL that
   * proxies and access logs keep. `"query"`: as `?token=` (gateways older than
   * the `auth` frame close a client that sends it with 4002).
   */
  tokenTransport?: "frame" | "query";
  /**
   * Gives a (fresh) token. Called before a connection when the client has
   * none (no `token`, or the last one expired), after a 4005 (token expired:
   * the client reconnects at once with the new token), and after a 4004
   * (rejected: the client tries the new token, and stops when it gives the
   * same one again).
   *
   * A failure is temporary: a `getToken` that throws, gives no token, or does
   * not settle within `getTokenTimeoutMs` is retried with the reconnect
   * backoff. Throw an `UnauthorizedError` to say the user is not allowed in:
   * the client then stops (`disconnected`, code 4004, `willRetry: false`) and
   * `connect()` rejects with that error.
   */
  getToken?: () => Promise<string | undefined> | string | undefined;
  /** How long one `getToken` call may take before it counts as failed (and is retried with backoff). Default 10 000 ms. */
  getTokenTimeoutMs?: number;
  /**
   * After a 4004, `getToken` gives a new token and the client tries it: the
   * first time at once, then with the reconnect backoff. After this many
   * rejections in a row (no token accepted in between) the client stops
   * (`disconnected`, code 4004, `willRetry: false`). Default 5.
   */
  maxTokenRejections?: number;
  /** The WebSocket implementation; defaults to the global one (browsers, Node ≥ 22). */
  WebSocket?: WebSocketConstructor;
  /** The backoff cap of the first reconnect attempt. Default 100 ms. */
  minReconnectDelayMs?: number;
  /** The largest backoff cap. Default 30 000 ms. */
  maxReconnectDelayMs?: number;
  /**
   * How long a connection must stay `connected` before the backoff starts
   * again from `minReconnectDelayMs`. Default 5 000 ms. A gateway that
   * accepts and closes at once therefore sees the client back after growing
   * random delays, never in a loop.
   */
  minConnectionLifetimeMs?: number;
  /**
   * After 1001 (the instance is stopping: all its clients hear it at once),
   * "reconnect now" waits a uniformly random time in `[0, reconnectWindowMs]`
   * so the instance that takes them over does not get them all in one
   * instant. Default 5 000 ms.
   */
  reconnectWindowMs?: number;
  /**
   * How long one attempt may take from creating the socket to the gateway's
   * `connected` (and, with an in-band token, `authenticated`) frame. An
   * attempt that takes longer counts as failed (reported as 1006,
   * `connect timeout (client)`) and is retried with backoff. Default 10 000 ms.
   */
  connectTimeoutMs?: number;
  /**
   * Liveness: send the protocol's `{"type":"ping"}` this often once
   * connected, and drop a connection that then stays silent for
   * `pongTimeoutMs` (reported as 4001, `ping timeout (client)`, and
   * reconnected with backoff). Browsers cannot see WebSocket-level pings, so
   * without this a socket killed by sleep or a network change would say
   * `connected` for ever. Default: the gateway's `ping_interval_ms` from the
   * `connected` frame (25 000 ms when it gives none); `0` turns it off.
   */
  pingIntervalMs?: number;
  /** How long to wait for any frame after a ping. Default: the ping interval, at most 10 000 ms. */
  pongTimeoutMs?: number;
  /**
   * Where the browser's `online`/`offline` and `visibilitychange` events come
   * from. Default: `globalThis` (a browser's `window`) and
   * `globalThis.document`, when they have `addEventListener`; `false` turns
   * the reaction off. The network coming back, or the page becoming visible,
   * ends a backoff wait at once; a page that comes back with a stale
   * connection (silent past the liveness deadline, e.g. after a sleep)
   * reconnects at once; otherwise the connection is probed with a ping.
   */
  lifecycleEvents?: LifecycleEvents | false;
  /** Uniform random numbers in [0, 1) for the jitter; `Math.random` unless testing. */
  random?: () => number;
  /**
   * Called with every exception thrown by application code the client calls
   * (a subscription's handler, any event listener, including `error`
   * listeners). Such an exception never escapes the client and never stops
   * it: it is also emitted as an `error` event (a `HandlerError`), and logged
   * with `console.error` when neither this hook nor an `error` listener exists.
   */
  onHandlerError?: (error: HandlerError) => void;
  /**
   * Logs what the client does, one line each: state changes, frames in and
   * out, and every reconnect decision (its cause and delay). `true` logs
   * with `console.debug`; a function receives the lines instead. Off by
   * default. Tokens never appear: a `token` field is replaced by
   * `[redacted]`, and so is any occurrence of a token the client holds.
   */
  debug?: boolean | ((line: string) => void);
}

/**
 * Throw this from `getToken` to say the user is not (or no longer) allowed
 * in: the client stops instead of retrying (state `disconnected` with code
 * 4004 and `willRetry: false`; `connect()` rejects with this error). Any
 * other failure of `getToken` is treated as temporary and retried.
 */
export class UnauthorizedError extends Error {
  readonly code = "unauthorized" as const;

  constructor(message = "unauthorized") {
    super(message);
    this.name = "UnauthorizedError";
  }
}

/**
 * An exception thrown by application code the client called: the client
 * caught it, reported it, and went on. `type` tells it apart from the
 * server's `error` frames on the client's `error` event.
 */
export class HandlerError extends Error {
  readonly type = "handler_error" as const;
  readonly code = "handler_error" as const;

  constructor(
    /** What the handler threw. */
    readonly error: unknown,
    /** `"message"` for a subscription's handler, else the event whose listener threw (`"state"`, `"subscribed"`, …). */
    readonly source: string,
    /** The channel, when a subscription's handler or listener threw. */
    readonly channel?: string,
  ) {
    super(`a ${source} handler threw: ${error instanceof Error ? error.message : String(error)}`);
    this.name = "HandlerError";
  }
}

/** The part of the DOM's `EventTarget` the client uses for lifecycle events. */
export interface LifecycleTarget {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

/** The sources of the environment's lifecycle events (see `HeraldClientOptions.lifecycleEvents`). */
export interface LifecycleEvents {
  /** Fires `online` and `offline` (a browser's `window`). */
  network?: LifecycleTarget;
  /** Fires `visibilitychange` and tells `visibilityState` (a browser's `document`). */
  document?: LifecycleTarget & { readonly visibilityState?: string };
}

/** A message delivered to a subscription's handler. */
export interface HeraldMessage<T = unknown> {
  channel: string;
  /** The published JSON value (a raw non-JSON payload arrives as a string). */
  data: T;
  /** Present with `epoch` on channels that keep history. */
  offset?: number;
  epoch?: string;
  /** Publish time, ms since the UNIX epoch. */
  time: number;
}

export type MessageHandler<T = unknown> = (message: HeraldMessage<T>) => void;

export interface SubscribeOptions {
  /** Start from this position: every message after it is delivered first (recovery). */
  since?: Position;
}

/** A `subscribed` frame, as a subscription sees it (once per (re)subscribe). */
export interface SubscribedEvent {
  channel: string;
  /** The channel's current position; `null` for a channel without history. */
  position: Position | null;
  /** Present only when the subscribe asked for `since`; see docs/protocol.md. */
  recovered?: boolean;
}

export interface RecoveredEvent {
  channel: string;
  /**
   * `true`: every message after the position the client had is being
   * delivered, in order, before any live one. `false`: it could not be; the
   * application should refetch its state.
   */
  recovered: boolean;
  /**
   * How many messages were published while the client was away (the
   * channel's position minus the client's, when both are in one epoch):
   * replayed when `recovered`, lost otherwise.
   */
  missed?: number;
}

/**
 * A `gap` frame, as the client reports it: messages of `channel` may be
 * missing while the client stayed connected, and its stored position was
 * reset to `position` (see docs/protocol.md). The application should refetch
 * the channel's state, as after `recovered: false`.
 */
export interface GapEvent {
  channel: string;
  /** `epoch_changed`: the channel's history was lost and restarted; `unrecoverable`: the gateway could not fill its own gap. */
  reason: GapReason;
  /** The position now stored for the channel; `null` until the next message. */
  position: Position | null;
}

export type StateName = "connecting" | "connected" | "reconnecting" | "disconnected";

export type ConnectionState =
  | { state: "connecting"; url: string; attempt: number }
  | {
      state: "connected";
      url: string;
      clientId: string;
      instanceId: string;
      user: string | null;
      pingIntervalMs?: number;
    }
  /** A reconnect is scheduled: `attempt` counts failed attempts since the last connection that lasted (`minConnectionLifetimeMs`). */
  | { state: "reconnecting"; attempt: number; delayMs: number; code: number }
  /** The connection closed with `code`; `willRetry` tells whether a reconnect follows. */
  | { state: "disconnected"; code: number; reason: string; willRetry: boolean };

/** The identity the gateway confirmed for the token sent in-band. */
export interface AuthenticatedEvent {
  user: string | null;
  /** Until the token expires, when it does. */
  expiresInMs?: number;
}

export interface HeraldClientEvents {
  state: ConnectionState;
  /** The gateway accepted the token sent in the first frame (before `state` turns `connected`). */
  authenticated: AuthenticatedEvent;
  recovered: RecoveredEvent;
  /** A `gap` frame on a subscribed channel (also delivered to that channel's subscriptions). */
  gap: GapEvent;
  /**
   * Every `error` frame of the server (also delivered to the subscriptions it
   * concerns), and every exception thrown by application code the client
   * called (a `HandlerError`, `type: "handler_error"`).
   */
  error: ErrorFrame | HandlerError;
  /** A server frame the client could not parse (it is ignored). */
  invalidFrame: FrameError;
}

export interface SubscriptionEvents {
  subscribed: SubscribedEvent;
  error: ErrorFrame;
  gap: GapEvent;
}

/** Error codes after which a subscription is not retried (until the token changes). */
const FINAL_ERRORS = new Set(["forbidden", "invalid_channel"]);

/** Close code the client reports when it gives up a silent connection itself. */
const LOCAL_PING_TIMEOUT = 4001;
/** Close code the client reports when a socket could not even be created. */
const ABNORMAL = 1006;
/** How many past tokens the debug log scrubs. */
const MAX_SECRETS = 8;

/** How one `getToken` call ended. */
type TokenResult =
  | { kind: "token"; token: string }
  /** It threw an `UnauthorizedError`: stop. */
  | { kind: "refused"; error: UnauthorizedError }
  /** It threw something else, gave nothing, or timed out: temporary. */
  | { kind: "failed"; reason: string };

// ---------------------------------------------------------------- Subscription

export class Subscription<T = unknown> extends Emitter<SubscriptionEvents> {
  private active = true;

  /** @internal */
  constructor(
    readonly channel: string,
    /** @internal */ readonly handler: MessageHandler<T>,
    private readonly detach: (sub: Subscription<T>) => void,
    private readonly report: (error: unknown, source: string, channel: string) => void,
  ) {
    super();
  }

  /** @internal What this subscription's listeners throw goes to the client. */
  protected override reportListenerError(error: unknown, source: string): void {
    this.report(error, source, this.channel);
  }

  /** Whether `unsubscribe()` has not been called yet. */
  get isActive(): boolean {
    return this.active;
  }

  /** Stops delivering to this handler; the channel is left when its last subscription goes. */
  unsubscribe(): void {
    if (!this.active) return;
    this.active = false;
    this.detach(this);
    this.removeAllListeners();
  }

  /** @internal */
  fire<K extends keyof SubscriptionEvents>(event: K, value: SubscriptionEvents[K]): void {
    this.emit(event, value);
  }
}

// ---------------------------------------------------------------- per-channel state

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySubscription = Subscription<any>;

type ServerSide = "none" | "pending" | "subscribed";

class Channel {
  readonly subs = new Set<AnySubscription>();
  server: ServerSide = "none";
  /** The last error that forbids subscribing again with the same token. */
  failed: ErrorFrame | undefined;
  /** The `since` the last subscribe carried. */
  lastSince: Position | undefined;
  last: SubscribedEvent | undefined;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  retryBackoff: Backoff | undefined;
  duplicatesDropped = 0;

  constructor(
    readonly name: string,
    readonly positions: ChannelPositions,
  ) {}
}

// ---------------------------------------------------------------- the client

export class HeraldClient extends Emitter<HeraldClientEvents> {
  private readonly urls: string[];
  private urlIndex = 0;
  private token: string | undefined;
  private readonly tokenTransport: "frame" | "query";
  /** The `connected` frame held back until the gateway answers this socket's `auth` frame. */
  private authPending: { connected: ConnectedFrame | undefined } | undefined;
  private readonly getToken: HeraldClientOptions["getToken"];
  private readonly WS: WebSocketConstructor;
  /** Every "whether and when to reconnect" is decided there. */
  private readonly policy: ReconnectPolicy;
  /** The options as given: `undefined` means "derive from the gateway's `ping_interval_ms`". */
  private readonly pingIntervalOption: number | undefined;
  private readonly pongTimeoutOption: number | undefined;
  /** The liveness of the current connection (0: off). */
  private pingIntervalMs = 0;
  private pongTimeoutMs = 0;
  /** `Date.now()` of the last frame received: timers stop while a machine sleeps, the clock does not. */
  private lastFrameAt = 0;
  private readonly lifecycle: LifecycleEvents;
  private lifecycleAttached = false;
  private readonly random: () => number;
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private readonly onHandlerError: HeraldClientOptions["onHandlerError"];
  /** Set while a `HandlerError` is being emitted: an `error` listener that throws too must not recurse. */
  private reportingHandlerError = false;

  private readonly channels = new Map<string, Channel>();
  /** Subscribe request id → channels, to route `error` frames that carry no channel. */
  private readonly requests = new Map<number, string[]>();
  private nextId = 1;

  private socket: WebSocketLike | undefined;
  private socketUrl = "";
  private reachedConnected = false;
  private running = false;
  /** Bumped by `close()` and each new socket: stale callbacks compare and bail out. */
  private generation = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  /** Fires once the connection has lasted `minConnectionLifetimeMs`: the backoff starts over. */
  private lifetimeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Bounds the current attempt: no socket stays `connecting` forever. */
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly connectTimeoutMs: number;
  private readonly getTokenTimeoutMs: number;
  private readonly debugSink: ((line: string) => void) | undefined;
  /** The last few tokens the client held, to scrub from debug lines (bounded). */
  private readonly secrets: string[] = [];
  /** The `getToken` call in flight: `close()` settles it (and clears its timer) so nothing outlives the client. */
  private tokenCall: { timer: ReturnType<typeof setTimeout>; settle: (r: TokenResult) => void } | undefined;
  private current: ConnectionState = { state: "disconnected", code: 1000, reason: "not connected", willRetry: false };
  private connectedInfo: ConnectedFrame | undefined;
  private ready: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } | undefined;

  constructor(options: HeraldClientOptions) {
    super();
    const urls = Array.isArray(options.url) ? [...options.url] : [options.url];
    if (urls.length === 0 || urls.some((u) => typeof u !== "string" || u === "")) {
      throw new TypeError("HeraldClient: `url` must be a non-empty string or list of strings");
    }
    this.urls = urls;
    if (options.debug === true) {
      this.debugSink = (line) => {
        if (typeof console !== "undefined") console.debug(line);
      };
    } else if (typeof options.debug === "function") {
      this.debugSink = options.debug;
    }
    this.token = options.token;
    if (options.token) this.rememberSecret(options.token);
    this.tokenTransport = options.tokenTransport ?? "frame";
    this.getToken = options.getToken;
    const WS =
      options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        "HeraldClient: no global WebSocket here (Node < 22?): pass one, e.g. `new HeraldClient({ url, WebSocket })` with `import WebSocket from \"ws\"`",
      );
    }
    this.WS = WS;
    this.minDelay = options.minReconnectDelayMs ?? 100;
    this.maxDelay = options.maxReconnectDelayMs ?? 30_000;
    this.random = options.random ?? Math.random;
    this.onHandlerError = options.onHandlerError;
    this.connectTimeoutMs = positive(options.connectTimeoutMs ?? 10_000, "connectTimeoutMs");
    this.getTokenTimeoutMs = positive(options.getTokenTimeoutMs ?? 10_000, "getTokenTimeoutMs");
    this.policy = new ReconnectPolicy({
      minDelayMs: this.minDelay,
      maxDelayMs: this.maxDelay,
      minConnectionLifetimeMs: options.minConnectionLifetimeMs ?? 5_000,
      reconnectWindowMs: options.reconnectWindowMs ?? 5_000,
      maxTokenRejections: positive(options.maxTokenRejections ?? 5, "maxTokenRejections"),
      random: this.random,
    });
    if (options.pingIntervalMs !== undefined) {
      if (!Number.isFinite(options.pingIntervalMs) || options.pingIntervalMs < 0) {
        throw new RangeError("HeraldClient: `pingIntervalMs` must be a finite number ≥ 0");
      }
      this.pingIntervalOption = options.pingIntervalMs;
    }
    if (options.pongTimeoutMs !== undefined) this.pongTimeoutOption = positive(options.pongTimeoutMs, "pongTimeoutMs");
    this.lifecycle = options.lifecycleEvents === false ? {} : (options.lifecycleEvents ?? defaultLifecycleEvents());
  }

  // ------------------------------------------------------------ public API

  /** The current connection state. */
  get state(): ConnectionState {
    return this.current;
  }

  /** The `connected` frame of the current connection, while connected. */
  get connection(): ConnectedFrame | undefined {
    return this.current.state === "connected" ? this.connectedInfo : undefined;
  }

  /**
   * Opens the connection (and keeps it open until `close()` or a close code
   * that says stop). Resolves at the first `connected` frame; rejects when the
   * client stops before that. Calling it while running returns the same promise.
   */
  connect(): Promise<void> {
    if (this.running && this.ready) return this.ready.promise;
    if (this.running) return Promise.resolve();
    this.running = true;
    this.policy.reset();
    this.attachLifecycle();
    const ready = deferred();
    this.ready = ready;
    void this.open(this.generation);
    return ready.promise;
  }

  /** Closes the connection cleanly; no reconnect follows. Subscriptions are kept for a later `connect()`. */
  close(): void {
    const wasRunning = this.running;
    this.running = false;
    this.detachLifecycle();
    this.generation += 1;
    this.clearTimers();
    const socket = this.socket;
    this.detachSocket();
    if (socket) {
      try {
        socket.close(1000, "client closed");
      } catch {
        // already closing
      }
    }
    this.forgetServerSide();
    this.settleReady(new Error("HeraldClient closed"));
    if (wasRunning || socket) {
      this.setState({ state: "disconnected", code: 1000, reason: "client closed", willRetry: false });
    }
  }

  /**
   * Subscribes `handler` to `channel`. Subscribing before `connect()` is
   * fine: the subscribe is sent once connected, and again after every
   * reconnect, with `since` set to the last position seen.
   */
  subscribe<T = unknown>(channel: string, handler: MessageHandler<T>, opts: SubscribeOptions = {}): Subscription<T> {
    const sub = new Subscription<T>(
      channel,
      handler,
      (s) => this.detachSubscription(s as AnySubscription),
      (error, source, ch) => this.reportHandlerError(error, source, ch),
    );
    let ch = this.channels.get(channel);
    if (!ch) {
      ch = new Channel(channel, new ChannelPositions(opts.since));
      this.channels.set(channel, ch);
      ch.subs.add(sub as AnySubscription);
      if (this.isOpen()) this.sendSubscribe([ch]);
    } else {
      ch.subs.add(sub as AnySubscription);
      if (ch.server === "subscribed" && ch.last) {
        const last = ch.last;
        queueMicrotask(() => {
          if (sub.isActive) sub.fire("subscribed", last);
        });
      } else if (ch.failed) {
        const failed = ch.failed;
        queueMicrotask(() => {
          if (sub.isActive) sub.fire("error", failed);
        });
      }
    }
    return sub;
  }

  /** The position the client would resume `channel` from, if any. */
  positionOf(channel: string): Position | undefined {
    return this.channels.get(channel)?.positions.resumeFrom;
  }

  /** How many duplicate messages were dropped on `channel` so far (diagnostics). */
  duplicatesDropped(channel: string): number {
    return this.channels.get(channel)?.duplicatesDropped ?? 0;
  }

  /**
   * Reconnects at once: ends a backoff wait, or drops the current connection
   * (reported as 1000, `reconnect requested (client)`) and opens a new one
   * without delay. For an application that knows better than the client
   * (the network changed, the user pressed "retry"). Does nothing when the
   * client is not running.
   */
  reconnectNow(): void {
    if (!this.running) return;
    if (this.reconnectTimer !== undefined) {
      // Waiting for the next attempt: the attempt is already decided, only its time changes.
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      void this.open(this.generation);
      return;
    }
    if (this.socket) this.abandon(1000, "reconnect requested (client)", { kind: "now" });
    // Otherwise an attempt is on its way (getting a token): nothing to hurry.
  }

  /**
   * Replaces the token the client connects with (`undefined`: none, or ask
   * `getToken` again). The open connection keeps the token it was
   * authenticated with; the new one is used from the next connection on:
   * call `reconnectNow()` to use it at once.
   */
  setToken(token: string | undefined): void {
    if (token !== undefined && (typeof token !== "string" || token === "")) {
      throw new TypeError("HeraldClient.setToken: the token must be a non-empty string or undefined");
    }
    this.useToken(token);
  }

  /** Sends an application ping now (when connected). */
  ping(): boolean {
    return this.send({ type: "ping", id: this.nextId++ });
  }

  // ------------------------------------------------------------ application errors

  protected override reportListenerError(error: unknown, source: string): void {
    this.reportHandlerError(error, source);
  }

  /** Reports what application code threw (hook, `error` event, or the console); the client goes on. */
  private reportHandlerError(error: unknown, source: string, channel?: string): void {
    const handlerError = new HandlerError(error, source, channel);
    const hook = this.onHandlerError;
    if (hook) callSafely(hook, handlerError, logListenerError, "onHandlerError");
    if (this.reportingHandlerError || this.listenerCount("error") === 0) {
      if (!hook) logListenerError(error, channel === undefined ? source : `${source} (${channel})`);
      return;
    }
    this.reportingHandlerError = true;
    try {
      this.emit("error", handlerError);
    } finally {
      this.reportingHandlerError = false;
    }
  }

  // ------------------------------------------------------------ connection

  private isOpen(): boolean {
    return this.socket !== undefined && this.reachedConnected;
  }

  private async open(generation: number): Promise<void> {
    if (!this.running || generation !== this.generation) return;
    if (this.token === undefined && this.getToken) {
      const result = await this.fetchToken();
      if (!this.running || generation !== this.generation) return;
      if (result.kind !== "token") return this.tokenFailed(result);
      this.useToken(result.token);
    }
    const url = this.urls[this.urlIndex % this.urls.length]!;
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    this.generation += 1;
    const gen = this.generation;
    this.reachedConnected = false;
    this.socketUrl = url;
    this.setState({ state: "connecting", url, attempt: this.policy.attempt });
    let socket: WebSocketLike;
    try {
      socket = new this.WS(this.tokenTransport === "query" ? withToken(url, this.token) : url);
    } catch (err) {
      // A URL the WebSocket constructor refuses will not get better: stop.
      this.running = false;
      this.detachLifecycle();
      this.settleReady(err instanceof Error ? err : new Error(String(err)));
      this.setState({ state: "disconnected", code: ABNORMAL, reason: String(err), willRetry: false });
      return;
    }
    this.socket = socket;
    this.authPending = undefined;
    this.connectTimer = setTimeout(() => {
      this.connectTimer = undefined;
      if (gen === this.generation && !this.reachedConnected) {
        this.abandon(ABNORMAL, "connect timeout (client)", { kind: "connect-timeout" });
      }
    }, this.connectTimeoutMs);
    const token = this.token;
    socket.onopen = () => {
      if (gen !== this.generation || this.tokenTransport !== "frame" || token === undefined) return;
      // The first frame, before the gateway says `connected`: `send()` would wait for that.
      try {
        socket.send(encodeClientFrame({ type: "auth", token }));
        this.debugLog("out", { type: "auth", token });
        this.authPending = { connected: undefined };
      } catch {
        // The close event that follows decides what happens.
      }
    };
    socket.onmessage = (event: { data: unknown }) => {
      if (gen !== this.generation) return;
      if (typeof event.data !== "string") return; // `/ws` sends only text frames
      this.onText(event.data);
    };
    socket.onclose = (event: { code?: number; reason?: string }) => {
      if (gen !== this.generation) return;
      void this.onClose(event.code ?? ABNORMAL, event.reason ?? "");
    };
    socket.onerror = () => {
      // A close event follows every error; it decides what happens.
    };
  }

  private onText(text: string): void {
    this.debugLog("in", text);
    this.lastFrameAt = Date.now();
    this.armLiveness();
    let frame: ServerFrame | undefined;
    try {
      frame = parseServerFrame(text);
    } catch (err) {
      if (err instanceof FrameError) this.emit("invalidFrame", err);
      return;
    }
    if (!frame) return;
    switch (frame.type) {
      case "connected":
        return this.onConnected(frame);
      case "authenticated":
        return this.onAuthenticated(frame);
      case "subscribed":
        return this.onSubscribed(frame);
      case "message":
        return this.onMessage(frame);
      case "unsubscribed":
        return;
      case "pong":
        return;
      case "error":
        return this.onError(frame);
      case "gap":
        return this.onGap(frame);
    }
  }

  private onConnected(frame: ConnectedFrame): void {
    if (this.authPending) {
      // Settled only by `authenticated`: the gateway may have said `connected` before reading the token.
      this.authPending.connected = frame;
      return;
    }
    this.reachedConnected = true;
    this.connectedInfo = frame;
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.policy.tokenAccepted();
    // Not a reset yet: only a connection that lasts proves the gateway healthy.
    const gen = this.generation;
    this.lifetimeTimer = setTimeout(() => {
      this.lifetimeTimer = undefined;
      if (gen === this.generation && this.reachedConnected) this.policy.connectionLasted();
    }, this.policy.minConnectionLifetimeMs);
    const state: ConnectionState = {
      state: "connected",
      url: this.socketUrl,
      clientId: frame.client_id,
      instanceId: frame.instance_id,
      user: frame.user,
    };
    if (frame.ping_interval_ms !== undefined) state.pingIntervalMs = frame.ping_interval_ms;
    this.setState(state);
    // A `state` listener may have called close() or reconnectNow(): start nothing for a gone socket.
    if (!this.running || gen !== this.generation) return;
    const all = [...this.channels.values()].filter((c) => !c.failed && c.subs.size > 0);
    if (all.length > 0) this.sendSubscribe(all);
    this.startPinging(frame.ping_interval_ms);
    this.settleReady();
  }

  private onAuthenticated(frame: AuthenticatedFrame): void {
    const event: AuthenticatedEvent = { user: frame.user };
    if (frame.expires_in_ms !== undefined) event.expiresInMs = frame.expires_in_ms;
    const pending = this.authPending;
    if (pending) {
      this.authPending = undefined;
      this.emit("authenticated", event);
      if (pending.connected) this.onConnected({ ...pending.connected, user: frame.user });
      return;
    }
    if (this.connectedInfo) this.connectedInfo = { ...this.connectedInfo, user: frame.user };
    this.emit("authenticated", event);
  }

  /**
   * The socket is gone: `cause` says why when the client dropped it itself,
   * otherwise the close code decides (through the policy, the one place that
   * does).
   */
  private async onClose(code: number, reason: string, cause?: ReconnectCause): Promise<void> {
    const gen = this.generation;
    const usedToken = this.token;
    this.detachSocket();
    this.clearTimers();
    this.forgetServerSide();
    if (!this.running) return;

    let why: ReconnectCause = cause ?? { kind: "close", code, action: closeAction(code) };
    let stopError: Error | undefined;
    if (why.kind === "close" && closeNeedsNewToken(code) && !this.getToken) {
      // Expired or rejected, and no way to get another: only the application can help (setToken + connect).
      why = { kind: "close", code, action: "stop" };
    } else if (why.kind === "close" && closeNeedsNewToken(code)) {
      // Say so before asking for a token: a `getToken` that is slow must not leave `connected` standing.
      this.setState({ state: "disconnected", code, reason, willRetry: true });
      if (!this.running || gen !== this.generation) return;
      // The old token is spent either way: a failed fetch leaves none, and the next attempt asks again.
      this.token = undefined;
      const result = await this.fetchToken();
      if (!this.running || gen !== this.generation) return;
      if (result.kind === "refused") {
        why = { kind: "token-refused" };
        stopError = result.error;
      } else if (result.kind === "failed") {
        why = { kind: "token-unavailable", reason: result.reason };
      } else if (result.token === usedToken && code === CloseCode.Unauthorized) {
        // Rejected, and nothing new to try: only the application can help (setToken + connect).
        why = { kind: "close", code, action: "stop" };
      } else if (result.token === usedToken) {
        // The expired token again (a token service that has not refreshed yet): ask again after a backoff.
        why = { kind: "token-unavailable", reason: "getToken gave the expired token again" };
      } else {
        this.useToken(result.token);
        // 4005 says "reconnect now"; 4004 says "stop (get a new token first)": we have one now.
        why = code === CloseCode.Unauthorized ? { kind: "token-rejected" } : { kind: "close", code, action: "reconnect-now" };
      }
    }
    this.decideAndSchedule(gen, code, reason, why, stopError);
  }

  /** `getToken` failed before a socket was opened: the same decision as a close, without one. */
  private tokenFailed(result: Exclude<TokenResult, { kind: "token" }>): void {
    const why: ReconnectCause = result.kind === "refused" ? { kind: "token-refused" } : { kind: "token-unavailable", reason: result.reason };
    const reason = result.kind === "refused" ? `unauthorized (getToken): ${result.error.message}` : `getToken failed: ${result.reason}`;
    const code = result.kind === "refused" ? CloseCode.Unauthorized : ABNORMAL;
    this.decideAndSchedule(this.generation, code, reason, why, result.kind === "refused" ? result.error : undefined);
  }

  /** Asks the policy (the one place that decides) and acts on its answer. */
  private decideAndSchedule(gen: number, code: number, reason: string, why: ReconnectCause, stopError?: Error): void {
    const decision = this.policy.decide(why);
    this.debugLog("decision", { cause: why, decision });
    if (decision.action === "stop") {
      this.running = false;
      this.detachLifecycle();
      this.setState({ state: "disconnected", code, reason, willRetry: false });
      this.settleReady(stopError ?? new Error(`Herald connection closed with ${code}${reason ? ` (${reason})` : ""}`));
      return;
    }
    const last = this.current;
    if (!(last.state === "disconnected" && last.code === code && last.willRetry)) {
      this.setState({ state: "disconnected", code, reason, willRetry: true });
    }
    if (!this.running || gen !== this.generation) return; // a listener called close()
    const { delayMs, attempt } = decision;
    this.setState({ state: "reconnecting", attempt, delayMs, code });
    if (!this.running || gen !== this.generation) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.open(gen);
    }, delayMs);
  }

  /** Drops a connection from the client side (connect timeout, liveness, `reconnectNow()`). */
  private abandon(code: number, reason: string, cause: ReconnectCause): void {
    const socket = this.socket;
    this.generation += 1; // its close event, whenever it comes, is stale
    this.detachSocket();
    if (socket) {
      try {
        socket.close(1000, reason);
      } catch {
        // ignore
      }
    }
    void this.onClose(code, reason, cause);
  }

  private detachSocket(): void {
    const socket = this.socket;
    if (socket) {
      socket.onmessage = null;
      socket.onclose = null;
      socket.onopen = null;
      // Keep an error listener: some implementations throw on an unhandled error event.
      socket.onerror = () => {};
    }
    this.socket = undefined;
    this.reachedConnected = false;
    this.authPending = undefined;
  }

  private clearTimers(): void {
    this.cancelTokenCall();
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    if (this.pingTimer !== undefined) clearInterval(this.pingTimer);
    if (this.pongTimer !== undefined) clearTimeout(this.pongTimer);
    if (this.lifetimeTimer !== undefined) clearTimeout(this.lifetimeTimer);
    if (this.connectTimer !== undefined) clearTimeout(this.connectTimer);
    this.lifetimeTimer = undefined;
    this.connectTimer = undefined;
    this.reconnectTimer = undefined;
    this.pingTimer = undefined;
    this.pongTimer = undefined;
    for (const ch of this.channels.values()) {
      if (ch.retryTimer !== undefined) clearTimeout(ch.retryTimer);
      ch.retryTimer = undefined;
    }
  }

  private forgetServerSide(): void {
    this.requests.clear();
    for (const ch of this.channels.values()) ch.server = "none";
  }

  private useToken(token: string | undefined): void {
    if (token === this.token) return;
    this.token = token;
    if (token) this.rememberSecret(token);
    // A new token may grant what the old one did not.
    for (const ch of this.channels.values()) {
      if (ch.failed?.code === "forbidden") ch.failed = undefined;
    }
  }

  /**
   * One bounded `getToken` call: settles within `getTokenTimeoutMs` whatever
   * `getToken` does, and at once when `close()` is called meanwhile.
   */
  private fetchToken(): Promise<TokenResult> {
    const getToken = this.getToken;
    if (!getToken) return Promise.resolve({ kind: "failed", reason: "no getToken" });
    this.cancelTokenCall();
    return new Promise<TokenResult>((resolve) => {
      let done = false;
      const settle = (r: TokenResult): void => {
        if (done) return;
        done = true;
        if (this.tokenCall?.settle === settle) {
          clearTimeout(this.tokenCall.timer);
          this.tokenCall = undefined;
        }
        resolve(r);
      };
      const timer = setTimeout(() => settle({ kind: "failed", reason: `no answer within ${this.getTokenTimeoutMs} ms` }), this.getTokenTimeoutMs);
      this.tokenCall = { timer, settle };
      const onError = (error: unknown): void => {
        if (error instanceof UnauthorizedError) settle({ kind: "refused", error });
        else settle({ kind: "failed", reason: error instanceof Error ? error.message : String(error) });
      };
      try {
        Promise.resolve(getToken()).then((token) => {
          if (typeof token === "string" && token !== "") settle({ kind: "token", token });
          else settle({ kind: "failed", reason: "getToken gave no token" });
        }, onError);
      } catch (error) {
        onError(error);
      }
    });
  }

  private cancelTokenCall(): void {
    this.tokenCall?.settle({ kind: "failed", reason: "cancelled" });
  }

  /** At most `MAX_SECRETS` tokens are kept for scrubbing: older ones are no longer sent anywhere. */
  private rememberSecret(token: string): void {
    if (this.secrets.includes(token)) return;
    this.secrets.push(token);
    if (this.secrets.length > MAX_SECRETS) this.secrets.shift();
  }

  /** One debug line, when `debug` is on; never a token in it. */
  private debugLog(what: string, detail: unknown): void {
    const sink = this.debugSink;
    if (!sink) return;
    let text: string;
    try {
      text = typeof detail === "string" ? detail : JSON.stringify(detail, (key, value: unknown) => (key === "token" && value !== undefined ? "[redacted]" : value));
    } catch {
      text = String(detail);
    }
    for (const secret of this.secrets) text = text.split(secret).join("[redacted]");
    callSafely(sink, `[herald] ${what} ${text}`, (e) => this.reportHandlerError(e, "debug"));
  }

  private settleReady(error?: Error): void {
    const ready = this.ready;
    if (!ready) return;
    this.ready = undefined;
    if (error) ready.reject(error);
    else ready.resolve();
  }

  private setState(state: ConnectionState): void {
    this.current = state;
    this.debugLog("state", state);
    this.emit("state", state);
  }

  private send(frame: ClientFrame): boolean {
    const socket = this.socket;
    if (!socket || !this.reachedConnected || socket.readyState !== 1) return false;
    try {
      socket.send(encodeClientFrame(frame));
      this.debugLog("out", frame);
      return true;
    } catch {
      return false;
    }
  }

  // ------------------------------------------------------------ pings

  /** Liveness for the connection just `connected`, derived from the gateway's ping interval unless configured. */
  private startPinging(serverIntervalMs: number | undefined): void {
    const interval = this.pingIntervalOption ?? (serverIntervalMs !== undefined && serverIntervalMs > 0 ? serverIntervalMs : 25_000);
    this.pingIntervalMs = interval;
    this.pongTimeoutMs = this.pongTimeoutOption ?? Math.min(10_000, interval);
    if (interval <= 0) return;
    const gen = this.generation;
    this.pingTimer = setInterval(() => {
      if (gen === this.generation) this.probe();
    }, interval);
  }

  /** Sends a ping and drops the connection if nothing at all comes back within the deadline. */
  private probe(): void {
    if (this.pongTimer !== undefined || !this.isOpen()) return;
    if (!this.ping()) return;
    const gen = this.generation;
    this.pongTimer = setTimeout(() => {
      this.pongTimer = undefined;
      if (gen === this.generation) this.abandon(LOCAL_PING_TIMEOUT, "ping timeout (client)", { kind: "liveness" });
    }, this.pongTimeoutMs || 10_000);
  }

  /** Silent for longer than a live connection could be: a ping was due and its answer too (a sleep, a lost network). */
  private isStale(): boolean {
    if (this.pingIntervalMs <= 0) return false;
    return Date.now() - this.lastFrameAt > this.pingIntervalMs + this.pongTimeoutMs;
  }

  // ------------------------------------------------------------ lifecycle events

  private readonly onOnline = (): void => {
    if (!this.running) return;
    if (this.reconnectTimer !== undefined) this.reconnectNow(); // the network is back: no reason to wait
    else this.probe(); // the old socket may belong to the old network
  };

  private readonly onOffline = (): void => {
    // Nothing can be reached; a connection that is really gone fails its ping deadline.
    if (this.running) this.probe();
  };

  private readonly onVisibilityChange = (): void => {
    if (!this.running || this.lifecycle.document?.visibilityState === "hidden") return;
    if (this.reconnectTimer !== undefined) this.reconnectNow();
    else if (this.isOpen() && this.isStale()) this.reconnectNow();
    else this.probe();
  };

  private attachLifecycle(): void {
    if (this.lifecycleAttached) return;
    this.lifecycleAttached = true;
    this.lifecycle.network?.addEventListener("online", this.onOnline);
    this.lifecycle.network?.addEventListener("offline", this.onOffline);
    this.lifecycle.document?.addEventListener("visibilitychange", this.onVisibilityChange);
  }

  /** A stopped client holds no listener: it keeps nothing alive and reacts to nothing. */
  private detachLifecycle(): void {
    if (!this.lifecycleAttached) return;
    this.lifecycleAttached = false;
    this.lifecycle.network?.removeEventListener("online", this.onOnline);
    this.lifecycle.network?.removeEventListener("offline", this.onOffline);
    this.lifecycle.document?.removeEventListener("visibilitychange", this.onVisibilityChange);
  }

  /** Any frame proves the connection alive. */
  private armLiveness(): void {
    if (this.pongTimer !== undefined) {
      clearTimeout(this.pongTimer);
      this.pongTimer = undefined;
    }
  }

  // ------------------------------------------------------------ subscriptions

  private sendSubscribe(channels: Channel[]): void {
    const id = this.nextId++;
    const entries: SubscribeEntry[] = channels.map((ch) => {
      const since = ch.positions.resumeFrom;
      ch.lastSince = since;
      ch.server = "pending";
      if (since) {
        ch.positions.subscribedWithSince(since);
        return { channel: ch.name, since };
      }
      return { channel: ch.name };
    });
    this.requests.set(
      id,
      channels.map((c) => c.name),
    );
    if (!this.send({ type: "subscribe", id, channels: entries })) {
      for (const ch of channels) ch.server = "none";
      this.requests.delete(id);
    }
  }

  private detachSubscription(sub: AnySubscription): void {
    const ch = this.channels.get(sub.channel);
    if (!ch || !ch.subs.delete(sub) || ch.subs.size > 0) return;
    this.channels.delete(ch.name);
    if (ch.retryTimer !== undefined) clearTimeout(ch.retryTimer);
    if (ch.server !== "none" && this.isOpen()) {
      this.send({ type: "unsubscribe", id: this.nextId++, channels: [ch.name] });
    }
    ch.server = "none";
  }

  private onSubscribed(frame: SubscribedFrame): void {
    const ch = this.channels.get(frame.channel);
    if (!ch) return;
    if (frame.id !== undefined) this.requests.delete(frame.id);
    ch.server = "subscribed";
    ch.failed = undefined;
    ch.retryBackoff?.reset();
    ch.positions.subscribed(frame.position, frame.recovered);
    const event: SubscribedEvent = { channel: frame.channel, position: frame.position };
    if (frame.recovered !== undefined) event.recovered = frame.recovered;
    ch.last = event;
    for (const sub of [...ch.subs]) sub.fire("subscribed", event);
    if (frame.recovered !== undefined) {
      const recovered: RecoveredEvent = { channel: frame.channel, recovered: frame.recovered };
      const since = ch.lastSince;
      if (since && frame.position && frame.position.epoch === since.epoch) {
        recovered.missed = Math.max(0, frame.position.offset - since.offset);
      }
      this.emit("recovered", recovered);
    }
  }

  private onMessage(frame: MessageFrame): void {
    const ch = this.channels.get(frame.channel);
    if (!ch) return;
    if (ch.positions.message(frame.offset, frame.epoch) === "duplicate") {
      ch.duplicatesDropped += 1;
      return;
    }
    const message: HeraldMessage = { channel: frame.channel, data: frame.data, time: frame.time };
    if (frame.offset !== undefined) {
      message.offset = frame.offset;
      message.epoch = frame.epoch;
    }
    for (const sub of [...ch.subs]) {
      if (sub.isActive) {
        callSafely(sub.handler as MessageHandler, message, (e) => this.reportHandlerError(e, "message", frame.channel));
      }
    }
  }

  private onGap(frame: GapFrame): void {
    const ch = this.channels.get(frame.channel);
    if (!ch) return;
    ch.positions.reset(frame.position);
    const event: GapEvent = { channel: frame.channel, reason: frame.reason, position: frame.position };
    for (const sub of [...ch.subs]) sub.fire("gap", event);
    this.emit("gap", event);
  }

  private onError(frame: ErrorFrame): void {
    let names: string[] = [];
    if (frame.channel !== undefined) names = [frame.channel];
    else if (frame.id !== undefined) names = this.requests.get(frame.id) ?? [];
    for (const name of names) {
      const ch = this.channels.get(name);
      if (!ch) continue;
      if (ch.server === "pending") ch.server = "none";
      if (FINAL_ERRORS.has(frame.code)) {
        ch.failed = frame;
      } else if (frame.code === "internal") {
        this.retrySubscribe(ch);
      }
      for (const sub of [...ch.subs]) sub.fire("error", frame);
    }
    this.emit("error", frame);
  }

  /** After an `internal` error ("retry later"): subscribe again after a backoff. */
  private retrySubscribe(ch: Channel): void {
    if (ch.retryTimer !== undefined) return;
    ch.retryBackoff ??= new Backoff({ minDelayMs: this.minDelay, maxDelayMs: this.maxDelay, random: this.random });
    const { delayMs } = ch.retryBackoff.next();
    const gen = this.generation;
    ch.retryTimer = setTimeout(() => {
      ch.retryTimer = undefined;
      if (gen !== this.generation || this.channels.get(ch.name) !== ch || ch.server !== "none") return;
      if (this.isOpen()) this.sendSubscribe([ch]);
    }, delayMs);
  }
}

// ---------------------------------------------------------------- helpers

/** A browser's `window` and `document`; nothing where `globalThis` has no events (Node). */
function defaultLifecycleEvents(): LifecycleEvents {
  const g = globalThis as unknown as { addEventListener?: unknown; document?: { addEventListener?: unknown } };
  const events: LifecycleEvents = {};
  if (typeof g.addEventListener === "function") events.network = g as unknown as LifecycleTarget;
  if (g.document && typeof g.document.addEventListener === "function") {
    events.document = g.document as unknown as LifecycleEvents["document"] & object;
  }
  return events;
}

function positive(v: number, name: string): number {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`HeraldClient: \`${name}\` must be a finite number > 0`);
  return v;
}

function withToken(url: string, token: string | undefined): string {
  if (token === undefined) return url;
  try {
    const u = new URL(url);
    u.searchParams.set("token", token);
    return u.toString();
  } catch {
    return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A caller that does not await connect() must not get an unhandled rejection.
  promise.catch(() => {});
  return { promise, resolve, reject };
}
