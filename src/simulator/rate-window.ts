/**
 * A sliding-window counter for the simulator's rate limit. Tencent's quota is "200 calls per second",
 * and a sliding window is the strictest reading of that: no 1-second span may hold more, wherever it
 * starts, so a client that bursts at a fixed-window boundary is caught.
 */
export class SlidingWindowCounter {
  readonly #windowMs: number;
  /** Event times, oldest first; `#head` skips the ones that left the window, compacted now and then. */
  #times: number[] = [];
  #head = 0;
  #last = Number.NEGATIVE_INFINITY;

  /** @param windowMs width of the window in milliseconds. */
  constructor(windowMs = 1000) {
    this.#windowMs = windowMs;
  }

  /**
   * Records one event at `now` (ms) and returns how many events fall in `(now - windowMs, now]`,
   * this one included. Times that go backwards (concurrent requests finishing their body reads out
   * of order) are treated as the latest time seen, which keeps the window a queue.
   */
  hit(now: number): number {
    const t = Math.max(now, this.#last);
    this.#last = t;
    const times = this.#times;
    times.push(t);
    const oldest = t - this.#windowMs;
    while (this.#head < times.length && times[this.#head]! <= oldest) this.#head++;
    // Compact when the dead prefix is large, so memory stays O(events per window), amortised O(1).
    if (this.#head > 4096 && this.#head * 2 > times.length) {
      times.splice(0, this.#head);
      this.#head = 0;
    }
    return times.length - this.#head;
  }

  /** Forgets every event. */
  reset(): void {
    this.#times = [];
    this.#head = 0;
    this.#last = Number.NEGATIVE_INFINITY;
  }
}
