/**
 * A minimal typed event emitter (no dependency on Node's `events` or the
 * DOM's `EventTarget`) that never lets application code unwind through the
 * client: what a listener throws goes to the emitter's error reporter.
 */
export type Listener<T> = (value: T) => void;

/**
 * Where an exception thrown by application code goes: `source` names the
 * event (or `"message"` for a subscription's handler) whose listener threw.
 */
export type ListenerErrorReporter = (error: unknown, source: string) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  /** Adds a listener called at most once. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(event, (value) => {
      off();
      listener(value);
    });
    return off;
  }

  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.listeners.get(event)?.delete(listener as Listener<never>);
  }

  /** How many listeners `event` has (the client logs an unhandled handler error when `error` has none). */
  protected listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      callSafely(listener as Listener<Events[K]>, value, (e, source) => this.reportListenerError(e, source), String(event));
    }
  }

  /**
   * Receives what a listener throws. The default logs it with
   * `console.error`: never rethrown, because a rethrow from a timer crashes a
   * Node process over one faulty listener.
   */
  protected reportListenerError(error: unknown, source: string): void {
    logListenerError(error, source);
  }

  protected removeAllListeners(): void {
    this.listeners.clear();
  }
}

/**
 * Calls application code. An exception it throws must not break the client's
 * bookkeeping, nor escape to the runtime (an uncaught exception ends a Node
 * process), so it goes to `report`; a reporter that throws itself is logged.
 */
export function callSafely<T>(
  fn: (value: T) => void,
  value: T,
  report: ListenerErrorReporter = logListenerError,
  source = "listener",
): void {
  try {
    fn(value);
  } catch (err) {
    try {
      report(err, source);
    } catch (again) {
      logListenerError(again, `${source} (error reporter)`);
    }
  }
}

/** The last resort: nobody asked to hear about it, so say it where a developer looks. */
export function logListenerError(error: unknown, source: string): void {
  if (typeof console !== "undefined" && typeof console.error === "function") {
    console.error(`@herald/client: a ${source} listener threw:`, error);
  }
}
