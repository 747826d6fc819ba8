/**
 * Exponential backoff with FULL jitter (docs/protocol.md, "Close codes"):
 * the n-th consecutive failed attempt waits a uniformly random time in
 * `[0, cap]`, where `cap = min(max, min * 2^(n-1))`; `reset()` starts again
 * from `min` (the reconnect policy calls it only after a connection that
 * lasted, see reconnect.ts).
 */
export interface BackoffOptions {
  /** The cap of the first attempt, in ms. */
  minDelayMs: number;
  /** The largest cap, in ms. */
  maxDelayMs: number;
  /** A source of uniform numbers in [0, 1): `Math.random` unless testing. */
  random?: () => number;
}

export interface BackoffStep {
  /** 1 for the first attempt after a reset, 2 for the next, … */
  attempt: number;
  /** The upper bound this attempt drew from. */
  capMs: number;
  /** The wait, an integer in [0, capMs]. */
  delayMs: number;
}

export class Backoff {
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  private readonly random: () => number;
  private failures = 0;

  constructor(options: BackoffOptions) {
    const min = Math.max(0, options.minDelayMs);
    const max = Math.max(min, options.maxDelayMs);
    if (!Number.isFinite(min) || !Number.isFinite(max)) {
      throw new RangeError("backoff delays must be finite numbers");
    }
    this.minDelayMs = min;
    this.maxDelayMs = max;
    this.random = options.random ?? Math.random;
  }

  /** How many attempts were drawn since the last reset. */
  get attempts(): number {
    return this.failures;
  }

  /** The cap of the n-th attempt (1-based). */
  capFor(attempt: number): number {
    if (attempt <= 1) return this.minDelayMs;
    // Stop doubling once past max: avoids Infinity for huge attempt numbers.
    let cap = this.minDelayMs;
    for (let i = 1; i < attempt && cap < this.maxDelayMs; i++) cap *= 2;
    return Math.min(this.maxDelayMs, cap);
  }

  /** Draws the wait of the next attempt. */
  next(): BackoffStep {
    this.failures += 1;
    const capMs = this.capFor(this.failures);
    let r = this.random();
    if (!(r >= 0)) r = 0;
    if (r >= 1) r = 0.9999999999;
    const delayMs = Math.min(capMs, Math.floor(r * (capMs + 1)));
    return { attempt: this.failures, capMs, delayMs };
  }

  /** Starts again from the minimum cap. */
  reset(): void {
    this.failures = 0;
  }
}
