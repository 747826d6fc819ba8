/**
 * The frames of the Herald `/ws` protocol, version 1 (docs/protocol.md), and
 * their parsing. Every frame is one JSON text frame with a `type`.
 */

/** A channel's position in its history: the offset of its last message and the history's epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

// ---- client → server ----

export interface SubscribeEntry {
  channel: string;
  since?: Position;
}

export type ClientFrame =
  | { type: "subscribe"; id?: number; channels: SubscribeEntry[] }
  | { type: "unsubscribe"; id?: number; channels: string[] }
  | { type: "ping"; id?: number }
  /** The JWT in-band (docs/protocol.md, "Authentication"); no token: explicitly anonymous. */
  | { type: "auth"; id?: number; token?: string };

/** The JSON text of a client frame. */
export function encodeClientFrame(frame: ClientFrame): string {
  return JSON.stringify(frame);
}

// ---- server → client ----

export interface ConnectedFrame {
  type: "connected";
  protocol: number;
  client_id: string;
  instance_id: string;
  /** `null` for an anonymous client. */
  user: string | null;
  ping_interval_ms?: number;
}

/** The answer to an `auth` frame: who the connection now is. */
export interface AuthenticatedFrame {
  type: "authenticated";
  id?: number;
  /** `null` for an anonymous client. */
  user: string | null;
  /** Until the token expires (the connection then closes with 4005); absent when it does not. */
  expires_in_ms?: number;
}

export interface SubscribedFrame {
  type: "subscribed";
  id?: number;
  channel: string;
  /** The channel's current position; `null` for a channel without history. */
  position: Position | null;
  /** Present only when the subscribe asked for `since`. */
  recovered?: boolean;
}

export interface MessageFrame {
  type: "message";
  channel: string;
  /** Present (with `epoch`) when the channel keeps history. */
  offset?: number;
  epoch?: string;
  data: unknown;
  /** Publish time, ms since the UNIX epoch. */
  time: number;
}

export interface UnsubscribedFrame {
  type: "unsubscribed";
  id?: number;
  channel: string;
}

export interface PongFrame {
  type: "pong";
  id?: number;
}

/** The error codes of docs/protocol.md; the connection stays open after one. */
export type ErrorCode =
  | "invalid_channel"
  | "forbidden"
  | "too_many_subscriptions"
  | "not_subscribed"
  | "bad_request"
  | "internal"
  | (string & {});

export interface ErrorFrame {
  type: "error";
  id?: number;
  channel?: string;
  code: ErrorCode;
  message: string;
}

/** Why a `gap` frame was sent (docs/protocol.md). */
export type GapReason = "epoch_changed" | "unrecoverable" | (string & {});

/**
 * Messages of `channel` may be missing and the stored position for it is void:
 * every later message of the channel comes after `position` (`null`: unknown,
 * the next message's position counts).
 */
export interface GapFrame {
  type: "gap";
  channel: string;
  reason: GapReason;
  position: Position | null;
}

export type ServerFrame =
  | ConnectedFrame
  | AuthenticatedFrame
  | SubscribedFrame
  | MessageFrame
  | UnsubscribedFrame
  | PongFrame
  | ErrorFrame
  | GapFrame;

