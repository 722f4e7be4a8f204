/**
 * The call-rate limiter: every friend_get call of this process goes through it.
 *
 * Bottleneck paces calls `minTime` apart, which spreads them evenly instead of bursting at the top
 * of each second. Timers can fire late, and a late call followed by an on-time one would sit closer
 * together than `minTime`, so a sliding-window guard runs right before each call as well: it keeps
 * the start times of the last `limit` calls and waits until the oldest is old enough.
 *
 * Bottleneck fixes each queued job's start time when the job is queued. So that a raise (a replica
 * taking over a gone one's share, a slow-down ending) applies to calls already waiting, a raise
 * lets every call still waiting for its bottleneck slot go on to the window guard, which spaces
 * them at the new rate, and starts a new bottleneck at the new pace for the calls that follow.
 *
 * Tencent counts calls when they ARRIVE, and the network delays each call differently. The guard
 * therefore allows `limit` calls per (1 s + `jitterMs`), not per second: if L+1 calls arrived within
 * one second, each delayed by between 0 and `jitterMs`, they would have started within 1 s + jitterMs,
 * which the guard forbids. So "at most `limit` calls in ANY one-second window at the server" holds by
 * construction for any jitter up to `jitterMs`, not just on average. The cost is the throughput:
 * 20 ms of allowance runs 200/s at 196/s.
 */
import Bottleneck from 'bottleneck';
import { onAbort } from '../abort-listeners.js';

/**
 * What a sync needs of a call-rate limiter. {@link CallLimiter} paces calls in this thread; the call
 * thread (`src/sync/call-thread.ts`) paces them in its own and answers these from there.
 */
export interface Limiter {
  /** Runs `fn` when the budget allows. Rejects without running it if `signal` aborts first. */
  schedule<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /** Tencent said "too frequent": halve the rate for a while (see {@link CallLimiter.slowDown}). */
  slowDown(recoverMs?: number): void;
  /** Holds every call for `ms`. */
  pause(ms: number): void;
  /** Changes the allowed calls per second; 0 holds every call. */
  setRate(ratePerSecond: number): void;
  /** Calls per second allowed now, after any slow-down or pause. */
  readonly rate: number;
  /** The current slow-down factor (1 = none). */
  readonly slowdownFactor: number;
  /** Calls waiting for their turn. */
  queued(): number;
  /** Drops queued calls and stops pacing. */
  stop(): Promise<void>;
}

/** Options of {@link CallLimiter}. */
export interface CallLimiterOptions {
  /** Calls per second allowed (`TIM_RATE_LIMIT`, this process's share). */
  ratePerSecond: number;
  /** Largest difference in network delay between two calls that the guarantee covers. Default 20 ms. */
  jitterMs?: number;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
  /** Told whenever {@link CallLimiter.rate} or {@link CallLimiter.slowdownFactor} may have changed. */
  onChange?: () => void;
}

/** The window the limiter counts calls in: one second plus the jitter allowance. */
export function limiterWindowMs(jitterMs = 20): number {
  return 1000 + jitterMs;
}

/** Paces calls under a calls-per-second budget. */
export class CallLimiter implements Limiter {
  #bottleneck: Bottleneck;
  /** Calls waiting for their bottleneck slot, each with a way to skip the rest of that wait. */
  readonly #waitingForSlot = new Set<() => void>();
  /** The effective rate last applied, to tell a raise. */
  #applied: number;
  readonly #window: SlidingWindow;
  readonly #windowMs: number;
  /** The rate we are allowed (this replica's share of the budget). */
  #rate: number;
  /** Fraction of #rate in use after Tencent said "too frequent": 1 normally, halved per complaint. */
  #factor = 1;
  #recoverTimer: NodeJS.Timeout | undefined;
  #pausedUntil = 0;
  #lastSlowDown = Number.NEGATIVE_INFINITY;
  #pauseTimer: NodeJS.Timeout | undefined;
  readonly #now: () => number;
  readonly #onChange: (() => void) | undefined;

