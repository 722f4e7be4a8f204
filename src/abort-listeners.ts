/**
 * Many waiters on one long-lived `AbortSignal` (the shutdown signal every call and every sleep
 * shares) without one event listener each.
 *
 * Node warns (`MaxListenersExceededWarning`) when an `AbortSignal` holds more than 10 listeners,
 * and a pass has dozens of calls and backoff sleeps in flight on the same signal at once. Each
 * waiter here joins a set; the signal carries a single listener while the set is non-empty, and
 * none once the last waiter has left or the signal has aborted.
 */

interface Waiters {
  callbacks: Set<() => void>;
  listener: () => void;
}

const bySignal = new WeakMap<AbortSignal, Waiters>();

/**
 * Calls `callback` once when `signal` aborts. Returns a function that cancels this (call it when the
 * wait ends some other way); it is safe to call more than once, and after the abort. Check
 * `signal.aborted` first: like `addEventListener`, this never fires for a signal already aborted.
 *
 * @example
 * const cancel = onAbort(signal, () => clearTimeout(timer));
 * // ... the timer fired first:
 * cancel();
 */
export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  let waiters = bySignal.get(signal);
  if (!waiters) {
    const callbacks = new Set<() => void>();
    const listener = () => {
      bySignal.delete(signal);
      for (const cb of callbacks) cb();
      callbacks.clear();
    };
    waiters = { callbacks, listener };
    bySignal.set(signal, waiters);
    signal.addEventListener('abort', listener, { once: true });
  }
  // Each registration is its own entry, even when the same function is passed twice.
  const entry = () => callback();
  const own = waiters;
  own.callbacks.add(entry);
  return () => {
    if (!own.callbacks.delete(entry) || own.callbacks.size > 0) return;
    signal.removeEventListener('abort', own.listener);
    if (bySignal.get(signal) === own) bySignal.delete(signal);
  };
}