/** Why a server frame was not understood. */
export class FrameError extends Error {
  constructor(
    message: string,
    readonly raw: string,
  ) {
    super(message);
    this.name = "FrameError";
  }
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optionalId(o: Json): number | undefined {
  return typeof o.id === "number" ? o.id : undefined;
}

/** Parses `{"offset":…,"epoch":…}`; `null`/absent gives `null`; anything else is malformed. */
export function parsePosition(v: unknown): Position | null | "malformed" {
  if (v === null || v === undefined) return null;
  if (isObject(v) && isOffset(v.offset) && typeof v.epoch === "string") {
    return { offset: v.offset, epoch: v.epoch };
  }
  return "malformed";
}

function isOffset(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0;
}

/**
 * Parses one server text frame.
 *
 * Returns the frame, or `undefined` for a well-formed frame of a `type` this
 * client does not know (a newer server may add some; they are ignored).
 * Throws a {@link FrameError} for text that is not a JSON object with a
 * string `type`, or a known frame missing a required field.
 */
export function parseServerFrame(text: string): ServerFrame | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new FrameError("server frame is not JSON", text);
  }
  if (!isObject(value) || typeof value.type !== "string") {
    throw new FrameError("server frame is not a JSON object with a string `type`", text);
  }
  const o = value;
  const bad = (what: string): never => {
    throw new FrameError(`\`${o.type as string}\` frame: ${what}`, text);
  };
  switch (o.type) {
    case "connected": {
      if (typeof o.protocol !== "number") bad("missing `protocol`");
      if (o.user !== null && o.user !== undefined && typeof o.user !== "string") bad("`user` is not a string or null");
      const frame: ConnectedFrame = {
        type: "connected",
        protocol: o.protocol as number,
        client_id: typeof o.client_id === "string" ? o.client_id : String(o.client_id ?? ""),
        instance_id: typeof o.instance_id === "string" ? o.instance_id : String(o.instance_id ?? ""),
        user: typeof o.user === "string" ? o.user : null,
      };
      if (typeof o.ping_interval_ms === "number") frame.ping_interval_ms = o.ping_interval_ms;
      return frame;
    }
    case "authenticated": {
      if (o.user !== null && o.user !== undefined && typeof o.user !== "string") bad("`user` is not a string or null");
      const frame: AuthenticatedFrame = { type: "authenticated", user: typeof o.user === "string" ? o.user : null };
      const id = optionalId(o);
      if (id !== undefined) frame.id = id;
      if (typeof o.expires_in_ms === "number") frame.expires_in_ms = o.expires_in_ms;
      return frame;
    }
    case "subscribed": {
      if (typeof o.channel !== "string") bad("missing `channel`");
      const position = parsePosition(o.position);
      if (position === "malformed") bad("malformed `position`");
      if (o.recovered !== undefined && typeof o.recovered !== "boolean") bad("`recovered` is not a boolean");
      const frame: SubscribedFrame = {
        type: "subscribed",
        channel: o.channel as string,
        position: position as Position | null,
      };
      const id = optionalId(o);
      if (id !== undefined) frame.id = id;
      if (typeof o.recovered === "boolean") frame.recovered = o.recovered;
      return frame;
    }
    case "message": {
      if (typeof o.channel !== "string") bad("missing `channel`");
      if (!("data" in o)) bad("missing `data`");
      const hasOffset = o.offset !== undefined && o.offset !== null;
      const hasEpoch = o.epoch !== undefined && o.epoch !== null;
      if (hasOffset !== hasEpoch) bad("`offset` and `epoch` come together or not at all");
      if (hasOffset && !isOffset(o.offset)) bad("`offset` is not a non-negative number");
      if (hasEpoch && typeof o.epoch !== "string") bad("`epoch` is not a string");
      const frame: MessageFrame = {
        type: "message",
        channel: o.channel as string,
        data: o.data,
        time: typeof o.time === "number" ? o.time : Number.NaN,
      };
      if (hasOffset) {
        frame.offset = o.offset as number;
        frame.epoch = o.epoch as string;
      }
      return frame;
    }
    case "unsubscribed": {
      if (typeof o.channel !== "string") bad("missing `channel`");
      const frame: UnsubscribedFrame = { type: "unsubscribed", channel: o.channel as string };
      const id = optionalId(o);
      if (id !== undefined) frame.id = id;
      return frame;
    }
    case "pong": {
      const frame: PongFrame = { type: "pong" };
      const id = optionalId(o);
      if (id !== undefined) frame.id = id;
      return frame;
    }
    case "error": {
      if (typeof o.code !== "string") bad("missing `code`");
      const frame: ErrorFrame = {
        type: "error",
        code: o.code as string,
        message: typeof o.message === "string" ? o.message : "",
      };
      const id = optionalId(o);
      if (id !== undefined) frame.id = id;
      if (typeof o.channel === "string") frame.channel = o.channel;
      return frame;
    }
    case "gap": {
      if (typeof o.channel !== "string") bad("missing `channel`");
      if (typeof o.reason !== "string") bad("missing `reason`");
      const position = parsePosition(o.position);
      if (position === "malformed") bad("malformed `position`");
      return {
        type: "gap",
        channel: o.channel as string,
        reason: o.reason as string,
        position: position as Position | null,
      };
    }
    default:
      return undefined;
  }
}
