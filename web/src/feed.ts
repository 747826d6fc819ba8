// The live feed of the page, over the Herald protocol (`/ws`, docs/protocol.md)
// through `@herald/client`.
//
// Everything that knows about the wire or the client lives here; the UI only
// sees `LiveSnapshot` values (the connection badge, the gateway instance and
// the feed). `HeraldClient` does the hard parts — reconnect with backoff,
// resubscribe with `since`, drop duplicates — and this module turns its
// events into what the page shows.
//
// Two channels are read, both public in `herald demo`:
//
// - `news:content`: `{"type":"content.created","id","title","created_at"}`,
//   kept in history, so a tab that was away gets what it missed when it
//   reconnects (the badge then reads `recovered N missed`).
// - `events`: the tutorial's text `Content published: <title>`, no history.
//   Every creation is published there too (first), so an `events` text is
//   shown only when no `news:content` notification of that title arrives
//   within `EVENTS_GRACE_MS` — e.g. a raw `redis-cli PUBLISH events …` — and
//   is replaced if one arrives later: one creation never shows twice.

import {
  HeraldClient,
  type ConnectionState,
  type GapEvent,
  type HeraldMessage,
  type RecoveredEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from '@herald/client';

export const CONTENT_CHANNEL = 'news:content';
export const EVENTS_CHANNEL = 'events';
/** How long an `events` text waits for its structured `news:content` twin. */
export const EVENTS_GRACE_MS = 1500;
/** How long a shown item may still absorb its twin from the other channel. */
const TWIN_WINDOW_MS = 30_000;
const MAX_FEED = 100;
const TUTORIAL_PREFIX = 'Content published: ';

// ---------------------------------------------------------------- view types

export type Badge =
  | { kind: 'connecting' }
  | { kind: 'connected' }
  /** Lost the connection; `dialing` while an attempt is under way, else waiting for the backoff. */
  | { kind: 'reconnecting'; attempt: number; dialing: boolean; code: number | null; delayMs: number | null }
  /** Reconnected and every missed message was (or is being) replayed. */
  | { kind: 'recovered'; missed: number | undefined }
  /** Reconnected, but the gateway could not replay the gap (history lost or too old). */
  | { kind: 'unrecovered'; missed: number | undefined }
  /**
   * Still connected, but the gateway said (`gap` frame) that notifications of
   * `channel` were lost: its history was reset (`epoch_changed`, e.g. Redis
   * restarted empty) or could not cover an outage (`unrecoverable`).
   */
  | { kind: 'gap'; channel: string; reason: string }
  /** Closed with a code after which the client does not retry by itself. */
  | { kind: 'stopped'; code: number; reason: string };

export interface FeedItem {
  /** Local sequence number, unique per page: the React key. */
  seq: number;
  channel: string;
  /** Publish time (ms since the UNIX epoch). */
  time: number;
  /** `Content published: <title>` or the raw text. */
  text: string;
  title?: string;
  contentId?: string;
  /** Replayed by recovery: published while this tab was disconnected. */
  missed: boolean;
  /** The published data, as JSON text (shown on hover). */
  raw: string;
}

export interface LiveSnapshot {
  badge: Badge;
  /** The `instance_id` of the last `connected` frame; null before the first. */
  instanceId: string | null;
  /** Whether the current connection is up (the instance label is live). */
  online: boolean;
  /** Newest first, at most MAX_FEED items. */
  feed: FeedItem[];
  /** Bumped whenever the content list may be stale (new content, a (re)subscribe, a lost gap). */
  contentVersion: number;
}

export function describeBadge(badge: Badge): string {
  switch (badge.kind) {
    case 'connecting':
      return 'connecting';
    case 'connected':
      return 'connected';
    case 'reconnecting':
      return `reconnecting (attempt ${badge.attempt})`;
    case 'recovered':
      return badge.missed === undefined ? 'recovered' : `recovered ${badge.missed} missed`;
    case 'unrecovered':
      return badge.missed === undefined ? 'reconnected, history lost' : `reconnected, ${badge.missed} missed lost`;
    case 'gap':
      return badge.reason === 'epoch_changed' ? 'history reset' : 'connected, some missed lost';
    case 'stopped':
      return `disconnected (code ${badge.code})`;
  }
}

// ---------------------------------------------------------------- payloads

export interface ContentCreated {
  id: string;
  title: string;
  created_at: string;
}

/** A `news:content` payload, or null when it is something else. */
export function parseContentCreated(data: unknown): ContentCreated | null {
  if (!data || typeof data !== 'object' || Array.isArray(data)) return null;
  const o = data as Record<string, unknown>;
  if (o.type !== 'content.created' || typeof o.title !== 'string') return null;
  const id = typeof o.id === 'string' || typeof o.id === 'number' ? String(o.id) : '';
  return { id, title: o.title, created_at: typeof o.created_at === 'string' ? o.created_at : '' };
}

/** The title in a tutorial text `Content published: <title>`, if it is one. */
export function tutorialTitle(text: string): string | null {
  return text.startsWith(TUTORIAL_PREFIX) ? text.slice(TUTORIAL_PREFIX.length) : null;
}

function asText(data: unknown): string {
  return typeof data === 'string' ? data : JSON.stringify(data);
}

// ---------------------------------------------------------------- simulated network

/**
 * A switch in front of the browser's WebSocket, for tests and demos: while
 * "offline", open sockets drop (the page sees close code 1006, as when a
 * network goes away) and new ones fail, so the client goes through its real
 * reconnect-and-recover path. Inert until `setOffline(true)`.
 */
export class SimulatedNetwork {
  private offlineNow = false;
  private readonly live = new Set<{ cut: () => void }>();
  readonly WebSocket: WebSocketConstructor;

  constructor(Real: typeof WebSocket = globalThis.WebSocket) {
    this.WebSocket = switchableSocket(this, Real, this.live);
  }

  get offline(): boolean {
    return this.offlineNow;
  }

  setOffline(offline: boolean): void {
    this.offlineNow = offline;
    if (offline) for (const socket of [...this.live]) socket.cut();
  }
}

function switchableSocket(
  net: SimulatedNetwork,
  Real: typeof WebSocket,
  live: Set<{ cut: () => void }>,
): WebSocketConstructor {
  return class SwitchableSocket implements WebSocketLike {
    onopen: ((event: unknown) => void) | null = null;
    onmessage: ((event: unknown) => void) | null = null;
    onclose: ((event: unknown) => void) | null = null;
    onerror: ((event: unknown) => void) | null = null;
    private real: WebSocket | null = null;

    constructor(url: string) {
      if (net.offline) {
        setTimeout(() => this.drop(), 0);
        return;
      }
      const ws = new Real(url);
      this.real = ws;
      ws.onopen = (e) => this.onopen?.(e);
      ws.onmessage = (e) => this.onmessage?.(e);
      ws.onerror = (e) => this.onerror?.(e);
      ws.onclose = (e) => {
        live.delete(this);
        this.real = null;
        this.onclose?.(e);
      };
      live.add(this);
    }

    get readyState(): number {
      return this.real ? this.real.readyState : 3; // CLOSED
    }

    send(data: string): void {
      this.real?.send(data);
    }

    close(code?: number, reason?: string): void {
      this.real?.close(code, reason);
    }

    /** The network went away under this socket. */
    cut(): void {
      const ws = this.real;
      live.delete(this);
      this.real = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        try {
          ws.close(); // the server sees the socket go; the page sees only the 1006 below
        } catch {
          // already closing
        }
      }
      setTimeout(() => this.drop(), 0);
    }

    private drop(): void {
      this.onerror?.({ type: 'error' });
      this.onclose?.({ code: 1006, reason: 'network offline (simulated)', wasClean: false });
    }
  };
}

