// WebSocket client for the tutorial-compatible `/ws/notifications` endpoint.
//
// Everything that knows about the wire lives here, so that this module can be
// swapped for the Herald protocol client later without touching the UI. The UI
// only sees `ConnectionState` and `Notification` values.
//
// State machine:
//
//   idle ──start()──▶ connecting ──open──▶ connected
//                         │                   │
//                         │ close/error       │ close (code decides)
//                         ▼                   ▼
//                  reconnecting(n) ◀──────────┤  retryable: wait, then reopen
//                   (waiting → opening)       │
//                         │ open              │ fatal code
//                         └──▶ connected      ▼
//                                          stopped (no automatic reconnect)
//
//   any state ──stop()──▶ idle

/** Close codes the gateway uses, and what the client does about them. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001, // server shutting down: reconnect now
  ProtocolError: 1002,
  UnsupportedData: 1003,
  Abnormal: 1006, // no close frame (network drop, server killed)
  InvalidPayload: 1007,
  MessageTooBig: 1009,
  SlowConsumer: 4000, // we fell behind: reconnect now
  PingTimeout: 4001, // reconnect with backoff
  PolicyViolation: 4002,
} as const;

/** Codes after which reconnecting would just fail the same way. */
const FATAL_CODES: ReadonlySet<number> = new Set([
  CloseCode.ProtocolError,
  CloseCode.UnsupportedData,
  CloseCode.InvalidPayload,
  CloseCode.MessageTooBig,
  CloseCode.PolicyViolation,
]);

/** Codes after which the first reconnect attempt should not wait. */
const IMMEDIATE_CODES: ReadonlySet<number> = new Set([CloseCode.GoingAway, CloseCode.SlowConsumer]);

export type CloseAction = 'immediate' | 'backoff' | 'stop';

export function closeAction(code: number): CloseAction {
  if (FATAL_CODES.has(code)) return 'stop';
  if (IMMEDIATE_CODES.has(code)) return 'immediate';
  return 'backoff';
}

export interface BackoffOptions {
  /** First retry window in ms. */
  baseMs: number;
  /** Upper bound of any retry window in ms. */
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, capMs: 10_000 };

/**
 * Exponential backoff with full jitter: a uniform delay in
 * [0, min(cap, base * 2^(attempt-1))]. `attempt` starts at 1.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = DEFAULT_BACKOFF, random = Math.random): number {
  const exp = Math.min(opts.capMs, opts.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * exp);
}

export type ConnectionState =
  | { kind: 'idle' }
  /** First connection attempt after start(). */
  | { kind: 'connecting' }
  | { kind: 'connected'; since: number }
  /** Lost the connection; `phase` tells whether we are waiting or dialing. */
  | { kind: 'reconnecting'; attempt: number; phase: 'waiting' | 'opening'; retryAt: number; lastCode: number }
  /** Closed with a code that must not be retried automatically. */
  | { kind: 'stopped'; code: number; reason: string };

export interface Notification {
  /** Local sequence number, unique per client. */
  seq: number;
  /** `Date.now()` when the frame arrived. */
  receivedAt: number;
  /** Text to show: the payload itself, or a summary of a JSON payload. */
  text: string;
  /** Set when the payload was a JSON object with a string `title`. */
  title?: string;
  /** The frame exactly as received. */
  raw: string;
}

/** Turns one TEXT frame into a Notification. The payload is opaque text. */
export function parseNotification(raw: string, seq: number, receivedAt: number): Notification {
  const base = { seq, receivedAt, raw, text: raw };
  const trimmed = raw.trim();
  if (!trimmed.startsWith('{')) return base;
  try {
    const value: unknown = JSON.parse(trimmed);
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      const obj = value as Record<string, unknown>;
      if (typeof obj.title === 'string') {
        const label = typeof obj.message === 'string' ? obj.message : `Content published: ${obj.title}`;
        return { ...base, title: obj.title, text: label };
      }
    }
  } catch {
    // Not JSON after all: show it as text.
  }
  return base;
}

export interface NotificationClientOptions {
  url: string;
  backoff?: BackoffOptions;
  /** Injected for tests; defaults to the browser WebSocket. */
  WebSocketImpl?: typeof WebSocket;
}

type StateListener = (state: ConnectionState) => void;
type MessageListener = (n: Notification) => void;

export class NotificationClient {
  private readonly url: string;
  private readonly backoff: BackoffOptions;
  private readonly WS: typeof WebSocket;

