/**
 * The call-rate limiter: every friend_get call of this process goes through it.
 *
 * ONE mechanism decides when a call may start: a bottleneck limiter with `minTime` and a small
 * `maxConcurrent` (D), whose jobs are slots. A slot job only hands its slot to the first call in
 * line (and asks for another slot while calls wait) and returns; the call itself runs outside
 * bottleneck. Bottleneck times a job only when it may run it (`LocalDatastore.__register__`: the
 * job's start is `max(nextRequest, now)`, and `nextRequest` moves on by `minTime`), so with D
 * running at most it times at most D slots ahead. Hence:
 * - a rate change (`updateSettings`) applies to calls already waiting, from the slots not yet
 *   timed: no queue to rebuild;
 * - rate 0 and pauses are `reservoir: 0`, which stops bottleneck from timing any slot (`null` again
 *   resumes); a slot timed before the pause that comes up during it is not used;
 * - the line of waiting calls is ours, not one bottleneck job each: a call that gives up waiting
 *   (its signal aborts) leaves it at once, and bottleneck's bookkeeping per job (a submitted job
 *   takes its register lock for an event-loop turn) is paid per slot, not per call.
 *
 * The guarantee: at most `L` calls ARRIVE at Tencent in any one-second window, whatever the event
 * loop does. Tencent stamps arrivals, and network delays differ by up to `jitterMs` (J), so the
 * starts of any L+1 consecutive calls must span more than W = 1000 ms + J. Grants follow bottleneck's
 * slot times s₁, s₂, …, each at least `minTime` (m) after the one before; a timer can fire late, never
 * early, so the grant aᵢ ≥ sᵢ. A late grant does not push the schedule back: the slots after it may
 * come less than m after it (catch-up, so a late timer costs no rate). But a slot is timed only
 * once the one D before it has run, so s(i+D) ≥ a(i), and
 *   a(i+L) ≥ s(i+L) ≥ s(i+D) + (L−D)·m ≥ a(i) + (L−D)·m.
 * So m = W/(L−D), not W/L: with m = W/L, a late grant followed by on-time ones fits L+1 starts in W
 * (the fencepost, and the catch-up). Timers and `Date.now()` count whole milliseconds, so each end
 * of the span may be off by up to a millisecond: W gets {@link CLOCK_SLACK_MS} more. With on-time
 * timers the span is L·m, D slots more than needed. When L ≤ D the bound says nothing; there
 * m = 2W, which holds for any timer up to a whole window late.
 *
 * D: between running a slot and timing the next, bottleneck takes a couple of event-loop turns of
 * its own (its datastore yields to the loop on every step). When slots are a few milliseconds apart,
 * those turns on a busy machine can outlast the wait for the next slot, and D = 1 then loses rate.
 * From {@link PIPELINE_FROM_RATE} calls/s on, D = 2: the next slot is timed while the one before
 * waits, at a cost of one slot per window. Below it slots are far apart, and D = 1.
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
/** From this rate on, bottleneck times two slots ahead rather than one (see the module comment). */
const PIPELINE_FROM_RATE = 50;

/** Slots bottleneck may time ahead at `rate` calls per second: D in the module comment. */
function depthAt(rate: number): number {
  return rate >= PIPELINE_FROM_RATE ? 2 : 1;
}

/** The spacing of slots at `rate` calls per second: m in the module comment. */
function spacingAt(rate: number, jitterMs: number): number {
  const span = limiterWindowMs(jitterMs) + CLOCK_SLACK_MS;
  const depth = depthAt(rate);
  return rate > depth ? span / (rate - depth) : 2 * span;
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
  /** Slot jobs in bottleneck (queued, timed or running): at most {@link CallLimiter.#depth}. */
  #slotsAsked = 0;
  /** Bottleneck's `maxConcurrent`: D in the module comment. */
  #depth = 1;
  #stopped: Promise<void> | undefined;
  readonly #onChange: (() => void) | undefined;
  readonly #onComplaint: ((complaint: RateComplaint) => void) | undefined;

  constructor(opts: CallLimiterOptions) {
    this.#onChange = opts.onChange;
    this.#onComplaint = opts.onComplaint;
    this.#jitterMs = opts.jitterMs ?? 20;
    this.#windowMs = limiterWindowMs(this.#jitterMs);
    this.#rate = Math.max(0, Math.floor(opts.ratePerSecond));
    this.#bottleneck = new Bottleneck({ maxConcurrent: this.#depth, ...this.#settings(this.#rate) });
  }

  /** Bottleneck's settings for `rate`; sets {@link CallLimiter.#depth} to go with them. */
  #settings(rate: number): Bottleneck.ConstructorOptions {
    if (rate === 0) return { reservoir: 0 };
    this.#depth = depthAt(rate);
    return { reservoir: null, maxConcurrent: this.#depth, minTime: spacingAt(rate, this.#jitterMs) };
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
    this.#askSlot();
    return turn.then(fn);
  }

  /** Keeps as many slot jobs in bottleneck as it may time ahead, or as calls wait if fewer. */
  #askSlot(): void {
    while (this.#slotsAsked < this.#depth && this.#slotsAsked < this.#waiting.size && !this.#stopped) {
      this.#slotsAsked++;
      // Rejected only by stop(), which fails the waiting calls itself.
      this.#bottleneck.schedule(async () => this.#useSlot()).catch(() => {});
    }
  }

  #useSlot(): void {
    this.#slotsAsked--;
    // Timed before a pause or rate 0 began: not used. The next one waits, as `reservoir: 0` holds it.
    if (this.#effective() > 0) {
      // Every call in line is still waiting (one that gave up has left it); none: the slot goes unused.
      const first = this.#waiting.values().next();
      if (!first.done) {
        this.#waiting.delete(first.value);
        first.value.grant();
      }
    }
    this.#askSlot();
  }

  /** Calls waiting for their turn. */
  queued(): number {
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