// ---------------------------------------------------------------- the live feed

/** `ws(s)://<same host>/ws`, matching the page's scheme. */
export function heraldUrl(loc: Location = window.location): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

interface PendingText {
  item: FeedItem;
  timer: ReturnType<typeof setTimeout>;
}

interface ShownTwin {
  title: string;
  seq: number;
  at: number;
}

export interface LiveFeedOptions {
  url?: string;
  WebSocket?: WebSocketConstructor;
}

/** One Herald connection and the feed it fills. `start()` / `stop()` it with the page. */
export class LiveFeed {
  readonly client: HeraldClient;
  private snapshot: LiveSnapshot = { badge: { kind: 'connecting' }, instanceId: null, online: false, feed: [], contentVersion: 0 };
  private readonly listeners = new Set<(s: LiveSnapshot) => void>();
  private readonly offs: Array<() => void> = [];

  private seq = 0;
  /** Reconnect attempts scheduled since the connection was lost (0 while connected). */
  private attempt = 0;
  private everConnected = false;
  /** The close code of the connection that was lost, for the badge's tooltip. */
  private closeCode: number | null = null;
  /** Our own close() in `restart()`: not a state the user needs to see. */
  private restarting = false;
  /** Recovery results of the current connection, per channel. */
  private recovery = new Map<string, RecoveredEvent>();
  /** Messages still to come from a replay, per channel (they are tagged `missed`). */
  private replayLeft = new Map<string, number>();
  /** `events` texts waiting for their `news:content` twin. */
  private pending: PendingText[] = [];
  /** Recently shown items, by title, that may absorb a late twin from the other channel. */
  private structuredShown: ShownTwin[] = [];
  private textShown: ShownTwin[] = [];
  private readonly contentIds = new Set<string>();