  private state: ConnectionState = { kind: 'idle' };
  private socket: WebSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Consecutive failed attempts since the last successful open. */
  private attempt = 0;
  private seq = 0;
  private readonly decoder = new TextDecoder();

  private readonly stateListeners = new Set<StateListener>();
  private readonly messageListeners = new Set<MessageListener>();

  constructor(opts: NotificationClientOptions) {
    this.url = opts.url;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.WS = opts.WebSocketImpl ?? WebSocket;
  }

  getState(): ConnectionState {
    return this.state;
  }

  onState(fn: StateListener): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  onMessage(fn: MessageListener): () => void {
    this.messageListeners.add(fn);
    return () => this.messageListeners.delete(fn);
  }

  /** Starts connecting. No-op unless idle or stopped. */
  start(): void {
    if (this.state.kind !== 'idle' && this.state.kind !== 'stopped') return;
    this.attempt = 0;
    this.setState({ kind: 'connecting' });
    this.open();
  }

  /** Closes the socket and cancels any pending retry. */
  stop(): void {
    this.clearTimer();
    this.detachSocket(CloseCode.Normal, 'client stopped');
    this.setState({ kind: 'idle' });
  }

  /** Skips the remaining backoff wait (e.g. when the browser comes back online). */
  retryNow(): void {
    if (this.state.kind === 'reconnecting' && this.state.phase === 'waiting') {
      this.clearTimer();
      this.dial();
    } else if (this.state.kind === 'stopped') {
      this.start();
    }
  }

  private open(): void {
    let ws: WebSocket;
    try {
      ws = new this.WS(this.url);
    } catch {
      // Invalid URL or similar: treat as a failed attempt.
      this.scheduleReconnect(CloseCode.Abnormal);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.socket = ws;

    ws.onopen = () => {
      if (this.socket !== ws) return;
      this.attempt = 0;
      this.setState({ kind: 'connected', since: Date.now() });
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.socket !== ws) return;
      const raw = typeof ev.data === 'string' ? ev.data : this.decoder.decode(ev.data as ArrayBuffer);
      const n = parseNotification(raw, ++this.seq, Date.now());
      for (const fn of this.messageListeners) fn(n);
    };
    // An error is always followed by a close event; the close decides what to do.
    ws.onerror = () => {};
    ws.onclose = (ev: CloseEvent) => {
      if (this.socket !== ws) return;
      this.socket = null;
      this.handleClose(ev.code, ev.reason);
    };
  }

  private handleClose(code: number, reason: string): void {
    const action = closeAction(code);
    if (action === 'stop') {
      this.clearTimer();
      this.setState({ kind: 'stopped', code, reason });
      return;
    }
    this.scheduleReconnect(code, action === 'immediate' && this.attempt === 0);
  }

  private scheduleReconnect(code: number, immediate = false): void {
    this.attempt += 1;
    const delay = immediate ? 0 : backoffDelay(this.attempt, this.backoff);
    this.setState({
      kind: 'reconnecting',
      attempt: this.attempt,
      phase: 'waiting',
      retryAt: Date.now() + delay,
      lastCode: code,
    });
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.dial();
    }, delay);
  }

  private dial(): void {
    if (this.state.kind !== 'reconnecting') return;
    this.setState({ ...this.state, phase: 'opening' });
    this.open();
  }

  private detachSocket(code: number, reason: string): void {
    const ws = this.socket;
    if (!ws) return;
    this.socket = null;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      if (ws.readyState === ws.CONNECTING || ws.readyState === ws.OPEN) ws.close(code, reason);
    } catch {
      // Closing a socket that is already going away can throw in some browsers.
    }
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private setState(next: ConnectionState): void {
    this.state = next;
    for (const fn of this.stateListeners) fn(next);
  }
}

/** `ws(s)://<same host>/ws/notifications`, matching the page's scheme. */
export function defaultNotificationsUrl(loc: Location = window.location): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws/notifications`;
}

/** Badge text for a state, e.g. `reconnecting (attempt 3)`. */
export function describeState(state: ConnectionState): string {
  switch (state.kind) {
    case 'idle':
      return 'idle';
    case 'connecting':
      return 'connecting';
    case 'connected':
      return 'connected';
    case 'reconnecting':
      return `reconnecting (attempt ${state.attempt})`;
    case 'stopped':
      return `disconnected (code ${state.code})`;
  }
}