  constructor(opts: CallLimiterOptions) {
    this.#now = opts.now ?? (() => performance.now());
    this.#onChange = opts.onChange;
    this.#windowMs = limiterWindowMs(opts.jitterMs);
    this.#rate = Math.max(0, Math.floor(opts.ratePerSecond));
    this.#bottleneck = new Bottleneck({ minTime: this.#minTime(this.#rate), maxConcurrent: null });
    this.#window = new SlidingWindow(this.#rate, this.#windowMs, this.#now);
    this.#applied = this.#rate;
  }

  /**
   * Bottleneck fixes each queued job's start time when it is queued, so a slow pace set while
   * paused would hold back every queued job long after the rate is raised. While paused, jobs pass
   * straight through to the window guard, which holds them until the rate is raised.
   */
  #minTime(rate: number): number {
    return rate === 0 ? 0 : this.#windowMs / rate;
  }

  /** Calls per second this limiter currently allows (after any slow-down or pause). */
  get rate(): number {
    return this.#effective();
  }

  #effective(): number {
    if (this.#now() < this.#pausedUntil) return 0;
    // A slowed share of a few calls a second would round to 0, which means "paused": keep 1/s.
    return this.#rate === 0 ? 0 : Math.max(1, Math.floor(this.#rate * this.#factor));
  }

  #apply(): void {
    const rate = this.#effective();
    if (rate > this.#applied && this.#waitingForSlot.size > 0) {
      // Their slots were fixed at the old pace: let them go to the window guard now, and pace the
      // calls that follow with a bottleneck that has no slots taken at the old pace.
      const old = this.#bottleneck;
      this.#bottleneck = new Bottleneck({ minTime: this.#minTime(rate), maxConcurrent: null });
      for (const go of [...this.#waitingForSlot]) go();
      void old.stop({ dropWaitingJobs: true }).catch(() => {});
    } else {
      this.#bottleneck.updateSettings({ minTime: this.#minTime(rate) });
    }
    this.#applied = rate;
    this.#window.setLimit(rate);
    this.#onChange?.();
  }

  /**
   * Tencent answered "too frequent" (60007, 60011, 60018, 60019) although we kept to our budget:
   * its counter disagrees with ours, or someone else calls with the same app. Halve the rate (down
   * to a quarter), then double it back every `recoverMs` without another complaint.
   */
  slowDown(recoverMs = 10_000): void {
    // The calls in flight when Tencent starts refusing all hear it within milliseconds; one burst
    // of refusals is one complaint, or it would take the rate to the floor at once.
    const now = this.#now();
    if (now - this.#lastSlowDown < this.#windowMs) return;
    this.#lastSlowDown = now;
    this.#factor = Math.max(0.25, this.#factor / 2);
    this.#apply();
    if (this.#recoverTimer) clearTimeout(this.#recoverTimer);
    const recover = () => {
      this.#factor = Math.min(1, this.#factor * 2);
      this.#apply();
      this.#recoverTimer = this.#factor < 1 ? setTimeout(recover, recoverMs) : undefined;
      this.#recoverTimer?.unref();
    };
    this.#recoverTimer = setTimeout(recover, recoverMs);
    this.#recoverTimer.unref();
  }

  /** Holds every call for `ms` (e.g. 60 s after 70050, too many failed UserSig checks). */
  pause(ms: number): void {
    this.#pausedUntil = Math.max(this.#pausedUntil, this.#now() + ms);
    this.#apply();
    if (this.#pauseTimer) clearTimeout(this.#pauseTimer);
    this.#pauseTimer = setTimeout(() => this.#apply(), this.#pausedUntil - this.#now() + 1);
    this.#pauseTimer.unref();
  }

  /** The current slow-down factor (1 = none); for metrics and tests. */
  get slowdownFactor(): number {
    return this.#factor;
  }

  /**
   * Changes the allowed rate (a replica's share of the budget moves as replicas come and go).
   * 0 pauses every call until the rate is raised again. A lower rate holds for new calls at once;
   * calls already made stay in the window, so the lower rate is reached within one window.
   */
  setRate(ratePerSecond: number): void {
    const rate = Math.max(0, Math.floor(ratePerSecond));
    if (rate === this.#rate) return;
    this.#rate = rate;
    this.#apply();
  }

  /** Runs `fn` when the budget allows. Rejects without running it if `signal` aborts first. */
  schedule<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const slot = new Promise<void>((resolve) => {
      const go = () => {
        if (!this.#waitingForSlot.delete(go)) return;
        resolve();
      };
      this.#waitingForSlot.add(go);
      // Dropped (a raise replaced this bottleneck, or stop()): go on; the window decides.
      this.#bottleneck.schedule(async () => go()).catch(go);
    });
    return slot.then(async () => {
      signal?.throwIfAborted();
      await this.#window.acquire(signal);
      return fn();
    });
  }

  /** Calls waiting for their turn. */
  queued(): number {
    // Not bottleneck.queued(): with no concurrency cap, bottleneck moves every job to RUNNING at
    // once, each on a timer for its slot, so its queue is nearly always empty while calls wait.
    // Every call is either waiting for its slot or for the window.
    return this.#waitingForSlot.size + this.#window.waiting;
  }

  /** Drops queued calls and stops pacing. */
  async stop(): Promise<void> {
    if (this.#recoverTimer) clearTimeout(this.#recoverTimer);
    if (this.#pauseTimer) clearTimeout(this.#pauseTimer);
    this.#window.close();
    await this.#bottleneck.stop({ dropWaitingJobs: true });
  }
}

/**
 * At most `limit` acquisitions in any `windowMs`. Acquisitions are granted in call order. The limit
 * can change at any time; 0 holds every acquisition until it is raised.
 */
export class SlidingWindow {
  readonly #windowMs: number;
  readonly #now: () => number;
  #limit: number;
  /** Grant times within the last window, oldest first. */
  #grants: number[] = [];
  #tail: Promise<void> = Promise.resolve();
  /** Wakes a waiter when the limit changes or the window closes. */
  #changed = new AbortController();
  #closed = false;
  #waiting = 0;
  /** Earliest time of the next grant, for even spacing. */
  #nextAt = Number.NEGATIVE_INFINITY;

  constructor(limit: number, windowMs: number, now: () => number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#now = now;
  }

  /** Acquisitions waiting for their turn. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Changes the limit; waiters re-check at once. */
  setLimit(limit: number): void {
    this.#limit = limit;
    const changed = this.#changed;
    this.#changed = new AbortController();
    changed.abort();
  }

  /** Rejects current and future waiters (shutdown). */
  close(): void {
    this.#closed = true;
    this.setLimit(this.#limit);
  }

  /** Resolves when a call may start. */
  acquire(signal?: AbortSignal): Promise<void> {
    this.#waiting++;
    // Chained so that concurrent callers are granted one at a time, in order.
    const turn = this.#tail.then(() => this.#grant(signal)).finally(() => this.#waiting--);
    this.#tail = turn.catch(() => {});
    return turn;
  }

  async #grant(signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.#closed) throw new Error('limiter stopped');
      const now = this.#now();
      while (this.#grants.length > 0 && this.#grants[0]! + this.#windowMs <= now) this.#grants.shift();
      // Spaced evenly as well as counted: after a pause (or a raise) the window is empty, and
      // without spacing every waiting call would go out in one burst. Slots are kept on a schedule
      // (#nextAt), not measured from the last actual grant, so late timers do not lower the rate.
      const spacing = this.#limit === 0 ? 0 : this.#nextAt - now;
      if (this.#grants.length < this.#limit && spacing <= 0) break;
      // Full, too soon, or paused: wait until a call may go, or the limit changes.
      const wait =
        this.#grants.length < this.#limit
          ? spacing
          : this.#limit > 0 && this.#grants.length > 0
            ? this.#grants[this.#grants.length - this.#limit]! + this.#windowMs - now
            : 60_000;
      const changed = this.#changed.signal;
      const wake = signal ? AbortSignal.any([signal, changed]) : changed;
      await sleep(Math.max(wait, 1), wake).catch(() => {});
    }
    const now = this.#now();
    this.#grants.push(now);
    // At most one slot of catch-up after an idle spell: the schedule never banks a burst.
    const interval = this.#windowMs / Math.max(this.#limit, 1);
    this.#nextAt = Math.max(this.#nextAt, now - interval) + interval;
  }
}

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      cancel?.();
      resolve();
    }, ms);
    // Many sleeps share one signal (every backoff of a pass): one listener for all of them.
    const cancel = signal
      ? onAbort(signal, () => {
          clearTimeout(timer);
          reject(signal.reason);
        })
      : undefined;
  });
}
