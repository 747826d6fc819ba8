/**
 * What the client remembers of one channel's history: where to resume from
 * after a reconnect, and which messages it has already delivered.
 *
 * Two positions are kept:
 * - `seen`: the position of the last message delivered to the handlers (or
 *   the `since` the client last subscribed with: the gateway sends only what
 *   is after it). A message at or before it in the same epoch is a duplicate
 *   and is dropped.
 * - `resume`: what the next subscribe passes as `since`. It is `seen`, or,
 *   when no message was seen yet, the `position` of the `subscribed` frame,
 *   so that a client that got nothing before a disconnect still recovers
 *   what was published while it was away.
 */
import type { Position } from "./frames.js";

export type Verdict = "deliver" | "duplicate";

export class ChannelPositions {
  private seen: Position | undefined;
  private resume: Position | undefined;

  constructor(since?: Position) {
    if (since) this.subscribedWithSince(since);
  }

  /** Where the next subscribe resumes from (its `since`), if anywhere. */
  get resumeFrom(): Position | undefined {
    return this.resume ? { ...this.resume } : undefined;
  }

  /** The position of the last message delivered (or the last `since` sent). */
  get lastSeen(): Position | undefined {
    return this.seen ? { ...this.seen } : undefined;
  }

  /** The client sends a subscribe with this `since`: only what is after it may be delivered. */
  subscribedWithSince(since: Position): void {
    if (!this.seen || this.seen.epoch !== since.epoch || this.seen.offset < since.offset) {
      this.seen = { ...since };
    }
    this.resume = { ...this.seen };
  }

  /**
   * A `subscribed` frame arrived with the channel's current position.
   * Without `since` (or when recovery failed) and with no message seen yet,
   * it becomes the point to resume from.
   */
  subscribed(position: Position | null, recovered: boolean | undefined): void {
    if (!position) return;
    if (recovered === false) {
      // The gap cannot be filled: go on from the channel's current position.
      this.resume = { ...position };
      return;
    }
    if (!this.resume) this.resume = { ...position };
  }

  /**
   * A `gap` frame arrived: the stored position is void. From now on only what
   * comes after `position` is delivered, and it is where the next subscribe
   * resumes from; `null` forgets the position until the next message.
   */
  reset(position: Position | null): void {
    this.seen = position ? { ...position } : undefined;
    this.resume = position ? { ...position } : undefined;
  }

  /**
   * A message arrived. Messages without a position (ephemeral) are always
   * delivered; a message whose offset is ≤ the last one seen in the same
   * epoch is a duplicate. A different epoch means the history was reset: the
   * message is delivered and starts the new epoch.
   */
  message(offset: number | undefined, epoch: string | undefined): Verdict {
    if (offset === undefined || epoch === undefined) return "deliver";
    if (this.seen && this.seen.epoch === epoch && offset <= this.seen.offset) return "duplicate";
    this.seen = { offset, epoch };
    this.resume = { offset, epoch };
    return "deliver";
  }
}

/** A pure helper: is `(offset, epoch)` a duplicate after `last`? */
export function isDuplicate(last: Position | undefined, offset: number | undefined, epoch: string | undefined): boolean {
  if (!last || offset === undefined || epoch === undefined) return false;
  return last.epoch === epoch && offset <= last.offset;
}
