/**
 * The call-rate limiter: every friend_get call of this process goes through it.
 *
 * ONE mechanism decides when a call may start: a bottleneck limiter with `maxConcurrent: 1` and
 * `minTime`, whose jobs are slots. A slot job only hands its slot to the first call in line and
 * returns; the call itself runs outside bottleneck. With `maxConcurrent: 1`, bottleneck times a job
 * only when the previous one has finished (`LocalDatastore.__register__`: the job's start is
 * `max(nextRequest, now)` and `nextRequest` moves on by `minTime`), so at most one slot is ever
 * timed ahead. Hence:
 * - a rate change (`updateSettings({ minTime })`) applies from the next slot to calls already
 *   waiting: no queue to rebuild;
 * - rate 0 and pauses are `reservoir: 0`, which stops bottleneck from timing any slot (`null` again
 *   resumes); a slot timed before the pause that comes up during it is put back, not used;
 * - slots are anonymous: a call that gives up waiting (its signal aborts) leaves the line at once,
 *   and the slot its job would have had goes to the next call.
 *
 * The guarantee: at most `L` calls ARRIVE at Tencent in any one-second window, whatever the event
 * loop does. Tencent stamps arrivals, and network delays differ by up to `jitterMs` (J), so the
 * starts of any L+1 consecutive calls must span more than W = 1000 ms + J. Grants follow bottleneck's
 * slot times s₁, s₂, …, each at least `minTime` (m) after the one before; a timer can fire late, never
 * early, so the grant aᵢ ≥ sᵢ. A late grant does not push the schedule back: the next slot may come
 * less than m after it (one slot of catch-up, so a late timer costs no rate). But the next slot is
 * timed only after that grant, so sᵢ₊₁ ≥ aᵢ, and
 *   a(i+L) ≥ s(i+L) ≥ s(i+1) + (L−1)·m ≥ a(i) + (L−1)·m.
 * The span is (L−1)·m, not L·m: with m = W/L, a late grant followed by on-time ones fits L+1 starts
 * in W (the fencepost). So m = W/(L−1). Timers and `Date.now()` count whole milliseconds, so each end
 * of the span may be off by up to a millisecond: W gets {@link CLOCK_SLACK_MS} more. With on-time
 * timers the span is L·m, one slot more than needed. For L = 1 the bound above says nothing; there
 * m = 2W, which holds for any timer up to a whole window late.
 *
 * Between two slots bottleneck takes a few event-loop turns of its own (its datastore yields to the
 * loop on every step). On the call thread's idle loop they take far less than a slot at the usual
 * quotas; on a busy loop they delay slots, which costs rate but never the guarantee.
 */
import Bottleneck from 'bottleneck';
import { onAbort } from '../abort-listeners.js';

/** What {@link Limiter.slowDown} made of a complaint (see there). */
export interface RateComplaint {
  /** `slip`: a complaint alone, the rate is kept; `slowdown`: one of a run, the rate was cut. */
  verdict: 'slip' | 'slowdown';
  /** The slow-down factor after it (1 = none). */
  factor: number;
  /** Calls per second allowed after it. */
  rate: number;
}

/** How many complaints {@link Limiter.slowDown} took for slips and how many for a run (cuts). */
export interface ComplaintCounts {
  slips: number;
  slowDowns: number;
}

/**
 * What a sync needs of a call-rate limiter. {@link CallLimiter} paces calls in this thread; the call
 * thread (`src/sync/call-thread.ts`) paces them in its own and answers these from there.
 */
export interface Limiter {
  /** Runs `fn` when the budget allows. Rejects without running it if `signal` aborts first. */
  schedule<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /** Tencent said "too frequent" (see {@link CallLimiter.slowDown}). */
  slowDown(): void;
  /** Holds every call for `ms`. */
  pause(ms: number): void;
  /** Changes the allowed calls per second; 0 holds every call. */
  setRate(ratePerSecond: number): void;
  /** Calls per second allowed now, after any slow-down or pause. */
  readonly rate: number;
  /** The current slow-down factor (1 = none). */
  readonly slowdownFactor: number;
  /** Complaints so far, by what was made of them. */
  readonly complaints: Readonly<ComplaintCounts>;
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
  /** Told whenever {@link CallLimiter.rate} or {@link CallLimiter.slowdownFactor} may have changed. */
  onChange?: () => void;
  /** Told about each complaint {@link CallLimiter.slowDown} counted (not the repeats of a burst). */
  onComplaint?: (complaint: RateComplaint) => void;
}

