/**
 * The close codes a Herald gateway sends on `/ws`, and what the client does after each.
 *
 * This is the ONE place the client knows close codes. It mirrors the table
 * "Close codes" of `docs/protocol.md` (itself printed from
 * `crates/protocol/src/close.rs`) row by row: change both together.
 */

/** What a client must do after the server closed its connection. */
export type CloseAction =
  /** Reconnect at once (ideally to another instance): nothing is wrong with the client. */
  | "reconnect-now"
  /** Reconnect after an exponential backoff with full jitter: something is temporarily wrong. */
  | "reconnect-backoff"
  /** Do not reconnect: the client must change what it does first. */
  | "stop";

/** One row of the close-code table. */
export interface CloseCodeInfo {
  readonly code: number;
  /** The reason text the gateway sends with the code. */
  readonly reason: string;
  /** When the gateway sends it. */
  readonly when: string;
  /** What the client does next. */
  readonly action: CloseAction;
  /**
   * The code is about the token: the client may only go on with a token it
   * did not have (4004: stop unless a new one can be had; 4005: fetch a fresh
   * one and reconnect at once).
   */
  readonly needsNewToken: boolean;
  /**
   * The gateway sends the code to all its clients at once (1001: the
   * instance is stopping), so "reconnect now" must be spread over a random
   * delay (the client's `reconnectWindowMs`) or they would all arrive at the
   * next instance in the same instant.
   */
  readonly spread: boolean;
}

function row(
  code: number,
  reason: string,
  when: string,
  action: CloseAction,
  needsNewToken = false,
  spread = false,
): CloseCodeInfo {
  return Object.freeze({ code, reason, when, action, needsNewToken, spread });
}

/** The table of `docs/protocol.md`, in its order. */
export const CLOSE_CODES: readonly CloseCodeInfo[] = Object.freeze([
  row(1001, "server shutting down", "the instance is stopping or restarting", "reconnect-now", false, true),
  row(1002, "websocket protocol error", "the client broke WebSocket framing", "stop"),
  row(1003, "unsupported frame type", "a binary frame on a text-only endpoint", "stop"),
  row(1007, "text frame is not valid utf-8", "a text frame with invalid UTF-8", "stop"),
  row(1009, "message too big", "a client message over --max-client-message-bytes", "stop"),
  row(1011, "internal error", "an unexpected server error", "reconnect-backoff"),
  row(4000, "slow consumer", "the client did not read fast enough; its queue overflowed", "reconnect-now"),
  row(4001, "ping timeout", "no answer to pings within --ping-interval + --pong-timeout", "reconnect-backoff"),
  row(4002, "bad frame", "a frame that is not a valid Herald protocol frame", "stop"),
  row(4003, "too many connections", "the instance is at --max-connections", "reconnect-backoff"),
  row(4004, "unauthorized", "the token is malformed, wrongly signed or of a wrong algorithm", "stop", true),
  row(4005, "token expired", "the token's exp has passed", "reconnect-now", true),
  row(4006, "too many requests", "the client sent frames faster than --client-frame-rate", "reconnect-backoff"),
  row(4007, "auth timeout", "no auth frame within --auth-timeout where the gateway waits for one", "reconnect-backoff"),
]);

/** Named constants for the codes of the table. */
export const CloseCode = Object.freeze({
  ServerShuttingDown: 1001,
  ProtocolError: 1002,
  UnsupportedFrameType: 1003,
  InvalidUtf8: 1007,
  MessageTooBig: 1009,
  InternalError: 1011,
  SlowConsumer: 4000,
  PingTimeout: 4001,
  BadFrame: 4002,
  TooManyConnections: 4003,
  Unauthorized: 4004,
  TokenExpired: 4005,
  TooManyRequests: 4006,
  AuthTimeout: 4007,
} as const);

const BY_CODE = new Map(CLOSE_CODES.map((info) => [info.code, info]));

/** The table's row for a code, or `undefined` for a code the table does not list. */
export function closeCodeInfo(code: number): CloseCodeInfo | undefined {
  return BY_CODE.get(code);
}

/**
 * What to do after a close with `code`.
 *
 * Codes the table does not list are not sent by the gateway on purpose: 1006
 * (the connection dropped, or could not be opened at all), 1005 (no code),
 * 1000, 1015, … They mean "the network or the server is in trouble", so the
 * client reconnects with backoff.
 */
export function closeAction(code: number): CloseAction {
  return BY_CODE.get(code)?.action ?? "reconnect-backoff";
}

/** Whether "reconnect now" after `code` must wait a random time within the reconnect window (1001). */
export function closeSpreadsReconnect(code: number): boolean {
  return BY_CODE.get(code)?.spread ?? false;
}

/** Whether going on after `code` needs a token the client did not have (4004, 4005). */
export function closeNeedsNewToken(code: number): boolean {
  return BY_CODE.get(code)?.needsNewToken ?? false;
}
