/**
 * The call-rate limiter: every friend_get call of this process goes through it.
 *
 * Bottleneck paces calls `minTime` apart, which spreads them evenly instead of bursting at the top
 * of each second. Timers can fire late, and a late call followed by an on-time one would sit closer
 * together than `minTime`, so a sliding-window guard runs right before each call as well: it keeps
 * the start times of the last `limit` calls and waits until the oldest is a full second old. Together
 * they make "at most `limit` calls in ANY one-second window" hold by construction, not on average.
 */
import Bottleneck from 'bottleneck';

/** Options of {@link CallLimiter}. */
export interface CallLimiterOptions {
  /** Calls per second allowed (`TIM_RATE_LIMIT`, this process's share). */
  ratePerSecond: number;
  /**
   * Fraction of the rate held back for clock and network jitter between us and Tencent's counter.
   * Default 0.02: 200/s is paced at 196/s.
   */
  safetyMargin?: number;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
}

/** Paces calls under a calls-per-second budget. */
export class CallLimiter {
  readonly #bottleneck: Bottleneck;
  readonly #window: SlidingWindow;

  constructor(opts: CallLimiterOptions) {
    const margin = opts.safetyMargin ?? 0.02;
    const paced = Math.max(opts.ratePerSecond * (1 - margin), 0.001);
    this.#bottleneck = new Bottleneck({ minTime: 1000 / paced, maxConcurrent: null });
    // The guard allows the paced rate, not the raw limit, so its margin covers arrival jitter too.
    this.#window = new SlidingWindow(Math.max(1, Math.floor(paced)), 1000, opts.now ?? (() => performance.now()));
  }

  /** Runs `fn` when the budget allows. Rejects without running it if `signal` aborts first. */
  schedule<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.#bottleneck.schedule(async () => {
      signal?.throwIfAborted();
      await this.#window.acquire(signal);
      return fn();
    });
  }

  /** Calls waiting for their turn. */
  queued(): number {
    return this.#bottleneck.queued();
  }

  /** Drops queued calls and stops pacing. */
  async stop(): Promise<void> {
    await this.#bottleneck.stop({ dropWaitingJobs: true });
  }
}

/**
 * At most `limit` acquisitions in any `windowMs`. Acquisitions are granted in call order.
 */
export class SlidingWindow {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  /** Ring of the last `limit` grant times. */
  readonly #grants: number[];
  #next = 0;
  #tail: Promise<void> = Promise.resolve();

  constructor(limit: number, windowMs: number, now: () => number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#now = now;
    this.#grants = new Array<number>(limit).fill(Number.NEGATIVE_INFINITY);
  }

  /** Resolves when a call may start. */
  acquire(signal?: AbortSignal): Promise<void> {
    // Chained so that concurrent callers are granted one at a time, in order.
    const turn = this.#tail.then(() => this.#grant(signal));
    this.#tail = turn.catch(() => {});
    return turn;
  }

  async #grant(signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted();
      const oldest = this.#grants[this.#next]!;
      const wait = oldest + this.#windowMs - this.#now();
      if (wait <= 0) break;
      await sleep(wait, signal);
    }
    this.#grants[this.#next] = this.#now();
    this.#next = (this.#next + 1) % this.#limit;
  }
}

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
