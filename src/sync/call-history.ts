/**
 * Calls per time bucket over the last minutes, for the status page's rate chart.
 *
 * Prometheus already has `calls_total`, but a page served by the daemon itself must not need a
 * Prometheus server to draw the last ten minutes. A fixed ring of buckets costs a few hundred
 * numbers, whatever the rate.
 */

/** One bucket of {@link CallHistory.series}. */
export interface CallBucket {
  /** Start of the bucket, Unix milliseconds. */
  startMs: number;
  /** Calls that started in the bucket. */
  calls: number;
}

/** Options of {@link CallHistory}. */
export interface CallHistoryOptions {
  /** Width of one bucket. Default 5,000 ms. */
  bucketMs?: number;
  /** How many buckets are kept. Default 120 (ten minutes of 5 s buckets). */
  buckets?: number;
  /** Wall clock in Unix milliseconds; injectable for tests. */
  now?: () => number;
}

/** A ring of call counts per bucket. */
export class CallHistory {
  readonly bucketMs: number;
  readonly #counts: number[];
  readonly #now: () => number;
  /** Index (bucket number since the epoch) of the newest bucket written. */
  #newest: number;

  constructor(opts: CallHistoryOptions = {}) {
    this.bucketMs = opts.bucketMs ?? 5_000;
    this.#counts = new Array<number>(opts.buckets ?? 120).fill(0);
    this.#now = opts.now ?? Date.now;
    this.#newest = Math.floor(this.#now() / this.bucketMs);
  }

  /** Counts one call now. */
  record(): void {
    const at = this.#advance();
    this.#counts[at % this.#counts.length]! += 1;
  }

  /**
   * Every kept bucket, oldest first, the current (still filling) one last. Buckets from before
   * this process started count 0.
   */
  series(): CallBucket[] {
    const newest = this.#advance();
    const n = this.#counts.length;
    const out: CallBucket[] = [];
    for (let i = newest - n + 1; i <= newest; i++) {
      out.push({ startMs: i * this.bucketMs, calls: this.#counts[((i % n) + n) % n]! });
    }
    return out;
  }

  /**
   * Calls per second over the last `windowMs`, counted in whole finished buckets (the filling one
   * would read low).
   */
  ratePerSecond(windowMs = 60_000): number {
    const finished = this.series().slice(0, -1);
    const take = Math.max(1, Math.min(finished.length, Math.round(windowMs / this.bucketMs)));
    const calls = finished.slice(-take).reduce((sum, b) => sum + b.calls, 0);
    return calls / ((take * this.bucketMs) / 1000);
  }

  /** Moves the ring to the current bucket, zeroing the buckets skipped; returns its number. */
  #advance(): number {
    const current = Math.floor(this.#now() / this.bucketMs);
    const n = this.#counts.length;
    if (current > this.#newest) {
      for (let i = Math.max(this.#newest + 1, current - n + 1); i <= current; i++) this.#counts[i % n] = 0;
      this.#newest = current;
    }
    return this.#newest;
  }
}
