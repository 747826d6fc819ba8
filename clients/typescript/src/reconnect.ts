/**
 * The one place the client decides whether and when to reconnect.
 *
 * Every way a connection can end — the server's close code, a dropped
 * socket, a connect attempt that timed out, a liveness deadline that passed,
 * the application asking for `reconnectNow()` — comes here as a
 * `ReconnectCause`, and the answer is a `ReconnectDecision`. Two rules keep a
 * population of clients from hurting the gateways they depend on:
 *
 * - **Backoff resets only after a connection that lasted**
 *   (`minConnectionLifetimeMs`), never on the `connected` frame alone: a
 *   gateway that accepts and closes at once (1011, 1006, 4000, …) sees each
 *   client back after growing random delays, never in a tight loop.
 * - **"Reconnect now" to a whole population is spread**: a close code the
 *   table marks `spread` (1001: an instance stopping closes all its clients
 *   at once) waits a uniformly random time within `reconnectWindowMs`, so
 *   the instance that takes them over does not receive them in one instant.
 *
 * A "reconnect now" is immediate (or only spread) once after each connection
 * that lasted; a second one before the next lasting connection is a failure
 * like any other and waits for the backoff as well.
 *
 * Tokens follow the same rules. `getToken` failing (throwing, timing out,
 * giving nothing) is temporary and backs off; `getToken` throwing an
 * `UnauthorizedError` stops. A fresh token the gateway rejects (4004) backs
 * off too, and after `maxTokenRejections` rejections in a row (no token
 * accepted in between) the client stops: a gateway that refuses that many
 * fresh tokens is misconfigured, and retrying only loads the token service.
 */
import { Backoff } from "./backoff.js";
import { closeSpreadsReconnect, type CloseAction } from "./closeCodes.js";

export interface ReconnectPolicyOptions {
  /** The backoff cap of the first failed attempt, in ms. */
  minDelayMs: number;
  /** The largest backoff cap, in ms. */
  maxDelayMs: number;
  /** How long a connection must stay `connected` before the backoff starts again from `minDelayMs`. */
  minConnectionLifetimeMs: number;
  /** "Reconnect now" after a `spread` close code waits a random time in `[0, reconnectWindowMs]`. */
  reconnectWindowMs: number;
  /** Stop after this many 4004 rejections of fresh tokens in a row (no token accepted in between). */
  maxTokenRejections?: number;
  /** Uniform numbers in [0, 1): `Math.random` unless testing. */
  random?: () => number;
}

/** Why the connection ended, as far as the reconnect decision goes. */
export type ReconnectCause =
  /** The socket closed (by the server, a proxy or the network) with `code`; `action` is the close-code table's. */
  | { kind: "close"; code: number; action: CloseAction }
  /** The socket did not open, or the gateway did not say `connected`, within the connect timeout. */
  | { kind: "connect-timeout" }
  /** A connected socket did not answer a ping within the deadline. */
  | { kind: "liveness" }
  /** The application (or a network / page-visibility event) asked to reconnect at once. */
  | { kind: "now" }
  /** `getToken` threw (not an `UnauthorizedError`), timed out, or gave no token: temporary. */
  | { kind: "token-unavailable"; reason: string }
  /** `getToken` threw an `UnauthorizedError`: the user is not allowed in; stop. */
  | { kind: "token-refused" }
  /** The gateway rejected the token (4004) and `getToken` gave a different one to try. */
  | { kind: "token-rejected" };

export type ReconnectDecision =
  | { action: "stop" }
  /** `attempt`: failed attempts since the last connection that lasted (1 for the first). */
  | { action: "reconnect"; delayMs: number; attempt: number };

export class ReconnectPolicy {
  readonly minConnectionLifetimeMs: number;
  readonly reconnectWindowMs: number;
  private readonly backoff: Backoff;
  private readonly random: () => number;
  readonly maxTokenRejections: number;
  private attempts = 0;
  /** 4004s in a row since a token was last accepted. */
  private rejections = 0;
  /** One "reconnect now" without backoff is allowed after each lasting connection (and at the start). */
  private immediateAllowed = true;

  constructor(options: ReconnectPolicyOptions) {
    this.random = options.random ?? Math.random;
    this.backoff = new Backoff({ minDelayMs: options.minDelayMs, maxDelayMs: options.maxDelayMs, random: this.random });
    this.minConnectionLifetimeMs = nonNegative(options.minConnectionLifetimeMs, "minConnectionLifetimeMs");
    this.reconnectWindowMs = nonNegative(options.reconnectWindowMs, "reconnectWindowMs");
    this.maxTokenRejections = nonNegative(options.maxTokenRejections ?? 5, "maxTokenRejections");
  }

  /** Failed attempts since the last connection that lasted. */
  get attempt(): number {
    return this.attempts;
  }

  /** A fresh start (`connect()` after `close()`): forget past failures. */
  reset(): void {
    this.backoff.reset();
    this.attempts = 0;
    this.rejections = 0;
    this.immediateAllowed = true;
  }

  /** The gateway accepted a token (`connected` after the token was read): rejections start over. */
  tokenAccepted(): void {
    this.rejections = 0;
  }

  /** The current connection has stayed up `minConnectionLifetimeMs`: it proves the service healthy. */
  connectionLasted(): void {
    this.reset();
  }

  /** What to do after the connection ended for `cause`. */
  decide(cause: ReconnectCause): ReconnectDecision {
    if (cause.kind === "close" && cause.action === "stop") return { action: "stop" };
    if (cause.kind === "token-refused") return { action: "stop" };
    if (cause.kind === "token-rejected") {
      this.rejections += 1;
      if (this.rejections >= this.maxTokenRejections) return { action: "stop" };
    }
    this.attempts += 1;
    if (cause.kind === "now") {
      // Asked for by the application or the environment (network back, page visible): no wait.
      return { action: "reconnect", delayMs: 0, attempt: this.attempts };
    }
    const spread = cause.kind === "close" && closeSpreadsReconnect(cause.code) ? this.uniform(this.reconnectWindowMs) : 0;
    const immediate = (cause.kind === "close" && cause.action === "reconnect-now") || cause.kind === "token-rejected";
    if (immediate && this.immediateAllowed) {
      this.immediateAllowed = false;
      return { action: "reconnect", delayMs: spread, attempt: this.attempts };
    }
    this.immediateAllowed = false;
    return { action: "reconnect", delayMs: spread + this.backoff.next().delayMs, attempt: this.attempts };
  }

  /** An integer in [0, max], uniformly. */
  private uniform(max: number): number {
    let r = this.random();
    if (!(r >= 0)) r = 0;
    if (r >= 1) r = 0.9999999999;
    return Math.min(max, Math.floor(r * (max + 1)));
  }
}

function nonNegative(v: number, name: string): number {
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a finite number ≥ 0`);
  return v;
}