/** The window the guarantee covers: one second plus the jitter allowance. */
export function limiterWindowMs(jitterMs = 20): number {
  return 1000 + jitterMs;
}

/** How far whole-millisecond timers and clocks may put each end of a span off. */
const CLOCK_SLACK_MS = 2;

/** The spacing of slots at `rate` calls per second; see the module comment for the reasoning. */
function limiterSpacingMs(rate: number, jitterMs = 20): number {
  const span = limiterWindowMs(jitterMs) + CLOCK_SLACK_MS;
  return rate >= 2 ? span / (rate - 1) : 2 * span;
}

/**
 * A second complaint within this long of the one before makes a run: someone else is calling with
 * the same quota. One complaint with none this long before it is a timing slip.
 */
export const COMPLAINT_RUN_MS = 5_000;
/** The slowest a run of complaints takes the rate, as a fraction of the allowed one. */
const SLOWEST_FACTOR = 0.25;
/**
 * After a cut, calls made before it still fill the server's window and may be refused for up to a
 * window more: complaints within that window are the same complaint, and a later one (the cut was
 * not enough) cuts again. So the rate doubles back first this long after that window, once calls
 * in flight when it ended have had their answers, then every {@link RECOVER_STEP_MS}: from a half
 * it is back in full 1.5 s plus the jitter allowance after the last cut, from a quarter half a
 * second later.
 */
const RECOVER_MARGIN_MS = 500;
/** See {@link RECOVER_MARGIN_MS}. */
const RECOVER_STEP_MS = 500;

/** A call waiting for a slot. */
interface Waiter {
  grant: () => void;
  fail: (err: unknown) => void;
}

/** Paces calls under a calls-per-second budget. */
export class CallLimiter implements Limiter {
  readonly #bottleneck: Bottleneck;
  /** Calls waiting for a slot, first in line first (a Set keeps insertion order). */
  readonly #waiting = new Set<Waiter>();
  readonly #jitterMs: number;
  readonly #windowMs: number;
  /** The rate we are allowed (this replica's share of the budget). */
  #rate: number;
  /** Fraction of #rate in use during a run of complaints: 1 normally. */
  #factor = 1;
  #recoverTimer: NodeJS.Timeout | undefined;
  #pausedUntil = 0;
  #pauseTimer: NodeJS.Timeout | undefined;
  #lastComplaint = Number.NEGATIVE_INFINITY;
  readonly #counts: ComplaintCounts = { slips: 0, slowDowns: 0 };
  #stopped: Promise<void> | undefined;
  readonly #onChange: (() => void) | undefined;
  readonly #onComplaint: ((complaint: RateComplaint) => void) | undefined;

  constructor(opts: CallLimiterOptions) {
    this.#onChange = opts.onChange;
    this.#onComplaint = opts.onComplaint;
    this.#jitterMs = opts.jitterMs ?? 20;
    this.#windowMs = limiterWindowMs(this.#jitterMs);
    this.#rate = Math.max(0, Math.floor(opts.ratePerSecond));
    this.#bottleneck = new Bottleneck({ maxConcurrent: 1, ...this.#settings(this.#rate) });
  }

  #settings(rate: number): { reservoir: number | null; minTime?: number } {
    return rate === 0
      ? { reservoir: 0 }
      : { reservoir: null, minTime: limiterSpacingMs(rate, this.#jitterMs) };
  }

  /** Calls per second this limiter currently allows (after any slow-down or pause). */
  get rate(): number {
    return this.#effective();
  }

  #effective(): number {
    if (Date.now() < this.#pausedUntil) return 0;
    // A slowed share of a few calls a second would round to 0, which means "paused": keep 1/s.
    return this.#rate === 0 ? 0 : Math.max(1, Math.floor(this.#rate * this.#factor));
  }

  #apply(): void {
    void this.#bottleneck.updateSettings(this.#settings(this.#effective()));
    this.#onChange?.();
  }

  /** The current slow-down factor (1 = none); for metrics and tests. */
  get slowdownFactor(): number {
    return this.#factor;
  }