  constructor(opts: LiveFeedOptions = {}) {
    this.client = new HeraldClient({
      url: opts.url ?? heraldUrl(),
      ...(opts.WebSocket ? { WebSocket: opts.WebSocket } : {}),
      minReconnectDelayMs: 250,
      maxReconnectDelayMs: 10_000,
    });
  }

  get current(): LiveSnapshot {
    return this.snapshot;
  }

  onChange(fn: (s: LiveSnapshot) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start(): void {
    const c = this.client;
    this.offs.push(
      c.on('state', (s) => this.onState(s)),
      c.on('recovered', (r) => this.onRecovered(r)),
      c.on('gap', (g) => this.onGap(g)),
    );
    const content = c.subscribe(CONTENT_CHANNEL, (m) => this.onContent(m));
    // Every (re)subscribe: content may have been created while we were not listening.
    content.on('subscribed', () => this.bumpContent());
    content.on('error', (e) => console.error(`herald: ${CONTENT_CHANNEL}: ${e.code}: ${e.message}`));
    const events = c.subscribe(EVENTS_CHANNEL, (m) => this.onEventsText(m));
    events.on('error', (e) => console.error(`herald: ${EVENTS_CHANNEL}: ${e.code}: ${e.message}`));
    this.offs.push(
      () => content.unsubscribe(),
      () => events.unsubscribe(),
    );
    void c.connect().catch(() => {
      // The state listener shows why; nothing else to do.
    });
  }

  stop(): void {
    for (const off of this.offs.splice(0)) off();
    for (const p of this.pending) clearTimeout(p.timer);
    this.pending = [];
    this.client.close();
    this.listeners.clear();
  }

  /**
   * Reconnects now: skips the rest of a backoff wait (or restarts an attempt
   * under way), or, after a close code that stops the client, starts again
   * (the badge's "Reconnect" button).
   */
  retryNow(): void {
    const s = this.client.state;
    if (this.attempt > 0 && (s.state === 'reconnecting' || s.state === 'connecting')) this.restart();
    else if (s.state === 'disconnected' && !s.willRetry) this.restart();
  }

  /**
   * Back online or back to the tab: a reconnect waiting for its backoff (or
   * dialing into a dead network) goes now. Never restarts a stopped client.
   */
  skipBackoff(): void {
    const s = this.client.state;
    if (this.attempt > 0 && (s.state === 'reconnecting' || s.state === 'connecting')) this.client.reconnectNow();
  }

  private restart(): void {
    this.restarting = true;
    try {
      this.client.close(); // keeps subscriptions and positions: the next connect recovers
    } finally {
      this.restarting = false;
    }
    void this.client.connect().catch(() => {});
  }

  // ------------------------------------------------------------ connection state

  private onState(s: ConnectionState): void {
    switch (s.state) {
      case 'connecting':
        if (this.attempt > 0 || this.everConnected) {
          this.attempt = Math.max(this.attempt, 1);
          this.setBadge({ kind: 'reconnecting', attempt: this.attempt, dialing: true, code: this.closeCode, delayMs: null });
        } else {
          this.setBadge({ kind: 'connecting' });
        }
        return;
      case 'connected':
        this.everConnected = true;
        this.attempt = 0;
        this.recovery.clear();
        this.replayLeft.clear();
        this.update({ badge: { kind: 'connected' }, instanceId: s.instanceId, online: true });
        return;
      case 'reconnecting':
        this.attempt += 1;
        this.setBadge({ kind: 'reconnecting', attempt: this.attempt, dialing: false, code: s.code, delayMs: s.delayMs });
        return;
      case 'disconnected':
        if (this.restarting) return;
        if (s.willRetry) {
          // A `reconnecting` follows at once; remember why for its tooltip.
          this.closeCode = s.code;
          this.update({ online: false });
        } else if (!(s.code === 1000 && s.reason === 'client closed')) {
          this.attempt = 0;
          this.update({ badge: { kind: 'stopped', code: s.code, reason: s.reason }, online: false });
        }
        return;
    }
  }

  private onRecovered(r: RecoveredEvent): void {
    this.recovery.set(r.channel, r);
    if (r.recovered && r.missed) this.replayLeft.set(r.channel, r.missed);
    const all = [...this.recovery.values()];
    const missedKnown = all.every((e) => e.missed !== undefined);
    const missed = missedKnown ? all.reduce((n, e) => n + (e.missed ?? 0), 0) : undefined;
    if (all.every((e) => e.recovered)) {
      this.setBadge({ kind: 'recovered', missed });
    } else {
      const lost = all.filter((e) => !e.recovered);
      const lostCount = lost.every((e) => e.missed !== undefined) ? lost.reduce((n, e) => n + (e.missed ?? 0), 0) : undefined;
      this.setBadge({ kind: 'unrecovered', missed: lostCount });
      this.bumpContent(); // the gap cannot be replayed: reload the list instead
    }
  }

  /** The client already reset its position; the page says so and reloads what it cannot replay. */
  private onGap(g: GapEvent): void {
    if (g.channel !== CONTENT_CHANNEL) return;
    this.setBadge({ kind: 'gap', channel: g.channel, reason: g.reason });
    this.bumpContent();
  }

  // ------------------------------------------------------------ messages

  private onContent(m: HeraldMessage): void {
    let missed = false;
    const left = this.replayLeft.get(m.channel);
    if (left !== undefined && left > 0) {
      missed = true;
      this.replayLeft.set(m.channel, left - 1);
    }
    const created = parseContentCreated(m.data);
    if (created && created.id !== '' && this.contentIds.has(created.id)) return; // shown already
    if (created && created.id !== '') this.rememberId(created.id);

    const title = created?.title;
    const item: FeedItem = {
      seq: ++this.seq,
      channel: m.channel,
      time: m.time,
      text: title !== undefined ? `${TUTORIAL_PREFIX}${title}` : asText(m.data),
      missed,
      raw: JSON.stringify(m.data),
      ...(title !== undefined ? { title } : {}),
      ...(created && created.id !== '' ? { contentId: created.id } : {}),
    };

    let feed = this.snapshot.feed;
    if (title !== undefined && !missed) {
      // Its `events` twin, waiting or already shown, gives way to it.
      const i = this.pending.findIndex((p) => p.item.title === title);
      if (i >= 0) {
        clearTimeout(this.pending[i]!.timer);
        this.pending.splice(i, 1);
      } else {
        const twin = this.takeTwin(this.textShown, title);
        if (twin !== undefined) feed = feed.filter((f) => f.seq !== twin);
        else this.structuredShown.push({ title, seq: item.seq, at: Date.now() });
      }
    }
    this.update({ feed: [item, ...feed].slice(0, MAX_FEED), contentVersion: this.snapshot.contentVersion + 1 });
  }

  private onEventsText(m: HeraldMessage): void {
    const text = asText(m.data);
    const title = tutorialTitle(text) ?? undefined;
    const item: FeedItem = {
      seq: ++this.seq,
      channel: m.channel,
      time: m.time,
      text,
      missed: false,
      raw: JSON.stringify(m.data),
      ...(title !== undefined ? { title } : {}),
    };
    if (title === undefined) {
      this.push(item);
      return;
    }
    // Its structured twin was shown already: nothing to add.
    if (this.takeTwin(this.structuredShown, title) !== undefined) return;
    const timer = setTimeout(() => {
      this.pending = this.pending.filter((p) => p.item !== item);
      this.textShown.push({ title, seq: item.seq, at: Date.now() });
      this.push(item);
    }, EVENTS_GRACE_MS);
    this.pending.push({ item, timer });
  }

  /** Removes and returns the seq of a recent item of `title` in `list`. */
  private takeTwin(list: ShownTwin[], title: string): number | undefined {
    const cutoff = Date.now() - TWIN_WINDOW_MS;
    while (list.length > 0 && list[0]!.at < cutoff) list.shift();
    const i = list.findIndex((t) => t.title === title);
    if (i < 0) return undefined;
    return list.splice(i, 1)[0]!.seq;
  }

  private rememberId(id: string): void {
    this.contentIds.add(id);
    if (this.contentIds.size > MAX_FEED * 10) {
      const oldest = this.contentIds.values().next().value;
      if (oldest !== undefined) this.contentIds.delete(oldest);
    }
  }

  private push(item: FeedItem): void {
    this.update({ feed: [item, ...this.snapshot.feed].slice(0, MAX_FEED) });
  }

  private bumpContent(): void {
    this.update({ contentVersion: this.snapshot.contentVersion + 1 });
  }

  private setBadge(badge: Badge): void {
    this.update({ badge });
  }

  private update(patch: Partial<LiveSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const fn of this.listeners) fn(this.snapshot);
  }
}
