/** A minimal typed event emitter (no dependency on Node's `events` or the DOM's `EventTarget`). */
export type Listener<T> = (value: T) => void;

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

  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      callSafely(listener as Listener<Events[K]>, value);
    }
  }

  protected removeAllListeners(): void {
    this.listeners.clear();
  }
}

/**
 * Calls application code. An exception it throws must not break the client's
 * bookkeeping, so it is rethrown on its own task (where the runtime reports it
 * as any uncaught error) instead of unwinding through the client.
 */
export function callSafely<T>(fn: (value: T) => void, value: T): void {
  try {
    fn(value);
  } catch (err) {
    setTimeout(() => {
      throw err;
    }, 0);
  }
}