  /** Complaints so far: slips (rate kept) and slow-downs (rate cut). */
  get complaints(): Readonly<ComplaintCounts> {
    return { ...this.#counts };
  }

  /**
   * Tencent answered "too frequent" (60007, 60011, 60018, 60019) although we kept to our budget.
   * The answer fits the evidence:
   * - the calls in flight when Tencent starts refusing all hear it within milliseconds: complaints
   *   within one window of the last counted one are the same complaint;
   * - a complaint alone (none in the {@link COMPLAINT_RUN_MS} before it) is a timing slip, one call
   *   counted over by the server's clock: the rate stays (the refused call's retry waits a second
   *   anyway). Halving the rate for it once cost a whole pass half its rate;
   * - another complaint soon after means another client shares the quota: halve the rate (down to
   *   a quarter). Without a further complaint it doubles back from one window and
   *   {@link RECOVER_MARGIN_MS} after the cut, then every {@link RECOVER_STEP_MS}: back in full
   *   within about 2 s of the last complaint.
   */
  slowDown(): void {
    const now = Date.now();
    const since = now - this.#lastComplaint;
    if (since < this.#windowMs) return;
    this.#lastComplaint = now;
    if (since > COMPLAINT_RUN_MS) {
      this.#counts.slips++;
      this.#onComplaint?.({ verdict: 'slip', factor: this.#factor, rate: this.#effective() });
      this.#onChange?.();
      return;
    }
    this.#counts.slowDowns++;
    this.#factor = Math.max(SLOWEST_FACTOR, this.#factor / 2);
    this.#apply();
    this.#onComplaint?.({ verdict: 'slowdown', factor: this.#factor, rate: this.#effective() });
    if (this.#recoverTimer) clearTimeout(this.#recoverTimer);
    const recover = () => {
      this.#factor = Math.min(1, this.#factor * 2);
      this.#apply();
      this.#recoverTimer = this.#factor < 1 ? setTimeout(recover, RECOVER_STEP_MS) : undefined;
      this.#recoverTimer?.unref();
    };
    this.#recoverTimer = setTimeout(recover, this.#windowMs + RECOVER_MARGIN_MS);
    this.#recoverTimer.unref();
  }

  /** Holds every call for `ms` (e.g. 60 s after 70050, too many failed UserSig checks). */
  pause(ms: number): void {
    this.#pausedUntil = Math.max(this.#pausedUntil, Date.now() + ms);
    this.#apply();
    if (this.#pauseTimer) clearTimeout(this.#pauseTimer);
    this.#pauseTimer = setTimeout(() => this.#apply(), this.#pausedUntil - Date.now() + 1);
    this.#pauseTimer.unref();
  }

  /**
   * Changes the allowed rate (a replica's share of the budget moves as replicas come and go).
   * 0 holds every call until the rate is raised again. A new rate applies from the next slot on;
   * calls already made stay in the server's window, so a lower rate is reached within one window.
   */
  setRate(ratePerSecond: number): void {
    const rate = Math.max(0, Math.floor(ratePerSecond));
    if (rate === this.#rate) return;
    this.#rate = rate;
    this.#apply();
  }

  /** Runs `fn` when the budget allows. Rejects without running it if `signal` aborts first. */
  schedule<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.#stopped) return Promise.reject(new Error('limiter stopped'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const turn = new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          cancel?.();
          resolve();
        },
        fail: (err) => {
          cancel?.();
          reject(err);
        },
      };
      const cancel = signal
        ? onAbort(signal, () => {
            if (this.#waiting.delete(waiter)) reject(signal.reason);
          })
        : undefined;
      this.#waiting.add(waiter);
    });
    this.#addSlot();
    return turn.then(fn);
  }

  /** One more slot job: there is always at least one per waiting call. */
  #addSlot(): void {
    // Rejected only by stop(), which fails the waiting calls itself.
    this.#bottleneck.schedule(async () => this.#useSlot()).catch(() => {});
  }

  #useSlot(): void {
    if (this.#effective() === 0) {
      // Timed before a pause or rate 0 began: put it back; `reservoir: 0` holds it until the end.
      this.#addSlot();
      return;
    }
    // A slot nobody waits for (its call gave up) goes unused: nobody was held back by it.
    const first = this.#waiting.values().next();
    if (first.done) return;
    this.#waiting.delete(first.value);
    first.value.grant();
  }

  /** Calls waiting for their turn. */
  queued(): number {
    // Not bottleneck's count: a call that gave up leaves the line at once, its slot job does not.
    return this.#waiting.size;
  }

  /** Drops queued calls and stops pacing. */
  stop(): Promise<void> {
    this.#stopped ??= this.#shutdown();
    return this.#stopped;
  }

  async #shutdown(): Promise<void> {
    if (this.#recoverTimer) clearTimeout(this.#recoverTimer);
    if (this.#pauseTimer) clearTimeout(this.#pauseTimer);
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    for (const w of waiting) w.fail(new Error('limiter stopped'));
    await this.#bottleneck.stop({ dropWaitingJobs: true });
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
