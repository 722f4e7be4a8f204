/**
 * The call-rate limiter: every friend_get call of this process goes through it.
 *
 * Bottleneck paces calls `minTime` apart, which spreads them evenly instead of bursting at the top
 * of each second. Timers can fire late, and a late call followed by an on-time one would sit closer
 * together than `minTime`, so a sliding-window guard runs right before each call as well: it keeps
 * the start times of the last `limit` calls and waits until the oldest is old enough.
 *
 * Tencent counts calls when they ARRIVE, and the network delays each call differently. The guard
 * therefore allows `limit` calls per (1 s + `jitterMs`), not per second: if L+1 calls arrived within
 * one second, each delayed by between 0 and `jitterMs`, they would have started within 1 s + jitterMs,
 * which the guard forbids. So "at most `limit` calls in ANY one-second window at the server" holds by
 * construction for any jitter up to `jitterMs`, not just on average. The cost is the throughput:
 * 20 ms of allowance runs 200/s at 196/s.
 */
import Bottleneck from 'bottleneck';

/** Options of {@link CallLimiter}. */
export interface CallLimiterOptions {
  /** Calls per second allowed (`TIM_RATE_LIMIT`, this process's share). */
  ratePerSecond: number;
  /** Largest difference in network delay between two calls that the guarantee covers. Default 20 ms. */
  jitterMs?: number;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
}

/** Paces calls under a calls-per-second budget. */
export class CallLimiter {
  readonly #bottleneck: Bottleneck;
  readonly #window: SlidingWindow;

  constructor(opts: CallLimiterOptions) {
    const windowMs = 1000 + (opts.jitterMs ?? 20);
    const limit = Math.max(1, Math.floor(opts.ratePerSecond));
    this.#bottleneck = new Bottleneck({ minTime: windowMs / limit, maxConcurrent: null });
    this.#window = new SlidingWindow(limit, windowMs, opts.now ?? (() => performance.now()));
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
